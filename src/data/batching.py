"""Batch shapes shared by training, evaluation, the teacher-logit store and inference: length buckets and
padding a short batch to a full one (graph mode compiles one graph per input shape, so a last partial batch padded
to the usual size reuses a graph instead of compiling another)."""
from __future__ import annotations

from typing import List, Sequence

import numpy as np

DEFAULT_BUCKETS = (16, 32, 64, 128, 256)  # bucket lengths used when none are configured (teacher-logit store)


def bucket_lengths(seq_length: int, boundaries: Sequence[int] = ()) -> List[int]:
    """Sorted, distinct bucket lengths ending with `seq_length`: `boundaries` (each in [2, seq_length]) plus
    `seq_length` (just [seq_length] when there are none).

    Raises:
        ValueError: a boundary outside [2, seq_length].
    """
    lengths = sorted({int(b) for b in boundaries})
    bad = [b for b in lengths if not 2 <= b <= seq_length]
    if bad:
        raise ValueError(f"bucket_boundaries {list(boundaries)}: expected lengths in [2, seq_length={seq_length}], "
                         f"got {bad}")
    return lengths if lengths and lengths[-1] == seq_length else lengths + [seq_length]


def default_bucket_lengths(seq_length: int) -> List[int]:
    """DEFAULT_BUCKETS below `seq_length`, then `seq_length`: a few compiled shapes for inference-only passes."""
    return [b for b in DEFAULT_BUCKETS if b < seq_length] + [seq_length]


def pad_rows(array: np.ndarray, rows: int) -> np.ndarray:
    """`array` [n, ...] with copies of its first row appended up to `rows` rows (valid inputs whose outputs the
    caller drops); unchanged when it already has `rows` rows or more."""
    array = np.asarray(array)
    missing = rows - array.shape[0]
    if missing <= 0:
        return array
    return np.concatenate([array, np.repeat(array[:1], missing, axis=0)], axis=0)


def pad_indices(indices: np.ndarray, rows: int) -> np.ndarray:
    """Row indices padded to `rows` with the first index (pad_rows for data gathered by index)."""
    return pad_rows(np.asarray(indices), rows)
