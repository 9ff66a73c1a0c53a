"""Read PyTorch ``pytorch_model.bin`` checkpoints into numpy without torch.

``torch.save(state_dict)`` writes a pickle whose tensors point at raw
storage buffers.  This module reads both layouts torch has used:

* the zip layout (torch >= 1.6): ``<prefix>/data.pkl`` holds the pickle,
  ``<prefix>/data/<key>`` the raw bytes of each storage, and
  ``<prefix>/byteorder`` (optional, ``little`` when absent) their byte order;
* the legacy layout (torch < 1.6, and ``_use_new_zipfile_serialization=False``):
  five consecutive pickles (magic number, protocol version, sys info, the
  object, the sorted storage keys) followed by each storage as an 8-byte
  little-endian element count and its raw little-endian bytes.

Safety: the pickle is read by :class:`_RestrictedUnpickler`, whose
``find_class`` resolves only a short whitelist of names to inert stand-ins
defined here; no torch or other module is imported and no pickled callable
from outside the whitelist can run.  Anything else raises
:class:`UnsafePickleError` (a ``pickle.UnpicklingError`` and a ``ValueError``)
naming the refused ``module.name`` and the file.

dtypes: storages map to the numpy dtype of the same width.  numpy has no
bfloat16, so bfloat16 tensors are returned as float32: a bfloat16 value is
the upper 16 bits of the float32 with the same sign, exponent and leading
mantissa bits, so shifting the raw uint16 left by 16 is exact (no rounding).
Every array is a writeable, contiguous copy in native byte order, sharing
memory with neither the file nor the other arrays.
"""

from __future__ import annotations

import collections
import io
import logging
import os
import pickle
import struct
import zipfile
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Mapping, NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

__all__ = ["UnsafePickleError", "load_torch_state_dict"]

logger = logging.getLogger(__name__)

# First pickle of every legacy file; torch/serialization.py's MAGIC_NUMBER.
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001
_ZIP_MAGIC = b"PK\x03\x04"

# Storage class name -> numpy dtype name of one element on disk.  bfloat16 is
# read as raw uint16 and widened later (see module docstring).
_STORAGE_DTYPES = {
    "FloatStorage": "float32",
    "DoubleStorage": "float64",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    # Untyped storages are plain bytes; torch reads them as uint8 too.
    "UntypedStorage": "uint8",
}

# torch.<dtype> globals that may appear as values (never needed for tensors).
_TORCH_DTYPE_NAMES = frozenset({
    "float32", "float", "float64", "double", "float16", "half", "bfloat16",
    "int64", "long", "int32", "int", "int16", "short", "int8", "uint8", "bool",
})


class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """A checkpoint's pickle referenced a global outside the whitelist.

    It is also a ``ValueError`` so that callers treating every bad input
    alike can catch one exception type.
    """


class _StorageType(NamedTuple):
    """Inert stand-in for a ``torch.*Storage`` class in the pickle.

    A NamedTuple has no ``__dict__`` and is not callable, so a crafted pickle
    can neither call it nor mutate it through BUILD.
    """

    name: str
    dtype: str


class _TorchDType(NamedTuple):
    """Inert stand-in for a ``torch.<dtype>`` global such as ``torch.float32``."""

    name: str


class _Storage:
    """One storage buffer, read from disk only when a tensor needs it."""

    __slots__ = ("key", "dtype", "numel", "_read", "_array")

    def __init__(self, key: str, dtype: str, numel: int,
                 read: Callable[[], np.ndarray]) -> None:
        self.key, self.dtype, self.numel = key, dtype, numel
        self._read = read
        self._array: np.ndarray | None = None

    def array(self) -> np.ndarray:
        """Return the raw 1-D storage (on-disk dtype and byte order), cached."""
        if self._array is None:
            self._array = self._read()
        return self._array


