"""Record writer: round trips in both formats, schema JSON, TensorFlow reading our hand-written TFRecord."""
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from src.data.records import crc32c, iter_tfrecord, read_schema, write_records

S = 8
COLUMNS = {"input_ids": ("int32", (S,)), "label_ids": ("int32", ()), "tags": ("int64", (S,))}


def _rows(n):
    return [{"input_ids": list(range(i, i + S)), "label_ids": i % 3, "tags": [-1] * 2 + [i] * (S - 2)}
            for i in range(n)]


def test_crc32c_known_value():
    # RFC 3720 test vector: CRC-32C of "123456789".
    assert crc32c(b"123456789") == 0xE3069283


def test_tfrecord_round_trip_and_schema(tmp_path):
    files = write_records(_rows(7), str(tmp_path / "d.tfrecord"), COLUMNS, fmt="tfrecord", num_shards=2)
    assert [os.path.basename(f) for f in files] == ["d-00000-of-00002.tfrecord", "d-00001-of-00002.tfrecord"]
    back = [row for f in files for row in iter_tfrecord(f)]
    assert sorted(r["label_ids"][0] * 100 + r["input_ids"][0] for r in back) == sorted(
        (i % 3) * 100 + i for i in range(7))
    assert any(r["tags"][0] == -1 for r in back)  # negative int64 survives the varint encoding
    schema = read_schema(files[0])
    assert schema["datasetType"] == "TF" and schema["numRows"] == 4
    assert schema["columns"]["input_ids"] == {"type": "int64", "rank": 1, "shape": [S]}
    assert schema["columns"]["label_ids"]["shape"] == [1]
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp")]  # temp folder removed


def test_mindrecord_round_trip(tmp_path):
    import mindspore.dataset as ds

    files = write_records(_rows(9), str(tmp_path / "d.mindrecord"), COLUMNS, num_shards=2)
    assert [os.path.basename(f) for f in files] == ["d.mindrecord0", "d.mindrecord1"]
    schema = read_schema(files[1])
    assert schema["numRows"] == 9 and schema["columns"]["label_ids"]["shape"] == []
    rows = list(ds.MindDataset(files, shuffle=False).create_dict_iterator(output_numpy=True))
    got = sorted((int(r["input_ids"][0]), int(r["label_ids"]), r["tags"].tolist()) for r in rows)
    want = sorted((r["input_ids"][0], r["label_ids"], r["tags"]) for r in _rows(9))
    assert got == want
    assert rows[0]["input_ids"].dtype == np.int32 and rows[0]["tags"].dtype == np.int64


def test_bad_rows_and_arguments(tmp_path):
    out = str(tmp_path / "d.tfrecord")
    with pytest.raises(ValueError, match=r"row 1: column 'input_ids' has shape \[3\]; expected \[8\]"):
        write_records(_rows(1) + [dict(_rows(1)[0], input_ids=[1, 2, 3])], out, COLUMNS, fmt="tfrecord")
    with pytest.raises(ValueError, match=r"row 0: columns \['input_ids'\]; expected exactly"):
        write_records([{"input_ids": [0] * S}], out, COLUMNS, fmt="tfrecord")
    with pytest.raises(ValueError, match="fmt 'csv'"):
        write_records(_rows(1), out, COLUMNS, fmt="csv")
    with pytest.raises(ValueError, match="column 'x'.*expected \\(dtype, shape\\)"):
        write_records(_rows(1), out, {"x": ("float64", (2,))}, fmt="tfrecord")
    assert not os.path.exists(out)  # a failed write leaves no file under the final name


def test_float32_columns_in_mindrecord(tmp_path):
    """Stored model outputs (teacher logits): float32 [C] next to int columns, read back exactly by the loader
    (not cast to int, not squeezed, not trimmed by length bucketing); bad values name the row and column."""
    from src.data.dataset import create_tinybert_dataset

    out = str(tmp_path / "d.mindrecord")
    columns = {"input_ids": ("int32", (S,)), "input_mask": ("int32", (S,)), "label_ids": ("int32", (1,)),
               "logits": ("float32", (1,))}
    rows = [{"input_ids": [5] * (i + 1) + [0] * (S - i - 1), "input_mask": [1] * (i + 1) + [0] * (S - i - 1),
             "label_ids": [i % 2], "logits": [i + 0.25]} for i in range(4)]
    write_records(rows, out, columns)
    data = create_tinybert_dataset(out, list(columns), 4, S, shuffle=False, drop_remainder=False,
                                   bucket_boundaries=[4])
    batch = next(data.create_dict_iterator(num_epochs=1, output_numpy=True))
    assert batch["input_ids"].shape == (4, 4) and batch["label_ids"].shape == (4,)  # trimmed; labels squeezed
    assert batch["logits"].dtype == np.float32 and batch["logits"].shape == (4, 1)
    np.testing.assert_array_equal(np.sort(batch["logits"][:, 0]), [0.25, 1.25, 2.25, 3.25])
    with pytest.raises(ValueError, match=r"row 1: column 'logits' has non-finite values"):
        write_records([rows[0], dict(rows[1], logits=[float("nan")])], str(tmp_path / "e.mindrecord"), columns)
    with pytest.raises(ValueError, match=r"row 0: column 'logits' has shape \[2\]; expected \[1\]"):
        write_records([dict(rows[0], logits=[1.0, 2.0])], str(tmp_path / "e.mindrecord"), columns)


def test_read_schema_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no schema JSON"):
        read_schema(str(tmp_path / "x.tfrecord"))
    bad = tmp_path / "x.tfrecord.schema.json"
    bad.write_text(json.dumps({"datasetType": "TF", "numRows": "3", "columns": {}}))
    with pytest.raises(ValueError, match="key 'numRows' is '3'; expected a int"):
        read_schema(str(tmp_path / "x.tfrecord"))


