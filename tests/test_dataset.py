"""create_tinybert_dataset: file resolution, shuffle, shards, partial batches, bucketing, schema checks."""
import json

import numpy as np
import pytest

from src.data.dataset import create_tinybert_dataset, resolve_files
from src.data.records import write_records

S = 16
N = 37
COLS = ["input_ids", "input_mask", "segment_ids", "label_ids"]
SPEC = {"input_ids": ("int32", (S,)), "input_mask": ("int32", (S,)), "segment_ids": ("int32", (S,)),
        "label_ids": ("int32", ())}


def _rows(n=N, seed=0):
    """Row i: input_ids[0] = label = i, true length 3..S."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        length = int(rng.integers(3, S + 1))
        rows.append({"input_ids": [i] + [7] * (length - 1) + [0] * (S - length),
                     "input_mask": [1] * length + [0] * (S - length), "segment_ids": [0] * S, "label_ids": i})
    return rows


@pytest.fixture(params=["tfrecord", "mindrecord"])
def files(request, tmp_path):
    return write_records(_rows(), str(tmp_path / f"d.{request.param}"), SPEC, fmt=request.param, num_shards=2)


def _labels(dataset):
    return [int(x) for b in dataset.create_dict_iterator(output_numpy=True) for x in b["label_ids"]]


def test_batches_int32_and_partial_batch_kept(files):
    batches = list(create_tinybert_dataset(files, COLS, 4, S, shuffle=False, drop_remainder=False)
                   .create_dict_iterator(output_numpy=True))
    assert [b["input_ids"].shape for b in batches] == [(4, S)] * 9 + [(1, S)]
    assert all(v.dtype == np.int32 for v in batches[0].values()) and batches[0]["label_ids"].shape == (4,)
    assert sorted(int(x) for b in batches for x in b["label_ids"]) == list(range(N))
    dropped = create_tinybert_dataset(files, COLS, 4, S, shuffle=False)
    assert len(_labels(dropped)) == 36


def test_shuffle_on_one_device(files):
    fixed = [_labels(create_tinybert_dataset(files, COLS, 4, S, shuffle=False, drop_remainder=False))
             for _ in range(2)]
    assert fixed[0] == fixed[1]
    shuffled = _labels(create_tinybert_dataset(files, COLS, 4, S, shuffle=True, seed=1, drop_remainder=False))
    assert sorted(shuffled) == sorted(fixed[0]) and shuffled != fixed[0]


def test_shards_by_rank(files):
    parts = [set(_labels(create_tinybert_dataset(files, COLS, 1, S, shuffle=False, num_shards=2, shard_id=k)))
             for k in range(2)]
    assert parts[0] | parts[1] == set(range(N))
    assert len(parts[0] & parts[1]) <= 1  # MindSpore repeats at most one row so both ranks have 19


def test_bucketing_lengths_and_no_loss(files):
    dataset = create_tinybert_dataset(files, COLS, 4, S, shuffle=True, seed=3, drop_remainder=False,
                                      bucket_boundaries=[4, 8])
    seen = []
    for batch in dataset.create_dict_iterator(output_numpy=True):
        width, longest = batch["input_ids"].shape[1], int(batch["input_mask"].sum(axis=1).max())
        assert width in (4, 8, S) and longest <= width
        assert width == min(b for b in (4, 8, S) if b >= longest)  # padded to its bucket, not to S
        assert batch["segment_ids"].shape == batch["input_ids"].shape
        seen += [int(x) for x in batch["label_ids"]]
    assert sorted(seen) == list(range(N))


def test_glob_and_errors(tmp_path, files):
    pattern = str(tmp_path / "d*")  # matches .db and .schema.json side files too: they are skipped
    assert resolve_files(pattern) == sorted(files)
    with pytest.raises(FileNotFoundError, match="matches the pattern '.*nothing\\*.tfrecord'"):
        create_tinybert_dataset(str(tmp_path / "nothing*.tfrecord"), COLS, 4, S)
    with pytest.raises(FileNotFoundError, match="a folder is not accepted"):
        create_tinybert_dataset(str(tmp_path), COLS, 4, S)
    with pytest.raises(ValueError, match=r"column 'input_ids' has shape \[16\]; expected \[32\] \(seq_length\)"):
        create_tinybert_dataset(files, COLS, 4, 32)
    with pytest.raises(ValueError, match="column 'nope' is missing"):
        create_tinybert_dataset(files, COLS + ["nope"], 4, S)


def test_schema_file_mismatch_names_file(tmp_path):
    (path,) = write_records(_rows(4), str(tmp_path / "d.tfrecord"), SPEC, fmt="tfrecord")
    schema = json.load(open(path + ".schema.json"))
    schema["columns"]["input_mask"]["shape"] = [64]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(schema))
    with pytest.raises(ValueError, match=r"d\.tfrecord \(schema .*bad\.json\): column 'input_mask' has "
                                         r"shape \[64\]; expected \[16\]"):
        create_tinybert_dataset(path, COLS, 2, S, schema_file=str(bad))


def test_tfrecord_without_schema_json_reads_shapes_from_file(tmp_path):
    (path,) = write_records(_rows(5), str(tmp_path / "d.tfrecord"), SPEC, fmt="tfrecord")
    (tmp_path / "d.tfrecord.schema.json").unlink()
    with pytest.raises(ValueError, match="expected \\[8\\]"):
        create_tinybert_dataset(path, COLS, 2, 8)
    assert sorted(_labels(create_tinybert_dataset(path, COLS, 2, S, drop_remainder=False))) == list(range(5))


@pytest.mark.parametrize("fmt", ["tfrecord", "mindrecord"])
def test_int64_and_one_element_columns_come_out_int32(tmp_path, fmt):
    """int64 columns are cast, [1] columns (e.g. GD next_sentence_labels) become [B], negative values survive."""
    spec = {"input_ids": ("int64", (S,)), "input_mask": ("int32", (S,)), "nsp": ("int32", (1,)),
            "label_ids": ("int64", ())}
    rows = [{"input_ids": [-1 - i] * S, "input_mask": [1] * S, "nsp": [i % 2], "label_ids": -i} for i in range(6)]
    files = write_records(rows, str(tmp_path / f"d.{fmt}"), spec, fmt=fmt)
    batches = list(create_tinybert_dataset(files, list(spec), 4, S, shuffle=False, drop_remainder=False)
                   .create_dict_iterator(output_numpy=True))
    assert [b["input_ids"].shape for b in batches] == [(4, S), (2, S)]
    assert all(v.dtype == np.int32 for b in batches for v in b.values())
    assert [b["nsp"].shape for b in batches] == [(4,), (2,)] and [b["label_ids"].shape for b in batches] == [(4,), (2,)]
    assert np.concatenate([b["input_ids"][:, 0] for b in batches]).tolist() == [-1, -2, -3, -4, -5, -6]
    assert np.concatenate([b["nsp"] for b in batches]).tolist() == [0, 1, 0, 1, 0, 1]
    assert np.concatenate([b["label_ids"] for b in batches]).tolist() == [0, -1, -2, -3, -4, -5]