@dataclass(frozen=True)
class _TensorRef:
    """A tensor as described by the pickle: a view into a storage."""

    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _is_int_tuple(value: Any) -> bool:
    return isinstance(value, tuple) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in value)


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any,
                    *_ignored: Any) -> _TensorRef:
    """Stand-in for ``torch._utils._rebuild_tensor(_v2)``.

    The ignored trailing arguments are requires_grad, backward hooks and
    tensor metadata, none of which affect the values.
    """
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError(
            f"tensor storage is {type(storage).__name__}, expected a persistent storage")
    if not (isinstance(storage_offset, int) and _is_int_tuple(size)
            and _is_int_tuple(stride) and len(size) == len(stride)):
        raise pickle.UnpicklingError(
            f"bad tensor geometry: offset={storage_offset!r} size={size!r} stride={stride!r}")
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data: Any, *_ignored: Any) -> Any:
    """Stand-in for ``torch._utils._rebuild_parameter(_with_state)``: keep the data."""
    if not isinstance(data, _TensorRef):
        raise pickle.UnpicklingError(
            f"parameter data is {type(data).__name__}, expected a tensor")
    return data


_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}
for _name, _dtype in _STORAGE_DTYPES.items():
    _SAFE_GLOBALS[("torch", _name)] = _StorageType(_name, _dtype)
_SAFE_GLOBALS[("torch.storage", "UntypedStorage")] = _StorageType("UntypedStorage", "uint8")
for _name in _TORCH_DTYPE_NAMES:
    _SAFE_GLOBALS[("torch", _name)] = _TorchDType(_name)


def _as_str(value: Any) -> Any:
    """Decode bytes that Python 2 pickles use for ASCII strings.

    latin-1 never fails, so odd bytes end up in an error message, not a crash.
    """
    return value.decode("latin-1") if isinstance(value, bytes) else value


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only whitelisted globals and storage ids.

    ``storage_for(key, dtype, numel)`` returns the (lazy) :class:`_Storage`
    for a persistent storage id; it must return the same object for the
    same key so that views share one buffer.
    """

    def __init__(self, file: BinaryIO, path: str,
                 storage_for: Callable[[str, str, int], _Storage]) -> None:
        # utf-8, like torch.load, so Python 2 str pickles decode the same way.
        super().__init__(file, encoding="utf-8")
        self._path = path
        self._storage_for = storage_for

    def find_class(self, module: str, name: str) -> Any:
        """Return the stand-in for a whitelisted global, else refuse it."""
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._path}: refusing to load forbidden global '{module}.{name}'; "
                "only plain tensor state dicts are supported") from None

    def persistent_load(self, pid: Any) -> _Storage:
        """Map ``('storage', type, key, location, numel[, view])`` to a storage."""
        if not (isinstance(pid, tuple) and len(pid) in (5, 6)
                and _as_str(pid[0]) == "storage"):
            raise UnsafePickleError(
                f"{self._path}: unsupported persistent id {pid!r:.80}; "
                "only tensor storages are supported")
        storage_type, key, _location, numel = pid[1:5]
        key = _as_str(key)
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str) \
                or not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError(f"malformed storage id {pid!r:.120}")
        storage = self._storage_for(key, storage_type.dtype, numel)
        view = pid[5] if len(pid) == 6 else None
        return storage if view is None else _storage_view(storage, view)


def _storage_view(root: _Storage, view: Any) -> _Storage:
    """Return a legacy storage view ``(view_key, offset, size)`` of ``root``.

    Only pre-1.0 torch wrote these; offset and size count elements.
    """
    if not (isinstance(view, tuple) and len(view) == 3 and _is_int_tuple(view[1:])):
        raise pickle.UnpicklingError(f"malformed storage view {view!r:.80}")
    view_key, start, numel = _as_str(view[0]), view[1], view[2]
    if start < 0 or numel < 0 or start + numel > root.numel:
        raise pickle.UnpicklingError(f"storage view {view!r} exceeds storage {root.key}")
    return _Storage(view_key, root.dtype, numel,
                    lambda: root.array()[start:start + numel])


def _disk_dtype(dtype: str, byteorder: str) -> np.dtype:
    """numpy dtype of one stored element, in the file's byte order."""
    base = np.dtype("uint16" if dtype == "bfloat16" else dtype)
    return base.newbyteorder("<" if byteorder == "little" else ">")


