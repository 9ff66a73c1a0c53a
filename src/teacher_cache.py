"""Teacher logits computed once and stored with the training records, for TD phase 2.

Phase 2 (prediction-layer distillation) reads only the teacher's logits, and the teacher runs in eval mode
(dropout off), so an example's teacher logits are the same at every epoch. The PyTorch original recomputes them
at every step, padded to max_seq_length; here they are computed once, in inference mode, sorted by length and
trimmed to a few bucket lengths, and written as a ``teacher_logits`` float32 column next to the example's own
columns (rows in the source order, so shuffling with the same seed gives the same batches). Phase 2 then trains
without a teacher in the graph: less time per step and less memory. The result is the same up to float rounding
(tests/test_teacher_cache.py compares the stored logits with the teacher's and the two phase-2 runs).

Phase 1 runs the whole teacher at every step, logits included, so it keeps them (``LogitCollector``, keyed by
each row's tokens) and writes ``OUT/phase1/teacher_logits.npz`` with the teacher checkpoint's sha256; the store
then takes every row phase 1 saw from there and runs the teacher only for the rest (the rows of a dropped last
batch, rows of an interrupted epoch before a resume, new rows). Logits of another teacher are never used.

The store is ``OUT/teacher_logits/rank_<r>/train.mindrecord`` (every data-parallel rank writes its own copy of
all rows, so no rank waits for another) with ``train.mindrecord.provenance.json``: the teacher checkpoint's
sha256 and every source file's size and modification time. A store whose provenance differs is rebuilt.
Classification and regression only: NER logits are per token, and phase 2 runs the teacher for them.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import time
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np

from src.dataset import validate_files
from src.records import write_records

logger = logging.getLogger(__name__)

LOGITS_COLUMN = "teacher_logits"
PROVENANCE_SUFFIX = ".provenance.json"
CHUNK_ROWS = 4096  # rows sorted by length together (bounded memory for any dataset size)
BYPRODUCT_FILE = "teacher_logits.npz"  # in the phase-1 run directory
FEW_ROWS_BATCHES = 4  # up to this many batches of rows phase 1 did not see are computed at one width
_KEY = np.dtype([("hi", "<u8"), ("lo", "<u8")])


def row_keys(input_ids: np.ndarray, input_mask: np.ndarray, segment_ids: np.ndarray) -> np.ndarray:
    """A 128-bit key per row: BLAKE2b of its tokens, segments and mask up to the last unmasked position, so the
    same row trimmed to a bucket length or padded to seq_length gets the same key."""
    ids, mask, segments = (np.asarray(a).reshape(np.shape(a)[0], -1) for a in (input_ids, input_mask, segment_ids))
    nonzero = mask != 0
    lengths = np.where(nonzero.any(axis=1), mask.shape[1] - np.argmax(nonzero[:, ::-1], axis=1), 0)
    digests = b"".join(
        hashlib.blake2b(ids[i, :n].astype("<i4").tobytes() + b"|" + segments[i, :n].astype("<i4").tobytes() + b"|" +
                        mask[i, :n].astype("<i4").tobytes(), digest_size=16).digest()
        for i, n in enumerate(lengths.tolist()))
    return np.frombuffer(digests, dtype=_KEY).copy()


class LogitCollector:
    """Teacher logits seen in TD phase 1 (the teacher computes them at every step anyway), for the phase-2 store."""

    def __init__(self, teacher_sha256: str):
        self.teacher_sha256 = teacher_sha256
        self._keys: List[np.ndarray] = []
        self._logits: List[np.ndarray] = []
        self.widths: set = set()  # sequence lengths of the batches seen (the phase's compiled shapes)

    def add(self, input_ids: np.ndarray, input_mask: np.ndarray, segment_ids: np.ndarray, logits: np.ndarray) -> None:
        keys = row_keys(input_ids, input_mask, segment_ids)
        self._keys.append(keys)
        self._logits.append(np.asarray(logits, np.float32).reshape(len(keys), -1).copy())
        self.widths.add(int(np.shape(input_ids)[1]))

    def complete(self, files: Sequence[str], columns: Sequence[str], data: Any, batch_size: int, run) -> int:
        """Add the rows of `files` not seen yet (the last partial batch of each length bucket, which training
        drops) through `run(batch)` -> teacher logits, where `batch` is the columns' arrays in `columns` order at
        one of the widths already seen (so a graph-mode `run` compiles nothing) and always `batch_size` rows.
        Only when they are few (at most FEW_ROWS_BATCHES batches); returns how many rows were added."""
        if not self._keys:
            return 0
        seen = set(np.unique(np.concatenate(self._keys)).tolist())
        missing: Dict[str, List[np.ndarray]] = {name: [] for name in columns}
        count = 0
        for chunk in _source_rows(files, columns, data.seq_length, data):
            keys = row_keys(chunk["input_ids"], chunk["input_mask"], chunk["segment_ids"])
            new = np.array([k not in seen for k in keys.tolist()], bool)
            count += int(new.sum())
            if count > FEW_ROWS_BATCHES * batch_size:
                return 0  # many rows unseen (an interrupted epoch, other files): the phase-2 store computes them
            for name in columns:
                missing[name].append(chunk[name][new])
        if not count:
            return 0
        rows = {name: np.concatenate(parts) for name, parts in missing.items()}
        mask = rows["input_mask"].reshape(count, -1)
        longest = int((mask != 0).any(axis=0).nonzero()[0].max()) + 1 if mask.any() else 1
        fitting = sorted(w for w in self.widths if w >= longest)
        if not fitting:
            return 0
        width = fitting[0]
        for lo in range(0, count, batch_size):
            idx = np.arange(lo, min(lo + batch_size, count))
            take = np.concatenate([idx, np.full(batch_size - len(idx), idx[0])])
            batch = [rows[name][take][:, :width] if rows[name].ndim == 2 and rows[name].shape[1] == data.seq_length
                     else rows[name][take] for name in columns]
            logits = np.asarray(run(batch), np.float32).reshape(batch_size, -1)[:len(idx)]
            self.add(*(rows[name][idx][:, :width] for name in ("input_ids", "input_mask", "segment_ids")), logits)
        return count

    def save(self, path: str) -> int:
        """Write the distinct rows seen to `path` (.npz, atomically); returns their number (0: nothing written)."""
        if not self._keys:
            return 0
        keys, first = np.unique(np.concatenate(self._keys), return_index=True)
        logits = np.concatenate(self._logits)[first]
        tmp = path + ".tmp.npz"
        np.savez(tmp, keys=keys.view("<u8").reshape(-1, 2), logits=logits,
                 teacher_sha256=np.array(self.teacher_sha256))
        os.replace(tmp, path)
        return len(keys)


class KnownLogits:
    """Logits by row key, from a LogitCollector file."""

    def __init__(self, keys: np.ndarray, logits: np.ndarray):
        self.keys, self.logits = keys, logits  # keys sorted (np.unique)

    def __len__(self) -> int:
        return len(self.keys)

    def lookup(self, keys: np.ndarray):
        """(found bool [n], logits [n, C]; rows not found are zeros)."""
        at = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        found = self.keys[at] == keys
        return found, np.where(found[:, None], self.logits[at], 0.0).astype(np.float32)


def load_known(path: str, teacher_sha256: str, num_labels: int) -> Optional[KnownLogits]:
    """The logits phase 1 kept at `path`, if they are this teacher's; None otherwise (and why, in the log)."""
    if not os.path.isfile(path):
        return None
    try:
        with np.load(path) as found:
            sha, keys, logits = str(found["teacher_sha256"]), found["keys"], found["logits"]
    except (OSError, ValueError, KeyError) as exc:
        logger.warning("teacher logits: %s unreadable (%s); not used", path, exc)
        return None
    if sha != teacher_sha256:
        logger.info("teacher logits: %s came from another teacher (sha256 %s...); not used", path, sha[:12])
        return None
    if keys.ndim != 2 or keys.shape[1] != 2 or logits.shape != (len(keys), num_labels) or not len(keys):
        logger.warning("teacher logits: %s holds keys %s and logits %s, expected [N, 2] and [N, %d]; not used", path,
                       keys.shape, logits.shape, num_labels)
        return None
    return KnownLogits(np.ascontiguousarray(keys.astype("<u8")).view(_KEY).reshape(-1), logits.astype(np.float32))


