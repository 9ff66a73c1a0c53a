"""src/distill/teacher_cache.py: row keys, the logits phase 1 keeps (LogitCollector / load_known) and the phase-2 store
built from them plus the teacher for the rows phase 1 did not see."""
import json
import os

import mindspore as ms
import numpy as np
import pytest
from mindspore import nn

from src.distill import teacher_cache
from src.config import DataConfig
from src.model.heads import BertForSequenceClassification
from src.data.dataset import TD_COLUMNS
from src.data.records import write_records

SEQ = 16
COLUMNS = list(TD_COLUMNS)  # input_ids, segment_ids, input_mask, label_ids: the model's order


def rows_of(lengths, seed=0, vocab=99):
    rng = np.random.default_rng(seed)
    rows = []
    for n in lengths:
        ids = np.zeros(SEQ, np.int32)
        ids[:n] = rng.integers(1, vocab, n)
        mask = (np.arange(SEQ) < n).astype(np.int32)
        segments = np.where(np.arange(SEQ) < n // 2, 0, 1).astype(np.int32) * mask
        rows.append({"input_ids": ids, "input_mask": mask, "segment_ids": segments,
                     "label_ids": np.array([n % 2], np.int32)})
    return rows


def write(path, rows):
    spec = {"input_ids": ("int32", (SEQ,)), "input_mask": ("int32", (SEQ,)), "segment_ids": ("int32", (SEQ,)),
            "label_ids": ("int32", (1,))}
    write_records(iter(rows), str(path), spec, "mindrecord")
    return str(path)


def stack(rows, name):
    return np.stack([r[name] for r in rows])


def test_row_keys_ignore_padding_and_see_tokens_segments_and_mask():
    rows = rows_of([5, 9, 9, 16])
    ids, mask, seg = stack(rows, "input_ids"), stack(rows, "input_mask"), stack(rows, "segment_ids")
    keys = teacher_cache.row_keys(ids, seg, mask)
    assert len(np.unique(keys)) == 4
    # the same rows trimmed to a bucket length (9) or padded further (32) keep their keys
    np.testing.assert_array_equal(teacher_cache.row_keys(ids[:3, :9], seg[:3, :9], mask[:3, :9]), keys[:3])
    wide = [np.pad(a, ((0, 0), (0, 16))) for a in (ids, seg, mask)]
    np.testing.assert_array_equal(teacher_cache.row_keys(*wide), keys)
    # int64 columns (TFRecord) give the same keys as int32
    np.testing.assert_array_equal(teacher_cache.row_keys(ids.astype(np.int64), seg.astype(np.int64), mask), keys)
    # one token, one segment id or one more unmasked position changes the key
    for change in ("token", "segment", "mask"):
        i2, m2, s2 = ids.copy(), mask.copy(), seg.copy()
        if change == "token":
            i2[1, 3] += 1
        elif change == "segment":
            s2[1, 0] = 1 - s2[1, 0]
        else:
            m2[1, 9] = 1
        changed = teacher_cache.row_keys(i2, s2, m2)
        assert changed[1] != keys[1] and (changed[[0, 2, 3]] == keys[[0, 2, 3]]).all(), change


def test_collector_round_trip_and_refusals(tmp_path):
    rows = rows_of([4, 6, 8, 10])
    ids, mask, seg = stack(rows, "input_ids"), stack(rows, "input_mask"), stack(rows, "segment_ids")
    logits = np.arange(8, dtype=np.float32).reshape(4, 2)
    collector = teacher_cache.LogitCollector("a" * 64)
    assert collector.save(str(tmp_path / "empty.npz")) == 0 and not (tmp_path / "empty.npz").exists()
    collector.add(ids[:2], seg[:2], mask[:2], logits[:2])
    collector.add(ids[1:], seg[1:], mask[1:], logits[1:])  # row 1 seen twice (a second epoch)
    path = str(tmp_path / "kept.npz")
    assert collector.save(path) == 4
    known = teacher_cache.load_known(path, "a" * 64, 2)
    assert len(known) == 4
    found, got = known.lookup(teacher_cache.row_keys(ids[::-1], seg[::-1], mask[::-1]))
    assert found.all()
    np.testing.assert_array_equal(got, logits[::-1])
    other = rows_of([7], seed=5)
    found, got = known.lookup(teacher_cache.row_keys(*(stack(other, c) for c in COLUMNS[:3])))
    assert not found.any() and (got == 0).all()
    assert teacher_cache.load_known(path, "b" * 64, 2) is None  # another teacher's logits are never used
    assert teacher_cache.load_known(path, "a" * 64, 3) is None  # another label count
    assert teacher_cache.load_known(str(tmp_path / "missing.npz"), "a" * 64, 2) is None
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    assert teacher_cache.load_known(str(tmp_path / "bad.npz"), "a" * 64, 2) is None


class NoTeacher(nn.Cell):
    def construct(self, *args):
        raise AssertionError("the teacher ran although every row was known")


@pytest.mark.slow
@pytest.mark.parametrize("boundaries", [(), (8,)])
def test_store_takes_known_rows_and_runs_the_teacher_for_the_rest(tmp_path, tiny_config, boundaries):
    rows = rows_of([3, 5, 16, 7, 12, 2, 9, 16, 4, 11], seed=1)
    files = [write(tmp_path / "train.mindrecord", rows)]
    data = DataConfig(train_files=tuple(files), seq_length=SEQ, bucket_boundaries=boundaries)
    ms.set_seed(3)
    teacher = BertForSequenceClassification(tiny_config, 2)
    teacher.set_train(False)
    plain = teacher_cache.build(teacher, files, COLUMNS, data, str(tmp_path / "plain" / "train.mindrecord"), "s" * 64,
                                2, batch_size=4, progress=False)
    assert plain["rows"] == 10 and plain["from_phase1"] == 0
    expected = teacher_cache.read_logits(plain["path"])
    direct = teacher(ms.Tensor(stack(rows, "input_ids")), ms.Tensor(stack(rows, "segment_ids")),
                     ms.Tensor(stack(rows, "input_mask")))[0].asnumpy()
    np.testing.assert_allclose(expected, direct, atol=1e-5)

    # Phase 1 saw rows 0, 2, 4, 6 (its logits marked +100 here, to tell them apart): the store takes those and
    # runs the teacher for the other six.
    seen = [0, 2, 4, 6]
    collector = teacher_cache.LogitCollector("s" * 64)
    collector.add(*(stack(rows, c)[seen] for c in COLUMNS[:3]), expected[seen] + 100)
    kept = str(tmp_path / "kept.npz")
    collector.save(kept)
    mixed = teacher_cache.build(teacher, files, COLUMNS, data, str(tmp_path / "mixed" / "train.mindrecord"), "s" * 64,
                                2, batch_size=4, progress=False, known=teacher_cache.load_known(kept, "s" * 64, 2))
    assert mixed["rows"] == 10 and mixed["from_phase1"] == 4
    got = teacher_cache.read_logits(mixed["path"])
    np.testing.assert_allclose(got[seen], expected[seen] + 100, atol=1e-6)
    rest = [i for i in range(10) if i not in seen]
    np.testing.assert_allclose(got[rest], expected[rest], atol=1e-6)
    provenance = json.loads(open(mixed["path"] + teacher_cache.PROVENANCE_SUFFIX, encoding="utf-8").read())
    assert provenance["from_phase1"] == 4 and provenance["rows"] == 10

    # Every row known: the teacher is never called (nor compiled).
    collector.add(*(stack(rows, c)[rest] for c in COLUMNS[:3]), expected[rest])
    collector.save(kept)
    full = teacher_cache.build(NoTeacher(), files, COLUMNS, data, str(tmp_path / "full" / "train.mindrecord"),
                               "s" * 64, 2, batch_size=4, progress=False,
                               known=teacher_cache.load_known(kept, "s" * 64, 2))
    assert full["from_phase1"] == 10
    np.testing.assert_allclose(teacher_cache.read_logits(full["path"])[rest], expected[rest], atol=1e-6)
    assert os.path.isfile(full["path"])


def test_collector_completes_the_rows_training_dropped_at_a_width_it_compiled(tmp_path):
    """Training drops each length bucket's last partial batch; complete() runs those rows in full batches at the
    smallest width already seen that fits them, and gives up (0) when too many rows are missing."""
    rows = rows_of([3, 5, 16, 7, 12, 2, 9, 16, 4, 11], seed=2)
    files = [write(tmp_path / "train.mindrecord", rows)]
    data = DataConfig(train_files=tuple(files), seq_length=SEQ)

    def fake_logits(ids):
        return np.stack([ids.sum(axis=1), ids.max(axis=1)], axis=1).astype(np.float32)

    collector = teacher_cache.LogitCollector("s" * 64)
    seen = [2, 7, 4, 0]  # lengths 16, 16, 12, 3: widths 16 and 8 seen
    collector.add(*(stack(rows, c)[seen[:3]] for c in COLUMNS[:3]), fake_logits(stack(rows, "input_ids")[seen[:3]]))
    collector.add(*(stack(rows, c)[seen[3:]][:, :8] for c in COLUMNS[:3]),
                  fake_logits(stack(rows, "input_ids")[seen[3:]]))
    calls = []

    def run(batch):
        calls.append([np.shape(a) for a in batch])
        return fake_logits(batch[0])

    assert collector.complete(files, COLUMNS, data, 4, run) == 6  # rows 1, 3, 5, 6, 8, 9; the longest has 11 tokens
    assert calls == [[(4, 16), (4, 16), (4, 16), (4,)]] * 2  # full batches at width 16 (8 is too short)
    path = str(tmp_path / "kept.npz")
    assert collector.save(path) == 10
    found, got = teacher_cache.load_known(path, "s" * 64, 2).lookup(
        teacher_cache.row_keys(*(stack(rows, c) for c in COLUMNS[:3])))
    assert found.all()
    np.testing.assert_array_equal(got, fake_logits(stack(rows, "input_ids")))
    # nothing left to do; and with more than FEW_ROWS_BATCHES batches unseen, the phase-2 store computes them
    assert collector.complete(files, COLUMNS, data, 4, run) == 0 and len(calls) == 2
    few = teacher_cache.LogitCollector("s" * 64)
    few.add(*(stack(rows, c)[:1] for c in COLUMNS[:3]), fake_logits(stack(rows, "input_ids")[:1]))
    assert few.complete(files, COLUMNS, data, 2, run) == 0 and len(calls) == 2  # 9 unseen > 4 batches of 2