def _to_host(array: np.ndarray, dtype: str) -> np.ndarray:
    """Convert a raw array to native byte order; widen bfloat16 to float32."""
    if dtype == "bfloat16":
        # bfloat16 is the top half of a float32: shift its bits into place.
        return (array.astype(np.uint32) << 16).view(np.float32)
    return array.astype(array.dtype.newbyteorder("="), copy=False)


def _materialize(ref: _TensorRef, path: str, name: str) -> np.ndarray:
    """Copy a tensor's strided view of its storage into a new numpy array."""
    storage = ref.storage.array()
    if 0 in ref.size:
        return _to_host(np.empty(ref.size, dtype=storage.dtype), ref.storage.dtype)
    last = ref.offset + sum((n - 1) * s for n, s in zip(ref.size, ref.stride))
    # as_strided does no bounds checking: an unchecked crafted stride or
    # offset would read memory outside the buffer.
    if ref.offset < 0 or min(ref.stride, default=0) < 0 or last >= storage.size:
        raise ValueError(
            f"{path}: tensor '{name}' (offset {ref.offset}, size {ref.size}, "
            f"stride {ref.stride}) lies outside its storage '{ref.storage.key}' "
            f"of {storage.size} elements")
    strides = tuple(s * storage.itemsize for s in ref.stride)
    view = as_strided(storage[ref.offset:], shape=ref.size, strides=strides, writeable=False)
    return _to_host(view.copy(), ref.storage.dtype)


def _check_storage_bytes(data: bytes, numel: int, itemsize: int, where: str) -> None:
    if len(data) != numel * itemsize:
        raise ValueError(
            f"{where} has {len(data)} bytes, expected {numel} elements of "
            f"{itemsize} bytes = {numel * itemsize}")


def _zip_prefix(zf: zipfile.ZipFile, path: str) -> str:
    """Return the archive's top folder that holds ``data.pkl``."""
    names = zf.namelist()
    prefixes = [n[: -len("/data.pkl")] for n in names
                if n.endswith("/data.pkl") and n.count("/") == 1]
    if not prefixes:
        raise ValueError(
            f"{path}: zip archive has no '<prefix>/data.pkl' record, so it is not "
            f"a torch.save checkpoint (records: {names[:8]})")
    # torch's reader takes the folder of the first record as the archive name.
    first = names[0].split("/", 1)[0]
    return first if first in prefixes else prefixes[0]


def _zip_byteorder(zf: zipfile.ZipFile, prefix: str, path: str) -> str:
    """Return the storages' byte order; files before torch 1.10 are little."""
    try:
        raw = zf.read(f"{prefix}/byteorder")
    except KeyError:
        return "little"
    order = raw.decode("ascii", "replace").strip()
    if order not in ("little", "big"):
        raise ValueError(f"{path}: unknown byteorder record {raw[:20]!r}")
    return order


def _load_zip(zf: zipfile.ZipFile, path: str) -> Any:
    """Unpickle the object of an open zip checkpoint; storages stay lazy."""
    prefix = _zip_prefix(zf, path)
    byteorder = _zip_byteorder(zf, prefix, path)
    storages: dict[str, _Storage] = {}

    def read_record(key: str, dtype: str, numel: int) -> np.ndarray:
        record = f"{prefix}/data/{key}"
        disk = _disk_dtype(dtype, byteorder)
        try:
            data = zf.read(record)
        except KeyError:
            raise ValueError(f"{path}: missing storage record '{record}'") from None
        _check_storage_bytes(data, numel, disk.itemsize, f"{path}: storage record '{record}'")
        return np.frombuffer(data, dtype=disk)

    def storage_for(key: str, dtype: str, numel: int) -> _Storage:
        if key not in storages:
            storages[key] = _Storage(key, dtype, numel,
                                     lambda: read_record(key, dtype, numel))
        return storages[key]

    data_pkl = zf.read(f"{prefix}/data.pkl")
    return _RestrictedUnpickler(io.BytesIO(data_pkl), path, storage_for).load()