def supported(task_type: str) -> bool:
    """Tasks whose teacher logits are one [C] vector per example."""
    return task_type in ("classification", "regression")


def store_path(output_dir: str, rank: int = 0) -> str:
    return os.path.join(output_dir, "teacher_logits", f"rank_{rank}", "train.mindrecord")


def _bucket_lengths(seq_length: int, boundaries: Sequence[int]) -> List[int]:
    lengths = sorted({int(b) for b in boundaries if 2 <= int(b) <= seq_length})
    if not lengths:  # a few compiled shapes: 16, 32, 64, ... up to seq_length
        lengths = [b for b in (16, 32, 64, 128, 256) if b < seq_length]
    return lengths + [seq_length] if not lengths or lengths[-1] != seq_length else lengths


def provenance(files: Sequence[str], teacher_sha256: str, seq_length: int, num_labels: int) -> Dict[str, Any]:
    sources = []
    for path in files:
        stat = os.stat(path)
        sources.append({"path": os.path.abspath(path), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    return {"teacher_sha256": teacher_sha256, "sources": sources, "seq_length": int(seq_length),
            "num_labels": int(num_labels), "column": LOGITS_COLUMN}


def is_current(path: str, expected: Dict[str, Any]) -> bool:
    """True when the store at `path` exists and was built from exactly `expected` (see provenance())."""
    try:
        with open(path + PROVENANCE_SUFFIX, encoding="utf-8") as f:
            found = json.load(f)
    except (OSError, ValueError):
        return False
    return os.path.isfile(path) and {k: found.get(k) for k in expected} == expected


def _source_rows(files: Sequence[str], columns: Sequence[str], seq_length: int, data: Any) -> Iterator[Dict]:
    """Rows of the training files in order, unshuffled, with the columns as stored (padded to seq_length)."""
    from src.dataset import create_tinybert_dataset  # pylint: disable=import-outside-toplevel

    dataset = create_tinybert_dataset(list(files), list(columns), CHUNK_ROWS, seq_length,
                                      dataset_type=data.dataset_type, schema_file=data.schema_file or None,
                                      shuffle=False, drop_remainder=False)
    for batch in dataset.create_dict_iterator(num_epochs=1, output_numpy=True):
        yield {name: np.asarray(batch[name]) for name in columns}


def build(teacher: Any, files: Sequence[str], columns: Sequence[str], data: Any, output: str, teacher_sha256: str,
          num_labels: int, batch_size: int = 64, progress: bool = True,
          known: Optional[KnownLogits] = None) -> Dict[str, Any]:
    """Compute the teacher's logits for every row of `files` and write `output` (MindRecord) with `columns` plus
    LOGITS_COLUMN; skip when a current store exists. `teacher` is the network or a function that loads it. Rows in
    `known` (this teacher's logits kept by phase 1) are taken from there, so the teacher runs only for the others
    (and is neither loaded nor compiled when there are none).
    Returns {"path", "rows", "seconds", "reused", "from_phase1"}."""
    import mindspore as ms  # pylint: disable=import-outside-toplevel

    from src.modeling import LOGITS  # pylint: disable=import-outside-toplevel

    files = list(files)
    expected = provenance(files, teacher_sha256, data.seq_length, num_labels)
    if is_current(output, expected):
        with open(output + PROVENANCE_SUFFIX, encoding="utf-8") as f:
            rows = json.load(f)["rows"]
        logger.info("teacher logits: %s is current (%d rows), reusing it", output, rows)
        return {"path": output, "rows": rows, "seconds": 0.0, "reused": True, "from_phase1": 0}
    start = time.time()
    seq_length = data.seq_length
    lengths = _bucket_lengths(seq_length, data.bucket_boundaries)
    compiled = {}

    def forward(ids, mask, segments):
        if "fn" not in compiled:  # the teacher is loaded and compiled only if some row needs it
            net = teacher() if callable(teacher) and not isinstance(teacher, ms.nn.Cell) else teacher
            net.set_train(False)

            def logits_of(ids, mask, segments):
                return net(ids, segments, mask)[LOGITS]

            compiled["fn"] = ms.jit(logits_of)
        return compiled["fn"](ids, mask, segments)

    # the columns' shapes as stored (a [1] label stays [1]), from the loader's own schema checks
    shapes = validate_files(files, columns, seq_length, data.dataset_type, data.schema_file or None)
    done = {"rows": 0, "known": 0}

    def rows() -> Iterator[Dict[str, Any]]:
        last_report = time.time()
        for chunk in _source_rows(files, columns, seq_length, data):
            ids, mask, segments = chunk["input_ids"], chunk["input_mask"], chunk["segment_ids"]
            n = ids.shape[0]
            logits = np.zeros((n, num_labels), np.float32)
            if known is not None:
                found, logits = known.lookup(row_keys(ids, mask, segments))
                done["known"] += int(found.sum())
            else:
                found = np.zeros(n, bool)
            true_len = mask.sum(axis=1)
            need = np.nonzero(~found)[0]
            order = need[np.argsort(true_len[need], kind="stable")]
            # A few rows left over by phase 1 (its dropped last batches): all at one width, one graph to compile.
            few = known is not None and 0 < len(order) <= FEW_ROWS_BATCHES * batch_size
            for lo in range(0, len(order), batch_size):
                idx = order[lo:lo + batch_size]
                width = next(b for b in lengths if b >= int(true_len[order[-1] if few else idx[-1]]))
                # a full batch every time (the last one padded with copies of its first row): one graph per length
                take = np.concatenate([idx, np.full(batch_size - len(idx), idx[0])]) if len(idx) < batch_size \
                    else idx
                out = forward(ms.Tensor(ids[take, :width].astype(np.int32)),
                              ms.Tensor(mask[take, :width].astype(np.int32)),
                              ms.Tensor(segments[take, :width].astype(np.int32)))
                logits[idx] = out.asnumpy().reshape(len(take), -1)[:len(idx)]
            for i in range(n):
                row = {name: chunk[name][i] for name in columns}
                row[LOGITS_COLUMN] = logits[i]
                yield row
            done["rows"] += n
            if progress and time.time() - last_report > 10:
                rate = done["rows"] / max(time.time() - start, 1e-9)
                logger.info("teacher logits: %d rows, %.0f rows/s", done["rows"], rate)
                last_report = time.time()

    stream = rows()
    first = next(stream, None)
    if first is None:
        raise ValueError(f"{files}: no rows to compute teacher logits for")
    spec = {name: ("int32", (1,) if shapes.get(name) == [1] else tuple(np.shape(first[name]))) for name in columns}
    spec[LOGITS_COLUMN] = ("float32", (num_labels,))

    def shaped(stream: Iterator[Dict[str, Any]]) -> Iterator[Dict[str, Any]]:
        for row in stream:
            yield {k: (np.reshape(v, spec[k][1]) if k != LOGITS_COLUMN else v) for k, v in row.items()}

    write_records(shaped(itertools.chain([first], stream)), output, spec, "mindrecord")
    seconds = time.time() - start
    info = dict(expected, rows=done["rows"], from_phase1=done["known"], seconds=round(seconds, 2),
                rows_per_s=round(done["rows"] / max(seconds, 1e-9), 1), bucket_lengths=lengths)
    tmp = output + PROVENANCE_SUFFIX + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2)
    os.replace(tmp, output + PROVENANCE_SUFFIX)
    logger.info("teacher logits: %d rows in %.1f s (%d kept from phase 1, %d computed, lengths %s) -> %s",
                done["rows"], seconds, done["known"], done["rows"] - done["known"], lengths, output)
    return {"path": output, "rows": done["rows"], "seconds": seconds, "reused": False, "from_phase1": done["known"]}


def read_logits(path: str) -> Optional[np.ndarray]:
    """All stored logits in row order (for tests and inspection)."""
    from mindspore.mindrecord import FileReader  # pylint: disable=import-outside-toplevel

    reader = FileReader(path)
    try:
        return np.stack([np.asarray(row[LOGITS_COLUMN]) for row in reader.get_next()]) if reader.len() else None
    finally:
        reader.close()
