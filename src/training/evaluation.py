"""Evaluation during and after training: a task network scored on one or more eval sets with the task's metric.

Every example is scored (the last partial batch is padded, and its padding rows dropped), unlike the model zoo,
which dropped it (864 of the 872 SST-2 dev sentences).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import mindspore as ms
from mindspore import nn

from src.config import DataConfig
from src.data.batching import pad_rows
from src.data.dataset import MODEL_INPUT_COLUMNS, create_tinybert_dataset, resolve_files, validate_files
from src.metrics import IGNORE_INDEX, evaluate
from src.model.heads import LOGITS


@dataclass
class EvalSet:
    name: str
    files: Sequence[str]


class Evaluator:
    """Scores a task network on one or more eval sets; the first set's score selects the best checkpoint.

    Every example is scored (no dropped last batch). Returns {"score", "select_set", "sets": {name: result}}.
    """

    def __init__(self, net: nn.Cell, sets: Sequence[EvalSet], data: DataConfig, batch_size: int, metric: str,
                 label_names: Optional[Sequence[str]] = None, label_column: str = "label_ids"):
        if not sets:
            raise ValueError("Evaluator needs at least one eval set")
        self.net = net
        self.sets = list(sets)
        self.data = data
        self.batch_size = batch_size
        self.metric = metric
        self.label_names = label_names
        self.columns = [*MODEL_INPUT_COLUMNS, label_column]

    def check_files(self) -> None:
        """Every eval set's files exist and have the columns and seq_length of the config (raises naming them)."""
        for eval_set in self.sets:
            paths = resolve_files(list(eval_set.files))
            validate_files(paths, self.columns, self.data.seq_length, self.data.dataset_type,
                           self.data.schema_file or None)

    def logits_and_labels(self, files: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
        dataset = create_tinybert_dataset(list(files), self.columns, self.batch_size, self.data.seq_length,
                                          dataset_type=self.data.dataset_type,
                                          schema_file=self.data.schema_file or None, shuffle=False,
                                          drop_remainder=False,
                                          bucket_boundaries=list(self.data.bucket_boundaries) or None)
        was_training = self.net.training
        self.net.set_train(False)
        logits, labels = [], []
        try:
            for ids, segments, mask, label in dataset.create_tuple_iterator(num_epochs=1, output_numpy=True):
                n = int(ids.shape[0])
                # the last batch (of each bucket) padded with copies of its first row: graph mode compiles one eval
                # graph per length, not one more per partial batch
                inputs = (ms.Tensor(pad_rows(t, self.batch_size)) for t in (ids, segments, mask))
                batch_logits, batch_labels = self.net(*inputs)[LOGITS].asnumpy()[:n], label
                if batch_logits.ndim == 3 and batch_logits.shape[1] < self.data.seq_length:
                    # token logits of a bucketed batch: pad back to seq_length; padded positions are not scored
                    pad = self.data.seq_length - batch_logits.shape[1]
                    batch_logits = np.pad(batch_logits, ((0, 0), (0, pad), (0, 0)))
                    batch_labels = np.pad(batch_labels, ((0, 0), (0, pad)), constant_values=IGNORE_INDEX)
                logits.append(batch_logits)
                labels.append(batch_labels)
        finally:
            self.net.set_train(was_training)
        return np.concatenate(logits), np.concatenate(labels)

    def __call__(self) -> Dict[str, Any]:
        results = {}
        for eval_set in self.sets:
            logits, labels = self.logits_and_labels(eval_set.files)
            results[eval_set.name] = evaluate(self.metric, logits, labels, self.label_names)
        first = self.sets[0].name
        return {"score": float(results[first]["score"]), "metric": self.metric, "select_set": first, "sets": results}


def eval_sets_from(files: Sequence[str]) -> List[EvalSet]:
    """Each entry of data.eval_files (a path or a glob) is one eval set, named after its file name."""
    sets = []
    for entry in files:
        base = os.path.basename(entry)
        name = base.split(".")[0].rstrip("*") or base
        sets.append(EvalSet(name, [entry]))
    names = [s.name for s in sets]
    if len(set(names)) != len(names):
        sets = [EvalSet(f"{i}:{s.name}", s.files) for i, s in enumerate(sets)]
    return sets