def _read_legacy_header(unpickle: Callable[[], Any], path: str) -> None:
    """Check the magic number and protocol version of a legacy file."""
    try:
        magic = unpickle()
    except UnsafePickleError:
        raise
    except Exception as exc:
        raise ValueError(
            f"{path}: not a torch checkpoint: neither a zip archive nor a legacy "
            f"file with a readable magic number ({exc})") from None
    if magic != LEGACY_MAGIC_NUMBER:
        raise ValueError(
            f"{path}: wrong magic number {magic!r:.40} (expected "
            f"{LEGACY_MAGIC_NUMBER:#x}); not a torch checkpoint or corrupt")
    version = unpickle()
    if version != LEGACY_PROTOCOL_VERSION:
        raise ValueError(f"{path}: unsupported legacy protocol version {version!r:.40}")
    unpickle()  # sys info: storage bytes are little-endian whatever it says


def _index_legacy_storages(f: BinaryIO, keys: Any, storages: dict[str, _Storage],
                           path: str) -> dict[str, int]:
    """Walk the storage section; return each key's data offset in the file."""
    if not isinstance(keys, list) or not all(isinstance(_as_str(k), str) for k in keys):
        raise ValueError(f"{path}: malformed storage key list {keys!r:.80}")
    file_size = os.fstat(f.fileno()).st_size
    offsets: dict[str, int] = {}
    for key in map(_as_str, keys):
        if key not in storages:
            raise ValueError(f"{path}: storage '{key}' listed but never referenced")
        header = f.read(8)
        if len(header) != 8:
            raise ValueError(f"{path}: truncated before storage '{key}'")
        (numel,) = struct.unpack("<q", header)
        storage = storages[key]
        nbytes = numel * _disk_dtype(storage.dtype, "little").itemsize
        if numel != storage.numel:
            raise ValueError(f"{path}: storage '{key}' holds {numel} elements, "
                             f"the pickle expects {storage.numel}: corrupt file")
        if f.tell() + nbytes > file_size:
            raise ValueError(f"{path}: storage '{key}' needs {nbytes} bytes at offset "
                             f"{f.tell()}, file has {file_size}: truncated file")
        offsets[key] = f.tell()
        f.seek(nbytes, os.SEEK_CUR)
    return offsets


def _load_legacy(f: BinaryIO, path: str) -> Any:
    """Unpickle the object of a legacy checkpoint; storages stay lazy."""
    storages: dict[str, _Storage] = {}
    offsets: dict[str, int] = {}

    def read_storage(key: str, dtype: str, numel: int) -> np.ndarray:
        if key not in offsets:
            raise ValueError(f"{path}: missing storage record '{key}'")
        disk = _disk_dtype(dtype, "little")
        f.seek(offsets[key])
        data = f.read(numel * disk.itemsize)
        _check_storage_bytes(data, numel, disk.itemsize, f"{path}: storage '{key}'")
        return np.frombuffer(data, dtype=disk)

    def storage_for(key: str, dtype: str, numel: int) -> _Storage:
        if key not in storages:
            storages[key] = _Storage(key, dtype, numel,
                                     lambda: read_storage(key, dtype, numel))
        return storages[key]

    def unpickle() -> Any:
        return _RestrictedUnpickler(f, path, storage_for).load()

    _read_legacy_header(unpickle, path)
    obj = unpickle()
    # Storages follow the object, so they can only be located after it.
    offsets.update(_index_legacy_storages(f, unpickle(), storages, path))
    return obj


