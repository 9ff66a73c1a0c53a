"""Tests for src/model/torch_bin.py, the torch-free reader of ``pytorch_model.bin``.

The checkpoints in fixtures/torch/ were written by real torch 2.13 (see
fixtures/make_torch_fixtures.py); torch is not needed to run these tests.
Hostile and malformed inputs are built here byte by byte.
"""

from __future__ import annotations

import pickle
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # conftest.py does this too; kept for standalone runs
    sys.path.insert(0, str(ROOT))

from src.model.torch_bin import UnsafePickleError, load_torch_state_dict  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "torch"
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


@pytest.fixture(scope="module")
def expected() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "expected.npz") as npz:
        return {name: npz[name] for name in npz.files}


# --- byte-level builders for crafted checkpoints -------------------------

def _str(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data  # BINUNICODE


def _int(value: int) -> bytes:
    return b"J" + struct.pack("<i", value)  # BININT


def _tuple(items) -> bytes:
    return b"(" + b"".join(items) + b"t"  # MARK ... TUPLE


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"  # GLOBAL


def _tensor(storage_type: str, key: str, numel: int, offset: int, size, stride) -> bytes:
    """Pickle opcodes for a tensor exactly as torch.save lays it out."""
    storage_id = _tuple([_str("storage"), _global("torch", storage_type), _str(key),
                         _str("cpu"), _int(numel)]) + b"Q"  # BINPERSID
    hooks = _global("collections", "OrderedDict") + b")R"
    args = _tuple([storage_id, _int(offset), _tuple(map(_int, size)),
                   _tuple(map(_int, stride)), b"\x89", hooks])
    return _global("torch._utils", "_rebuild_tensor_v2") + args + b"R"


def _dict_pickle(entries: dict[str, bytes]) -> bytes:
    """Protocol-2 pickle of a dict whose values are raw opcode snippets."""
    body = b"".join(_str(k) + v for k, v in entries.items())
    return b"\x80\x02}(" + body + b"u."


def _write_zip(path: Path, records: dict[str, bytes], prefix: str = "archive") -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in records.items():
            zf.writestr(f"{prefix}/{name}", data)
    return path


def _legacy_header() -> bytes:
    sys_info = {"protocol_version": 1001, "little_endian": True,
                "type_sizes": {"short": 2, "int": 4, "long": 4}}
    return b"".join(pickle.dumps(obj, protocol=2)
                    for obj in (LEGACY_MAGIC, 1001, sys_info))


def _without_record(src: Path, dst: Path, suffix: str) -> Path:
    """Copy a zip checkpoint, leaving out the record whose name ends in suffix."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            if not info.filename.endswith(suffix):
                zout.writestr(info, zin.read(info))
    return dst


# --- 1. real torch files ---------------------------------------------------

@pytest.mark.parametrize("name", ["state_zip.bin", "state_legacy.bin"])
def test_real_torch_checkpoint_matches_torch_values(name, expected):
    arrays = load_torch_state_dict(FIXTURES / name)
    assert list(arrays) == list(expected)  # same names, in save order
    for key, want in expected.items():
        got = arrays[key]
        assert got.dtype == want.dtype, key
        assert got.shape == want.shape, key
        assert got.tobytes() == want.tobytes(), key  # bit-exact, -0.0 included
        assert got.flags.c_contiguous and got.flags.writeable, key
    # Views of one torch storage come back as independent copies.
    assert not np.shares_memory(arrays["bert.dense.weight"], arrays["bert.dense.weight_t"])
    assert not np.shares_memory(arrays["bert.dense.weight"], arrays["bert.dense.slice"])


def test_fixture_covers_the_tricky_layouts(expected):
    # Guards the fixture itself: views, offsets, 0-d, empty and every dtype.
    assert expected["bert.dense.weight_t"].shape == (6, 4)
    np.testing.assert_array_equal(expected["bert.dense.weight_t"], expected["bert.dense.weight"].T)
    np.testing.assert_array_equal(expected["bert.dense.slice"].ravel(),
                                  expected["bert.dense.weight"].ravel()[5:17])
    np.testing.assert_array_equal(expected["bert.dense.every_other"],
                                  expected["bert.dense.weight"][1:, ::2])
    assert expected["scalar"].shape == () and expected["empty"].shape == (0, 3)
    assert expected["bf16"].dtype == np.float32 and expected["half"].dtype == np.float16
    dtypes = {a.dtype for a in expected.values()}
    assert {np.dtype(t) for t in ("f2", "f4", "f8", "i1", "u1", "i4", "i8", "?")} <= dtypes


def test_reader_does_not_import_torch():
    # A fresh interpreter where importing torch fails, installed or not.
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch': raise ImportError('torch imported')\n"
        "sys.meta_path.insert(0, Block())\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from src.model import torch_bin\n"
        f"for name in ('state_zip.bin', 'state_legacy.bin'):\n"
        f"    torch_bin.load_torch_state_dict({str(FIXTURES)!r} + '/' + name)\n"
        "assert not any(m.split('.')[0] == 'torch' for m in sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_accepts_str_path(expected):
    arrays = load_torch_state_dict(str(FIXTURES / "state_zip.bin"))
    np.testing.assert_array_equal(arrays["param"], expected["param"])


# --- crafted but valid inputs: byte order and bfloat16 ----------------------

def test_big_endian_zip_storages(tmp_path):
    values = np.array([1.5, -2.25, 3.0, 1e-7], dtype=">f4")
    longs = np.array([1, -2, 2 ** 40], dtype=">i8")
    pkl = _dict_pickle({"w": _tensor("FloatStorage", "0", 4, 0, (2, 2), (1, 2)),
                        "ids": _tensor("LongStorage", "1", 3, 1, (2,), (1,))})
    path = _write_zip(tmp_path / "big.bin", {"data.pkl": pkl, "byteorder": b"big",
                                             "data/0": values.tobytes(),
                                             "data/1": longs.tobytes()})
    arrays = load_torch_state_dict(path)
    np.testing.assert_array_equal(arrays["w"], values.astype("<f4").reshape(2, 2).T)
    np.testing.assert_array_equal(arrays["ids"], [-2, 2 ** 40])
    assert arrays["w"].dtype.isnative and arrays["ids"].dtype == np.int64


def test_bfloat16_bits_widen_exactly(tmp_path):
    bits = np.array([0x3F80, 0xC049, 0x7F80, 0xFFC0, 0x0001], dtype="<u2")
    pkl = _dict_pickle({"b": _tensor("BFloat16Storage", "0", 5, 0, (5,), (1,))})
    path = _write_zip(tmp_path / "bf16.bin", {"data.pkl": pkl, "data/0": bits.tobytes()})
    got = load_torch_state_dict(path)["b"]
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got[:3], [1.0, -3.140625, np.inf])
    assert np.isnan(got[3])
    assert got[4] == np.float32(2.0 ** -133)  # smallest bfloat16 subnormal


# --- 2. malicious pickles ----------------------------------------------------

def _os_system_payload(marker: Path) -> bytes:
    return b"\x80\x02" + _global("os", "system") + _str(f"touch {marker}") + b"\x85R."


def _eval_payload(marker: Path) -> bytes:
    return (b"\x80\x02" + _global("builtins", "eval")
            + _str(f"open({str(marker)!r}, 'w').close()") + b"\x85R.")


PAYLOADS = [("os.system", _os_system_payload), ("builtins.eval", _eval_payload)]


@pytest.mark.parametrize("forbidden,make_payload", PAYLOADS)
def test_payloads_are_live_under_plain_pickle(tmp_path, forbidden, make_payload):
    # Proves the refusal tests below would notice an executed payload.
    marker = tmp_path / "executed"
    pickle.loads(make_payload(marker))
    assert marker.exists()


@pytest.mark.parametrize("layout", ["zip", "legacy", "zip-nested"])
@pytest.mark.parametrize("forbidden,make_payload", PAYLOADS)
def test_malicious_pickle_is_refused(tmp_path, layout, forbidden, make_payload):
    marker = tmp_path / "pwned"
    payload = make_payload(marker)
    path = tmp_path / "evil.bin"
    if layout == "legacy":
        path.write_bytes(_legacy_header() + payload)
    elif layout == "zip":
        _write_zip(path, {"data.pkl": payload, "version": b"3\n"})
    else:  # hidden as a value of an otherwise normal state dict
        inner = payload[2:-1]  # strip PROTO and STOP
        _write_zip(path, {"data.pkl": _dict_pickle({"w": inner}), "version": b"3\n"})
    with pytest.raises(pickle.UnpicklingError) as info:
        load_torch_state_dict(path)
    assert isinstance(info.value, (UnsafePickleError, ValueError))
    assert forbidden in str(info.value) and str(path) in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("module,name", [("torch", "load"), ("torch._utils", "_rebuild_qtensor"),
                                         ("posix", "system"), ("collections", "deque")])
def test_only_whitelisted_globals_resolve(tmp_path, module, name):
    pkl = b"\x80\x02" + _global(module, name) + b"."
    path = _write_zip(tmp_path / "g.bin", {"data.pkl": pkl})
    with pytest.raises(UnsafePickleError, match=rf"'{module}\.{name}'"):
        load_torch_state_dict(path)


def test_non_storage_persistent_id_is_refused(tmp_path):
    # Legacy torch pickled module source as ('module', ...) ids: not data.
    pid = _tuple([_str("module"), _str("Net"), _str("evil.py"), _str("code")]) + b"Q"
    path = _write_zip(tmp_path / "m.bin", {"data.pkl": _dict_pickle({"w": pid})})
    with pytest.raises(UnsafePickleError, match="persistent id"):
        load_torch_state_dict(path)


# --- 3. malformed input ---------------------------------------------------------

def test_missing_file_names_path(tmp_path):
    path = tmp_path / "nope.bin"
    with pytest.raises(FileNotFoundError, match="nope.bin"):
        load_torch_state_dict(path)


@pytest.mark.parametrize("name", ["state_zip.bin", "state_legacy.bin"])
@pytest.mark.parametrize("fraction", [0.02, 0.3, 0.6, 0.95, 0.999])
def test_truncated_file_raises_with_path(tmp_path, name, fraction):
    data = (FIXTURES / name).read_bytes()
    path = tmp_path / f"cut_{name}"
    path.write_bytes(data[: max(1, int(len(data) * fraction))])
    with pytest.raises(ValueError) as info:
        load_torch_state_dict(path)
    assert str(path) in str(info.value)


def test_zip_without_data_pkl(tmp_path):
    path = _write_zip(tmp_path / "nodata.bin", {"version": b"3\n", "data/0": b"\0" * 4})
    with pytest.raises(ValueError, match="data.pkl") as info:
        load_torch_state_dict(path)
    assert str(path) in str(info.value)


def test_zip_missing_storage_record(tmp_path):
    path = _without_record(FIXTURES / "state_zip.bin", tmp_path / "nostorage.bin", "/data/0")
    with pytest.raises(ValueError, match="missing storage record 'state_zip/data/0'") as info:
        load_torch_state_dict(path)
    assert str(path) in str(info.value)


def test_zip_short_storage_record(tmp_path):
    pkl = _dict_pickle({"w": _tensor("FloatStorage", "0", 4, 0, (4,), (1,))})
    path = _write_zip(tmp_path / "short.bin", {"data.pkl": pkl, "data/0": b"\0" * 12})
    with pytest.raises(ValueError, match="12 bytes, expected 4 elements"):
        load_torch_state_dict(path)


@pytest.mark.parametrize("offset,size,stride", [(0, (3,), (2,)), (4, (), ()),
                                                (1, (2, 2), (2, 1)), (0, (2,), (-1,))])
def test_tensor_outside_storage_is_refused(tmp_path, offset, size, stride):
    # as_strided does no bounds checks, so a crafted geometry must be caught.
    pkl = _dict_pickle({"w": _tensor("FloatStorage", "0", 4, offset, size, stride)})
    path = _write_zip(tmp_path / "oob.bin", {"data.pkl": pkl, "data/0": b"\0" * 16})
    with pytest.raises(ValueError, match="outside its storage") as info:
        load_torch_state_dict(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("content", [pickle.dumps(12345, protocol=2) + b"rest",
                                     b"hello, not a checkpoint", b""])
def test_wrong_magic_number(tmp_path, content):
    path = tmp_path / "magic.bin"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="magic number") as info:
        load_torch_state_dict(path)
    assert str(path) in str(info.value)


def test_legacy_storage_size_mismatch(tmp_path):
    pkl = _dict_pickle({"w": _tensor("FloatStorage", "k", 2, 0, (2,), (1,))})
    body = pickle.dumps(["k"], protocol=2) + struct.pack("<q", 3) + b"\0" * 12
    path = tmp_path / "mismatch.bin"
    path.write_bytes(_legacy_header() + pkl + body)
    with pytest.raises(ValueError, match="storage 'k' holds 3 elements"):
        load_torch_state_dict(path)


def test_legacy_crafted_roundtrip(tmp_path):
    # Same builder as the failure tests, proving they fail for the stated reason.
    pkl = _dict_pickle({"w": _tensor("IntStorage", "k", 3, 1, (2,), (1,))})
    body = pickle.dumps(["k"], protocol=2) + struct.pack("<q", 3) + struct.pack("<3i", 7, 8, 9)
    path = tmp_path / "ok.bin"
    path.write_bytes(_legacy_header() + pkl + body)
    got = load_torch_state_dict(path)["w"]
    assert got.dtype == np.int32 and got.tolist() == [8, 9]


# --- 4. non-flat checkpoints ----------------------------------------------------

def test_nested_state_dict_is_not_guessed(expected):
    path = FIXTURES / "nested_zip.bin"
    with pytest.raises(ValueError) as info:
        load_torch_state_dict(path)
    message = str(info.value)
    assert "'state_dict'" in message and "'epoch'" in message and str(path) in message
    assert "key='state_dict'" in message


def test_nested_state_dict_with_explicit_key(expected):
    arrays = load_torch_state_dict(FIXTURES / "nested_zip.bin", key="state_dict")
    assert list(arrays) == ["0.weight", "0.bias"]
    for name in arrays:
        np.testing.assert_array_equal(arrays[name], expected[name])
    with pytest.raises(ValueError, match="no key 'model'"):
        load_torch_state_dict(FIXTURES / "nested_zip.bin", key="model")


def test_top_level_non_mapping_is_refused(tmp_path):
    pkl = b"\x80\x02(" + _tensor("FloatStorage", "0", 1, 0, (), ()) + b"l."  # a list
    path = _write_zip(tmp_path / "list.bin", {"data.pkl": pkl, "data/0": b"\0" * 4})
    with pytest.raises(ValueError, match="top-level object is a list"):
        load_torch_state_dict(path)
