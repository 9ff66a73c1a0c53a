"""The few pieces of the protobuf wire format this project writes and reads by hand, without a protobuf runtime:
MindSpore's .ckpt (src/model/checkpoint.py) and TFRecord's tf.train.Example (src/data/records.py)."""
from __future__ import annotations

from typing import Any, Iterator, Tuple


def varint(value: int) -> bytes:
    """Base-128 varint; a negative int64 is written as its two's complement (10 bytes), as protobuf does."""
    value &= 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def length_delimited(number: int, payload: bytes) -> bytes:
    """Field `number` with wire type 2 (bytes, strings, embedded messages, packed repeated values)."""
    return varint((number << 3) | 2) + varint(len(payload)) + payload


def read_varint(buf: bytes, pos: int) -> Tuple[int, int]:
    """(value, position after it) of the varint at `pos`."""
    shift = result = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated protobuf varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def iter_fields(buf: bytes) -> Iterator[Tuple[int, int, Any]]:
    """(field number, wire type, value) of one message: an int for varints, bytes for the other wire types."""
    pos = 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        wire = key & 7
        if wire == 0:
            value, pos = read_varint(buf, pos)
        elif wire in (1, 5):  # fixed64 / fixed32
            size = 8 if wire == 1 else 4
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 2:
            size, pos = read_varint(buf, pos)
            value, pos = buf[pos:pos + size], pos + size
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")
        if pos > len(buf):
            raise ValueError("truncated protobuf field")
        yield key >> 3, wire, value
