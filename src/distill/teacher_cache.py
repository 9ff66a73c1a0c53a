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
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from src.data.dataset import validate_files
from src.data.dataset import MODEL_INPUT_COLUMNS
from src.data.batching import bucket_lengths, default_bucket_lengths, pad_indices
from src.data.records import records_vocab, write_records
from src.data.vocab import agree
from src.infra.files import atomic_output, write_json_atomic

logger = logging.getLogger(__name__)

LOGITS_COLUMN = "teacher_logits"
PROVENANCE_SUFFIX = ".provenance.json"
CHUNK_ROWS = 4096  # rows sorted by length together (bounded memory for any dataset size)
BYPRODUCT_FILE = "teacher_logits.npz"  # in the phase-1 run directory
FEW_ROWS_BATCHES = 4  # up to this many batches of rows phase 1 did not see are computed at one width
_KEY = np.dtype([("hi", "<u8"), ("lo", "<u8")])


def row_keys(input_ids: np.ndarray, segment_ids: np.ndarray, input_mask: np.ndarray) -> np.ndarray:
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

    def add(self, input_ids: np.ndarray, segment_ids: np.ndarray, input_mask: np.ndarray, logits: np.ndarray) -> None:
        keys = row_keys(input_ids, segment_ids, input_mask)
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
            keys = row_keys(*(chunk[name] for name in MODEL_INPUT_COLUMNS))
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
            take = pad_indices(idx, batch_size)
            batch = [rows[name][take][:, :width] if rows[name].ndim == 2 and rows[name].shape[1] == data.seq_length
                     else rows[name][take] for name in columns]
            logits = np.asarray(run(batch), np.float32).reshape(batch_size, -1)[:len(idx)]
            self.add(*(rows[name][idx][:, :width] for name in MODEL_INPUT_COLUMNS), logits)
        return count

    def save(self, path: str) -> int:
        """Write the distinct rows seen to `path` (.npz, atomically); returns their number (0: nothing written)."""
        if not self._keys:
            return 0
        keys, first = np.unique(np.concatenate(self._keys), return_index=True)
        logits = np.concatenate(self._logits)[first]
        with atomic_output(path, binary=True) as f:
            np.savez(f, keys=keys.view("<u8").reshape(-1, 2), logits=logits,
                     teacher_sha256=np.array(self.teacher_sha256))
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
    from src.data.dataset import create_tinybert_dataset  # pylint: disable=import-outside-toplevel

    dataset = create_tinybert_dataset(list(files), list(columns), CHUNK_ROWS, seq_length,
                                      dataset_type=data.dataset_type, schema_file=data.schema_file or None,
                                      shuffle=False, drop_remainder=False)
    for batch in dataset.create_dict_iterator(num_epochs=1, output_numpy=True):
        yield {name: np.asarray(batch[name]) for name in columns}


class _TeacherPass:
    """The teacher's logits for the rows of the training files, chunk by chunk, sorted by length, in full batches."""

    def __init__(self, teacher: Any, lengths: Sequence[int], num_labels: int, batch_size: int,
                 known: Optional[KnownLogits]):
        self.teacher, self.lengths, self.num_labels = teacher, list(lengths), num_labels
        self.batch_size, self.known = batch_size, known
        self.compiled = None
        self.rows = self.from_known = 0

    def _forward(self, *inputs):
        import mindspore as ms  # pylint: disable=import-outside-toplevel

        from src.model.heads import LOGITS  # pylint: disable=import-outside-toplevel

        if self.compiled is None:  # the teacher is loaded and compiled only if some row needs it
            teacher = self.teacher
            net = teacher() if callable(teacher) and not isinstance(teacher, ms.nn.Cell) else teacher
            net.set_train(False)

            def logits_of(ids, segments, mask):
                return net(ids, segments, mask)[LOGITS]

            self.compiled = ms.jit(logits_of)
        return self.compiled(*(ms.Tensor(a) for a in inputs))

    def logits(self, chunk: Dict[str, np.ndarray]) -> np.ndarray:
        """[n, C] logits of one chunk of rows: from `known` where phase 1 kept them, else from the teacher."""
        ids, segments, mask = (chunk[name] for name in MODEL_INPUT_COLUMNS)
        n = ids.shape[0]
        logits, found = np.zeros((n, self.num_labels), np.float32), np.zeros(n, bool)
        if self.known is not None:
            found, logits = self.known.lookup(row_keys(ids, segments, mask))
            self.from_known += int(found.sum())
        true_len = mask.sum(axis=1)
        need = np.nonzero(~found)[0]
        order = need[np.argsort(true_len[need], kind="stable")]
        # A few rows left over by phase 1 (its dropped last batches): all at one width, one graph to compile.
        few = self.known is not None and 0 < len(order) <= FEW_ROWS_BATCHES * self.batch_size
        for lo in range(0, len(order), self.batch_size):
            idx = order[lo:lo + self.batch_size]
            width = next(b for b in self.lengths if b >= int(true_len[order[-1] if few else idx[-1]]))
            # a full batch every time (the last one padded with copies of its first row): one graph per length
            take = pad_indices(idx, self.batch_size)
            out = self._forward(*(a[take, :width].astype(np.int32) for a in (ids, segments, mask)))
            logits[idx] = out.asnumpy().reshape(len(take), -1)[:len(idx)]
        self.rows += n
        return logits