def test_corrupted_tfrecord_is_detected(tmp_path):
    (path,) = write_records(_rows(2), str(tmp_path / "d.tfrecord"), COLUMNS, fmt="tfrecord")
    data = bytearray(open(path, "rb").read())
    data[20] ^= 0xFF
    open(path, "wb").write(bytes(data))
    with pytest.raises(ValueError, match="record 0: CRC mismatch"):
        list(iter_tfrecord(path))


_TF_READER = """
import json, sys
import tensorflow as tf
out = []
for raw in tf.data.TFRecordDataset(sys.argv[1:]):  # verifies both CRCs of every record
    ex = tf.train.Example.FromString(raw.numpy())
    out.append({k: list(v.int64_list.value) for k, v in ex.features.feature.items()})
print(json.dumps(out))
"""


@pytest.mark.slow
def test_tensorflow_reads_our_tfrecord(tmp_path):
    # Only look TF up: importing it next to MindSpore in one process clashes, so TF runs in a subprocess.
    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("tensorflow is not installed")
    files = write_records(_rows(5), str(tmp_path / "d.tfrecord"), COLUMNS, fmt="tfrecord")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-c", _TF_READER, *files], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got == [{"input_ids": r["input_ids"], "label_ids": [r["label_ids"]], "tags": r["tags"]}
                   for r in _rows(5)]


def test_decodes_unpacked_ints_and_float_features(tmp_path):
    """Protobuf readers must accept repeated ints unpacked as well as packed, and keep float/bytes features
    (Google's masked_lm_weights are a FloatList) instead of returning them empty."""
    import struct

    from src.data.records import tfrecord_frame
    from src.infra.protobuf import length_delimited as _field, varint as _varint

    unpacked = b"".join(_varint(1 << 3) + _varint(v & 0xFFFFFFFFFFFFFFFF) for v in (5, -2, 300))  # wire type 0
    floats = _field(1, struct.pack("<3f", 1.0, 0.5, 0.0))  # packed fixed32
    raw_bytes = _field(1, b"abc")

    def entry(name, feature):
        return _field(1, _field(1, name.encode()) + _field(2, feature))

    example = _field(1, entry("ids", _field(3, unpacked)) + entry("w", _field(2, floats))
                     + entry("s", _field(1, raw_bytes)))
    path = tmp_path / "x.tfrecord"
    path.write_bytes(tfrecord_frame(example))
    assert list(iter_tfrecord(str(path))) == [{"ids": [5, -2, 300], "w": [1.0, 0.5, 0.0], "s": [b"abc"]}]


def test_rewriting_with_fewer_shards_removes_the_stale_ones(tmp_path):
    """Stale shards of an earlier run would be picked up by a glob like train.mindrecord* and mixed in."""
    def data_files(fmt):
        return sorted(n for n in os.listdir(tmp_path) if fmt in n and not n.endswith((".db", ".json")))

    for fmt in ("mindrecord", "tfrecord"):
        out = str(tmp_path / f"d.{fmt}")
        write_records(_rows(8), out, COLUMNS, fmt=fmt, num_shards=4)
        (tmp_path / f"d.{fmt}7").write_text("not written by write_records")
        files = write_records(_rows(8), out, COLUMNS, fmt=fmt, num_shards=2)
        assert data_files(fmt) == sorted([os.path.basename(f) for f in files] + [f"d.{fmt}7"])
        (single,) = write_records(_rows(3), out, COLUMNS, fmt=fmt, num_shards=1)
        assert data_files(fmt) == sorted([os.path.basename(single), f"d.{fmt}7"])
        schemas = sorted(n for n in os.listdir(tmp_path) if fmt in n and n.endswith(".json"))
        assert schemas == [f"d.{fmt}.schema.json"]
    assert sorted(n for n in os.listdir(tmp_path) if n.endswith(".db")) == ["d.mindrecord.db"]


def test_non_integer_values_are_rejected_not_truncated(tmp_path):
    out = str(tmp_path / "d.tfrecord")
    for bad in (1.5, "2", None):
        with pytest.raises(ValueError, match=r"row 1: column 'label_ids' holds non-integer values"):
            write_records(_rows(1) + [dict(_rows(1)[0], label_ids=bad)], out, COLUMNS, fmt="tfrecord")
    with pytest.raises(ValueError, match=r"row 0: column 'input_ids' holds non-integer values"):
        write_records([dict(_rows(1)[0], input_ids=[[1, 2], [3]])], out, COLUMNS, fmt="tfrecord")
    (path,) = write_records([dict(_rows(1)[0], label_ids=2.0)], out, COLUMNS, fmt="tfrecord")  # integral float
    assert next(iter_tfrecord(path))["label_ids"] == [2]


@pytest.mark.parametrize("shards", [1, 2])
def test_files_move_into_place_with_the_output_itself_last(tmp_path, monkeypatch, shards):
    """A kill between the moves must never leave a data file under its final name without its .db index: side
    files go first, then the data shards, the file named `output` (what a rerun checks) last."""
    moved = []
    real_replace = os.replace

    def replace(src, dst):
        moved.append(os.path.basename(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    write_records(_rows(4), str(tmp_path / "d.mindrecord"), COLUMNS, num_shards=shards,
                  vocab={"sha256": "x", "size": 9})
    side = [n for n in moved if n.endswith((".db", ".json"))]
    data = [n for n in moved if not n.endswith((".db", ".json"))]
    assert side and data and moved == side + data, moved
    if shards == 1:
        assert moved[-1] == "d.mindrecord" and "d.mindrecord.db" in side
