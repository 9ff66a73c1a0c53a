"""Write rows of integer (or float32) features to sharded MindRecord or TFRecord files, each with a schema JSON.

A row is a dict ``{column: int or list of ints}``; ``columns`` fixes every column's dtype and shape, e.g.
``{"input_ids": ("int32", (128,)), "label_ids": ("int32", ())}``. Shape ``()`` is a scalar. float32 columns
(a regression task's ``label_ids``, stored teacher logits) hold floats.

TFRecord is written without TensorFlow: each row is a ``tf.train.Example`` encoded by hand (protobuf
varints) and framed as TFRecord (little-endian length, masked CRC32C of the length, payload, masked CRC32C
of the payload). Integer columns are Int64Lists, so they are int64 on disk whatever integer dtype is asked
for (the loader reads them as int32); float32 columns are FloatLists (float32 on disk and when read).

Files written by ``write_records(rows, "out/train.tfrecord", cols, "tfrecord", num_shards=2)``:
``out/train-00000-of-00002.tfrecord`` (+ ``.schema.json``), ``out/train-00001-of-00002.tfrecord`` (+ json).
With MindRecord: ``out/train.mindrecord`` (one shard) or ``train.mindrecord0``, ``train.mindrecord1``, ...
(MindSpore's own shard naming), each with MindSpore's ``.db`` index, plus one ``train.mindrecord.schema.json``
describing the whole set. Schema JSON: ``{"datasetType": "TF" | "MindRecord", "numRows": N, "columns":
{name: {"type": "int64", "rank": 1, "shape": [128]}}}`` (the TF form is what ``TFRecordDataset`` accepts).
Converters also write ``<file>.vocab.json`` beside each schema JSON: ``{"vocab": {"size", "sha256", "file"}}``,
the vocabulary the ids come from (src/data/vocab.py).
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import struct
import tempfile
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import crc32c as _crc32c
import numpy as np

from src.infra.files import check_folder_path
from src.infra.protobuf import iter_fields, length_delimited, read_varint, varint

logger = logging.getLogger(__name__)

ColumnSpec = Dict[str, Tuple[str, Tuple[int, ...]]]
FORMATS = ("mindrecord", "tfrecord")
DTYPES = ("int32", "int64", "float32")  # float32: regression labels, stored teacher logits
SCHEMA_SUFFIX = ".schema.json"
# The vocabulary the ids come from (src/data/vocab.py), in a file of its own: MindSpore's TFRecordDataset refuses a
# schema JSON with keys it does not know, and model-zoo scripts hand it ours.
VOCAB_SUFFIX = ".vocab.json"
PROGRESS_MIN_ROWS = 10_000  # below this a progress bar is noise


# ---------------------------------------------------------------- CRC32C (Castagnoli), as TFRecord needs
def crc32c(data: bytes) -> int:
    """CRC-32C of ``data`` (the `crc32c` package: hardware instruction where the CPU has one)."""
    return _crc32c.crc32c(data)


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC: rotate right by 15 and add a constant (so CRCs of CRCs stay robust)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# ---------------------------------------------------------------- protobuf encoding of tf.train.Example
def encode_example(row: Dict[str, Sequence[Any]], float_columns: Sequence[str] = ()) -> bytes:
    """Serialise ``{name: values}`` as a tf.train.Example: one packed Int64List per feature, or a packed FloatList
    (little-endian float32) for the features named in ``float_columns``.

    Example{features=1: Features{feature=1: map<string, Feature>}},
    Feature{float_list=2: FloatList{value=1} | int64_list=3: Int64List{value=1}}.
    """
    entries = b""
    for name, values in row.items():
        if name in float_columns:
            feature = length_delimited(2, length_delimited(1, np.asarray(values, "<f4").tobytes()))
        else:
            feature = length_delimited(3, length_delimited(1, b"".join(varint(int(v)) for v in values)))
        entry = length_delimited(1, name.encode("utf-8")) + length_delimited(2, feature)
        entries += length_delimited(1, entry)
    return length_delimited(1, entries)


def _signed64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _decode_feature(feature: bytes) -> List[Any]:
    """Values of a tf.train.Feature: Int64List (3) as ints, FloatList (2) as floats, BytesList (1) as bytes.

    Repeated numeric fields may be packed (one length-delimited run) or not (one field per value); both occur.
    """
    values: List[Any] = []
    for kind, _, payload in iter_fields(feature):
        for _, wire, item in iter_fields(payload):
            if kind == 3:  # Int64List
                if wire == 0:
                    values.append(_signed64(item))
                else:
                    pos = 0
                    while pos < len(item):
                        value, pos = read_varint(item, pos)
                        values.append(_signed64(value))
            elif kind == 2:  # FloatList: fixed32, packed or not
                values.extend(struct.unpack(f"<{len(item) // 4}f", item[:len(item) // 4 * 4]))
            elif kind == 1:  # BytesList
                values.append(bytes(item))
    return values


def decode_example(data: bytes) -> Dict[str, List[Any]]:
    """Inverse of ``encode_example``: ``{name: values}`` of a tf.train.Example.

    Int64List values come back as ints, FloatList values as floats and BytesList values as bytes, so a
    TFRecord written by another tool (e.g. Google's float ``masked_lm_weights``) loses no feature.
    """
    row: Dict[str, List[Any]] = {}
    for _, _, features in iter_fields(data):
        for _, _, entry in iter_fields(features):
            parts = {number: value for number, _, value in iter_fields(entry)}
            row[parts.get(1, b"").decode("utf-8")] = _decode_feature(parts.get(2, b""))
    return row


def iter_tfrecord(path: str, check_crc: bool = True) -> Iterator[Dict[str, List[Any]]]:
    """Rows of a TFRecord file of tf.train.Examples (pure Python; for tests and schema checks).

    Raises:
        ValueError: truncated record, CRC mismatch or a payload that is not an Example, naming the file and
            the record index.
    """
    with open(path, "rb") as f:
        index = 0
        while True:
            header = f.read(12)
            if not header:
                return
            if len(header) < 12:
                raise ValueError(f"{path}: record {index}: truncated header")
            (length,) = struct.unpack("<Q", header[:8])
            data, footer = f.read(length), f.read(4)
            if len(data) < length or len(footer) < 4:
                raise ValueError(f"{path}: record {index}: truncated data (expected {length} bytes)")
            if check_crc and (struct.unpack("<I", header[8:])[0] != masked_crc32c(header[:8])
                              or struct.unpack("<I", footer)[0] != masked_crc32c(data)):
                raise ValueError(f"{path}: record {index}: CRC mismatch (file corrupted?)")
            try:
                row = decode_example(data)
            except (ValueError, UnicodeDecodeError) as err:
                raise ValueError(f"{path}: record {index}: not a tf.train.Example ({err})") from None
            yield row
            index += 1


def tfrecord_frame(data: bytes) -> bytes:
    """One TFRecord: little-endian length, masked CRC32C of the length, the payload, masked CRC32C of it."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


# ---------------------------------------------------------------- writing
def _check_columns(columns: ColumnSpec) -> None:
    if not columns:
        raise ValueError("write_records: columns is empty; expected {name: (dtype, shape)}")
    for name, spec in columns.items():
        if not (isinstance(spec, (tuple, list)) and len(spec) == 2 and spec[0] in DTYPES):
            raise ValueError(f"write_records: column {name!r}: got {spec!r}; expected (dtype, shape) with "
                             f"dtype in {list(DTYPES)} and shape a tuple of ints, e.g. ('int32', (128,))")
        if any(not isinstance(d, int) or d <= 0 for d in spec[1]):
            raise ValueError(f"write_records: column {name!r}: shape {spec[1]!r} must be positive ints "
                             f"(fixed shapes only)")


def _row_arrays(row: Dict[str, Any], index: int, columns: ColumnSpec) -> Dict[str, np.ndarray]:
    """One row as {name: array of the column's dtype and shape}; raises naming the row and column."""
    if set(row) != set(columns):
        raise ValueError(f"row {index}: columns {sorted(row)}; expected exactly {sorted(columns)}")
    out = {}
    for name, (dtype, shape) in columns.items():
        if dtype == "float32":
            out[name] = _float_array(row[name], index, name, shape)
            continue
        try:
            value = np.asarray(row[name])
        except ValueError:  # ragged nesting
            value = np.asarray(None, dtype=object)
        if value.dtype.kind not in "iub":  # floats, strings, ragged lists: never truncated silently
            as_int = value.astype(np.int64) if value.dtype.kind == "f" and np.isfinite(value).all() else None
            if as_int is None or not np.array_equal(as_int, value):
                shown = repr(row[name])
                raise ValueError(f"row {index}: column {name!r} holds non-integer values "
                                 f"({shown[:60]}{'...' if len(shown) > 60 else ''}); expected ints")
            value = as_int
        value = value.astype(np.int64, copy=False)
        if value.shape != tuple(shape):
            raise ValueError(f"row {index}: column {name!r} has shape {list(value.shape)}; "
                             f"expected {list(shape)}")
        if dtype == "int32" and value.size and (value.min() < -2**31 or value.max() >= 2**31):
            raise ValueError(f"row {index}: column {name!r} has values outside int32")
        out[name] = value.astype(dtype)
    return out


def _float_array(raw: Any, index: int, name: str, shape: Sequence[int]) -> np.ndarray:
    try:
        value = np.asarray(raw, dtype=np.float32)
    except (TypeError, ValueError):
        raise ValueError(f"row {index}: column {name!r} holds non-numeric values; expected float32") from None
    if value.shape != tuple(shape):
        raise ValueError(f"row {index}: column {name!r} has shape {list(value.shape)}; expected {list(shape)}")
    if not np.isfinite(value).all():
        raise ValueError(f"row {index}: column {name!r} has non-finite values")
    return value


def schema_dict(columns: ColumnSpec, num_rows: int, dataset_type: str) -> Dict[str, Any]:
    """Schema JSON content; TFRecord integer columns are int64 on disk whatever dtype was asked for."""
    cols = {}
    for name, (dtype, shape) in columns.items():
        # MindSpore's TFRecordDataset wants rank >= 1, so a TF scalar is a one-element list on disk.
        disk_shape = list(shape) if shape or dataset_type != "TF" else [1]
        cols[name] = {"type": "int64" if dataset_type == "TF" and dtype != "float32" else dtype,
                      "rank": len(disk_shape), "shape": disk_shape}
    return {"datasetType": dataset_type, "numRows": num_rows, "columns": cols}


def _write_json(path: str, content: Dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(content, f, indent=2)
        f.write("\n")


def _tf_shard_names(output: str, num_shards: int) -> List[str]:
    if num_shards == 1:
        return [output]
    stem, ext = os.path.splitext(output)
    return [f"{stem}-{i:05d}-of-{num_shards:05d}{ext or '.tfrecord'}" for i in range(num_shards)]


def _write_tfrecord(rows: Iterable[Dict[str, Any]], tmp_output: str, columns: ColumnSpec,
                    num_shards: int) -> Tuple[List[str], List[int]]:
    """Round-robin rows over shard files; returns (files, rows per file)."""
    names = _tf_shard_names(tmp_output, num_shards)
    floats = [name for name, (dtype, _) in columns.items() if dtype == "float32"]
    counts = [0] * num_shards
    handles = [open(name, "wb") for name in names]
    try:
        for index, row in enumerate(rows):
            arrays = _row_arrays(row, index, columns)
            payload = encode_example({k: v.reshape(-1).tolist() for k, v in arrays.items()}, floats)
            handles[index % num_shards].write(tfrecord_frame(payload))
            counts[index % num_shards] += 1
    finally:
        for handle in handles:
            handle.close()
    for name, count in zip(names, counts):
        _write_json(name + SCHEMA_SUFFIX, schema_dict(columns, count, "TF"))
    return names, counts


def _write_mindrecord(rows: Iterable[Dict[str, Any]], tmp_output: str, columns: ColumnSpec,
                      num_shards: int, chunk: int = 2048) -> Tuple[List[str], List[int]]:
    """MindSpore's FileWriter does the sharding; returns (files, [total rows])."""
    from mindspore.mindrecord import FileWriter  # heavy import, only when this format is used

    writer = FileWriter(tmp_output, shard_num=num_shards, overwrite=True)
    writer.add_schema({name: ({"type": dtype, "shape": list(shape)} if shape else {"type": dtype})
                       for name, (dtype, shape) in columns.items()}, "tinybert")
    buffer, total = [], 0
    for index, row in enumerate(rows):
        arrays = _row_arrays(row, index, columns)
        # FileWriter rejects 0-d arrays as scalar fields; it wants Python ints (floats for float32) there.
        buffer.append({k: (v.item() if v.ndim == 0 else v) for k, v in arrays.items()})
        if len(buffer) == chunk:
            writer.write_raw_data(buffer)
            total, buffer = total + len(buffer), []
    if buffer:
        writer.write_raw_data(buffer)
        total += len(buffer)
    if total == 0:
        raise ValueError(f"{tmp_output}: no rows to write (MindRecord cannot hold an empty dataset)")
    writer.commit()
    names = [tmp_output] if num_shards == 1 else [f"{tmp_output}{i}" for i in range(num_shards)]
    _write_json(tmp_output + SCHEMA_SUFFIX,
                dict(schema_dict(columns, total, "MindRecord"), files=[os.path.basename(n) for n in names]))
    return names, [total]


def _earlier_outputs(output: str) -> List[str]:
    """Files in output's folder written by an earlier ``write_records`` to the same ``output``: the file itself,
    TFRecord shards ``x-NNNNN-of-NNNNN.ext``, the MindRecord shards its schema JSON lists, and their ``.db``
    indexes and schema JSON files."""
    parent, base = os.path.split(os.path.abspath(output))
    stem, ext = os.path.splitext(base)
    tf_shard = re.compile(rf"{re.escape(stem)}-\d{{5}}-of-\d{{5}}{re.escape(ext or '.tfrecord')}")
    listed: List[str] = []
    try:
        with open(os.path.join(parent, base + SCHEMA_SUFFIX), encoding="utf-8") as f:
            listed = [str(n) for n in json.load(f).get("files", [])]
    except (OSError, ValueError, AttributeError):
        pass
    found = []
    for name in sorted(os.listdir(parent)):
        data = name
        for suffix in (SCHEMA_SUFFIX, VOCAB_SUFFIX, ".db"):
            if name.endswith(suffix):
                data = name[:-len(suffix)]
                break
        if (data == base or data in listed or tf_shard.fullmatch(data)) and os.path.isfile(os.path.join(parent, name)):
            found.append(name)
    return found


def _remove_stale_outputs(output: str, keep: Sequence[str]) -> List[str]:
    """Delete files of an earlier write to the same output that this write does not replace (e.g. shards 2 and 3
    of 4 when rewriting with 2 shards): a glob such as ``train.mindrecord*`` would otherwise mix them in."""
    parent = os.path.dirname(os.path.abspath(output))
    removed = [name for name in _earlier_outputs(output) if name not in keep]
    for name in removed:
        os.remove(os.path.join(parent, name))
    if removed:
        logger.warning("%s: removed %d file(s) left by an earlier write with other shards or format: %s",
                       output, len(removed), ", ".join(removed))
    return removed


def _progress(rows: Iterable[Dict[str, Any]], output: str) -> Iterable[Dict[str, Any]]:
    """tqdm over rows when there are many (or an unknown number that takes more than 2 s)."""
    from tqdm import tqdm

    total = len(rows) if hasattr(rows, "__len__") else None
    if total is not None and total < PROGRESS_MIN_ROWS:
        return rows
    return tqdm(rows, total=total, unit=" rows", desc=os.path.basename(output), delay=2.0)


def write_records(rows: Iterable[Dict[str, Any]], output: str, columns: Dict[str, Tuple[str, Tuple[int, ...]]],
                  fmt: str = "mindrecord", num_shards: int = 1, vocab: Optional[Dict[str, Any]] = None) -> List[str]:
    """Write rows to ``num_shards`` MindRecord or TFRecord files plus schema JSON; returns the data files.

    Args:
        rows: dicts ``{column: int or nested int list}`` matching ``columns`` exactly.
        output: data file path (``.../train.mindrecord`` or ``.../train.tfrecord``); shards derive from it.
        columns: ``{name: (dtype, shape)}``, dtype ``'int32'``/``'int64'``/``'float32'``, shape e.g. ``(128,)``
            or ``()``.
        fmt: ``"mindrecord"`` or ``"tfrecord"``.
        num_shards: number of data files.
        vocab: the fingerprint of the vocabulary the ids come from (src/data/vocab.py), written beside the data
            (``<file>.vocab.json``, like the schema JSON) for the trainers and predict tools to check.

    Files are written under a temporary directory next to ``output`` and moved into place only when all are
    complete, so a crash never leaves a half-written file under a final name. Files of an earlier write to the
    same ``output`` that this one does not replace (other shard count or format) are deleted, with a warning.

    Raises:
        ValueError: bad format/columns/shards, or a row whose columns or shapes differ (names row and column).
    """
    if fmt not in FORMATS:
        raise ValueError(f"write_records: fmt {fmt!r}; expected one of {list(FORMATS)}")
    if not isinstance(num_shards, int) or num_shards < 1:
        raise ValueError(f"write_records: num_shards {num_shards!r}; expected an int >= 1")
    _check_columns(columns)
    parent = os.path.dirname(os.path.abspath(output))
    check_folder_path(parent, f"records {output}")
    os.makedirs(parent, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=".tmp-records-", dir=parent)
    try:
        tmp_output = os.path.join(tmp_dir, os.path.basename(output))
        writer = _write_tfrecord if fmt == "tfrecord" else _write_mindrecord
        names, counts = writer(_progress(rows, output), tmp_output, columns, num_shards)
        if vocab:
            for name in (names if fmt == "tfrecord" else [tmp_output]):
                _write_json(name + VOCAB_SUFFIX, {"vocab": dict(vocab)})
        written = sorted(os.listdir(tmp_dir))  # data, .db index and schema files, names unchanged
        _remove_stale_outputs(output, written)
        # into place side files first (.db index, schema and vocab JSON), then the data shards, `output` itself
        # last: a kill part way never leaves a data file under its final name without its index beside it (a
        # rerun that sees `output` takes the records as written)
        base = os.path.basename(output)
        for name in sorted(written, key=lambda n: (n == base, not n.endswith((".db", ".json")), n)):
            os.replace(os.path.join(tmp_dir, name), os.path.join(parent, name))
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    files = [os.path.join(parent, os.path.basename(n)) for n in names]
    logger.info("wrote %d rows to %d %s file(s): %s", sum(counts), len(files), fmt, ", ".join(files))
    return files


def _side_path(path: str, suffix: str) -> str:
    """The side file (schema or vocab JSON) of a data file; a MindRecord shard ``x.mindrecordN`` shares
    ``x.mindrecord``'s."""
    if os.path.exists(path + suffix):
        return path + suffix
    stem = path.rstrip("0123456789")
    if stem.endswith(".mindrecord") and os.path.exists(stem + suffix):
        return stem + suffix
    return path + suffix


def schema_path_for(path: str) -> str:
    """The schema JSON that belongs to a data file (a MindRecord shard ``x.mindrecordN`` -> ``x.mindrecord``)."""
    if path.endswith(".json"):  # already a schema file
        return path
    return _side_path(path, SCHEMA_SUFFIX)


def read_schema(path: str) -> Dict[str, Any]:
    """Load and check a schema JSON, given its own path or the data file it belongs to.

    Returns ``{"datasetType", "numRows", "columns": {name: {"type", "rank", "shape"}}, ...}``.

    Raises:
        FileNotFoundError: no schema JSON for ``path``.
        ValueError: malformed JSON or a missing/ill-typed key, naming the file and the key.
    """
    schema_file = schema_path_for(path)
    if not os.path.exists(schema_file):
        raise FileNotFoundError(f"{path}: no schema JSON (looked for {schema_file})")
    try:
        with open(schema_file, encoding="utf-8") as f:
            schema = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{schema_file}:{err.lineno}: invalid JSON: {err.msg}") from err
    for key, kind in (("datasetType", str), ("numRows", int), ("columns", dict)):
        if not isinstance(schema.get(key), kind):
            raise ValueError(f"{schema_file}: key {key!r} is {schema.get(key)!r}; expected a {kind.__name__}")
    for name, col in schema["columns"].items():
        if not (isinstance(col, dict) and col.get("type") in DTYPES and isinstance(col.get("shape"), list)):
            raise ValueError(f"{schema_file}: columns.{name} is {col!r}; expected "
                             f"{{'type': 'int32'|'int64'|'float32', 'rank': R, 'shape': [...]}}")
    return schema


def records_vocab(path: str) -> Optional[Dict[str, Any]]:
    """The vocabulary fingerprint the converter wrote beside data file `path` (``<file>.vocab.json``,
    src/data/vocab.py), or None: records written by another tool or before fingerprints existed."""
    vocab_file = _side_path(path, VOCAB_SUFFIX)
    if not os.path.exists(vocab_file):
        return None
    try:
        with open(vocab_file, encoding="utf-8") as f:
            vocab = json.load(f)
    except json.JSONDecodeError as err:
        raise ValueError(f"{vocab_file}:{err.lineno}: invalid JSON: {err.msg}") from err
    vocab = vocab.get("vocab") if isinstance(vocab, dict) else vocab
    if not (isinstance(vocab, dict) and isinstance(vocab.get("size"), int) and isinstance(vocab.get("sha256"), str)):
        raise ValueError(f"{vocab_file}: key 'vocab' is {vocab!r}; expected {{'size': N, 'sha256': '...'}} "
                         f"(written by the converters)")
    return vocab