def _store_column(shape: List[int], dtype: str) -> Tuple[str, Tuple[int, ...]]:
    """The store's (dtype, shape) of a source column: float32 scalars (TFRecord [1]) as scalars, an int [1]
    label as [1], other columns as they are."""
    if dtype == "float32":
        return "float32", () if shape in ([], [1]) else tuple(shape)
    return "int32", (1,) if shape == [1] else tuple(shape)


def build(teacher: Any, files: Sequence[str], columns: Sequence[str], data: Any, output: str, teacher_sha256: str,
          num_labels: int, batch_size: int = 64, progress: bool = True,
          known: Optional[KnownLogits] = None) -> Dict[str, Any]:
    """Compute the teacher's logits for every row of `files` and write `output` (MindRecord) with `columns` plus
    LOGITS_COLUMN; skip when a current store exists. `teacher` is the network or a function that loads it. Rows in
    `known` (this teacher's logits kept by phase 1) are taken from there, so the teacher runs only for the others
    (and is neither loaded nor compiled when there are none).
    Returns {"path", "rows", "seconds", "reused", "from_phase1"}."""
    files = list(files)
    expected = provenance(files, teacher_sha256, data.seq_length, num_labels)
    if is_current(output, expected):
        with open(output + PROVENANCE_SUFFIX, encoding="utf-8") as f:
            rows = json.load(f)["rows"]
        logger.info("teacher logits: %s is current (%d rows), reusing it", output, rows)
        return {"path": output, "rows": rows, "seconds": 0.0, "reused": True, "from_phase1": 0}
    start = time.time()
    lengths = (bucket_lengths(data.seq_length, data.bucket_boundaries) if data.bucket_boundaries
               else default_bucket_lengths(data.seq_length))
    teacher_pass = _TeacherPass(teacher, lengths, num_labels, batch_size, known)
    # the columns' shapes as stored (an int [1] label stays [1]) and dtypes (a regression label stays float32,
    # one float per row as the loader yields it), from the loader's own schema checks
    dtypes: Dict[str, str] = {}
    shapes = validate_files(files, columns, data.seq_length, data.dataset_type, data.schema_file or None, dtypes)
    spec = {name: _store_column(shapes[name], dtypes[name]) for name in columns}
    spec[LOGITS_COLUMN] = ("float32", (num_labels,))

    def rows() -> Iterator[Dict[str, Any]]:
        last_report = time.time()
        for chunk in _source_rows(files, columns, data.seq_length, data):
            logits = teacher_pass.logits(chunk)
            for i in range(len(logits)):
                row = {name: np.reshape(chunk[name][i], spec[name][1]) for name in columns}
                row[LOGITS_COLUMN] = logits[i]
                yield row
            if progress and time.time() - last_report > 10:
                rate = teacher_pass.rows / max(time.time() - start, 1e-9)
                logger.info("teacher logits: %d rows, %.0f rows/s", teacher_pass.rows, rate)
                last_report = time.time()

    stream = rows()
    first = next(stream, None)
    if first is None:
        raise ValueError(f"{files}: no rows to compute teacher logits for")
    vocab = agree((f, records_vocab(f)) for f in files)  # the source records' vocabulary, carried over
    write_records(itertools.chain([first], stream), output, spec, "mindrecord",
                  vocab=vocab)
    seconds, done, kept = time.time() - start, teacher_pass.rows, teacher_pass.from_known
    info = dict(expected, rows=done, from_phase1=kept, seconds=round(seconds, 2),
                rows_per_s=round(done / max(seconds, 1e-9), 1), bucket_lengths=lengths)
    write_json_atomic(output + PROVENANCE_SUFFIX, info)
    logger.info("teacher logits: %d rows in %.1f s (%d kept from phase 1, %d computed, lengths %s) -> %s",
                done, seconds, kept, done - kept, lengths, output)
    return {"path": output, "rows": done, "seconds": seconds, "reused": False, "from_phase1": kept}


def read_logits(path: str) -> Optional[np.ndarray]:
    """All stored logits in row order (for tests and inspection)."""
    from mindspore.mindrecord import FileReader  # pylint: disable=import-outside-toplevel

    reader = FileReader(path)
    try:
        return np.stack([np.asarray(row[LOGITS_COLUMN]) for row in reader.get_next()]) if reader.len() else None
    finally:
        reader.close()