def _describe(value: Any) -> str:
    """Short human description of an unpickled value for error messages."""
    if isinstance(value, _TensorRef):
        return "tensor"
    if isinstance(value, Mapping):
        tensors = sum(isinstance(v, _TensorRef) for v in value.values())
        return f"{type(value).__name__} of {len(value)} entries, {tensors} tensors"
    return type(value).__name__


def _is_flat_state_dict(value: Any) -> bool:
    return isinstance(value, Mapping) and all(
        isinstance(k, str) and isinstance(v, _TensorRef) for k, v in value.items())


def _select_state_dict(obj: Any, key: str | None, path: str) -> Mapping[str, _TensorRef]:
    """Return the flat name -> tensor mapping, or explain why there is none."""
    if key is not None:
        if not isinstance(obj, Mapping) or key not in obj:
            keys = list(obj)[:20] if isinstance(obj, Mapping) else []
            raise ValueError(f"{path}: top-level object has no key {key!r} (keys: {keys})")
        obj = obj[key]
    if _is_flat_state_dict(obj):
        return obj
    where = f"entry {key!r}" if key is not None else "top-level object"
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path}: {where} is a {_describe(obj)}, "
                         "not a mapping of parameter names to tensors")
    described = ", ".join(f"{k!r}: {_describe(v)}" for k, v in list(obj.items())[:20])
    hints = [k for k, v in obj.items() if _is_flat_state_dict(v) and v]
    hint = (f"; it looks like a training checkpoint: pass key={hints[0]!r} "
            f"(candidates: {hints})" if hints else "")
    raise ValueError(f"{path}: {where} is not a flat mapping of names to tensors "
                     f"(keys: {described}){hint}")


def _read_checkpoint(f: BinaryIO, path: str, key: str | None) -> dict[str, np.ndarray]:
    """Detect the layout of open file ``f`` and return its arrays."""
    is_zip = f.read(4) == _ZIP_MAGIC
    f.seek(0)
    logger.debug("%s: reading %s checkpoint", path, "zip" if is_zip else "legacy")
    if is_zip:
        # Storages are read while the archive is open, as tensors need them.
        with zipfile.ZipFile(f) as zf:
            state = _select_state_dict(_load_zip(zf, path), key, path)
            return {name: _materialize(ref, path, name) for name, ref in state.items()}
    state = _select_state_dict(_load_legacy(f, path), key, path)
    return {name: _materialize(ref, path, name) for name, ref in state.items()}


def load_torch_state_dict(path: str | os.PathLike[str],
                          key: str | None = None) -> dict[str, np.ndarray]:
    """Read a ``torch.save``-d state dict into ``{name: numpy array}``.

    Accepts zip (torch >= 1.6) and legacy (torch < 1.6) files; no torch
    import and no pickled code execution (see the module docstring).  The top
    object must be a flat mapping of names to tensors.  For a training
    checkpoint such as ``{'state_dict': {...}, 'epoch': 3}`` nothing is
    guessed: pass ``key='state_dict'`` to read that entry.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UnsafePickleError: the pickle references a non-whitelisted global.
        ValueError: malformed, truncated or non-state-dict input; the message
            names the file and the reason.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        with open(path, "rb") as f:
            arrays = _read_checkpoint(f, path, key)
    except ValueError:  # includes UnsafePickleError; messages already name the file
        raise
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, struct.error,
            TypeError, AttributeError, IndexError, KeyError, OverflowError,
            MemoryError) as exc:
        # Whatever a corrupt pickle or archive trips over, report it as bad input.
        raise ValueError(f"{path}: malformed or truncated torch checkpoint: "
                         f"{type(exc).__name__}: {exc}") from exc
    logger.info("read %d tensors from %s", len(arrays), path)
    return arrays
