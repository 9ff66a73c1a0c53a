"""Dataset sink mode on Ascend/GPU (the model zoo's --enable_data_sink / --data_sink_steps).

In sink mode the batches go to a queue on the device and one compiled graph takes a batch from it (GetNext),
computes the gradients and applies the update, so the host neither copies a batch nor waits for the device at each
step: it reads the losses, the loss scale and the step count only at the end of a chunk of `data_sink_steps` steps
(the whole epoch with -1, as in the zoo). MindSpore has no sink mode on CPU (`ms.data_sink` refuses it), so CPU runs
step by step whatever run.data_sink says.

What stays the same as the step-by-step loop (src/training/loop.py):
- the data order: each epoch is its own dataset with seed data_seed + epoch, resumed by skipping the batches the
  manifest says were consumed; a chunk never crosses an epoch's end;
- the arguments of the step: GD's placeholder labels, and in data-parallel runs this rank's rows of the global
  batch with the global batch's loss normalizers, are made in the dataset pipeline (`step_columns`), the same
  values the step-by-step loop passes (tests/test_sink.py checks both);
- the step: TrainStep's own gradients and update functions, in one graph;
- logs, evaluation and saves happen at chunk ends, when a multiple of log_steps / eval_steps / save_steps was
  passed; the logged loss is the last step's of each chunk (the device does not report the others).

The number of steps a call ran is read from a counter the graph increments, so the bookkeeping stays exact even
where MindSpore runs fewer steps per call than asked (it does one per call at jit_level O2 and on Ascend 910A).

Needs one batch shape: length buckets (data.bucket_boundaries) are refused with sink mode by the config check.
Phase 1 keeps no teacher logits for phase 2 in sink mode (its graph returns only the chunk's last step), so phase
2 computes them once in inference mode instead.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, List, Optional, Sequence

import numpy as np
import mindspore as ms
from mindspore import ops

from src.data.dataset import Batch
from src.metrics import IGNORE_INDEX

logger = logging.getLogger(__name__)

ARGUMENT_COLUMNS = ("input_ids", "segment_ids", "input_mask", "label_ids", "teacher_logits", "normalizers")


def active(run: Any, device_target: str) -> bool:
    """run.data_sink takes effect: asked for, on a device that has a sink mode (Ascend, GPU)."""
    return bool(run.data_sink) and device_target in ("Ascend", "GPU")


def loss_normalizers(global_batch: Batch, world_size: int) -> np.ndarray:
    """[3] float32 of the global batch / world_size: real tokens, real (query, key) pairs per head, scored labels
    (what DistillLoss divides its masked means by, so that the ranks' mean is the global batch's loss)."""
    lengths = np.asarray(global_batch.input_mask).astype(np.float64).sum(axis=1)
    labels = np.asarray(global_batch.label_ids) if global_batch.label_ids is not None else None
    scored = float((labels != IGNORE_INDEX).sum()) if labels is not None else float(len(lengths))
    return (np.array([lengths.sum(), (lengths ** 2).sum(), scored]) / world_size).astype(np.float32)


def step_columns(columns: Sequence[str], batch_size: int, rank: int, world_size: int) -> Callable:
    """The per-batch function that turns the loader's global batch (numpy, in `columns` order) into the arguments
    of the training step: exactly what the step-by-step loop passes (see module docstring). Returns a tuple in
    ARGUMENT_COLUMNS order, without the columns the step does not take (`argument_names`)."""
    has_labels, has_logits = "label_ids" in columns, "teacher_logits" in columns

    def build(*arrays):
        whole = Batch(**dict(zip(columns, arrays)))
        if not has_labels:  # GD: a placeholder the loss does not read
            whole = whole._replace(label_ids=np.zeros((whole.input_ids.shape[0],), np.int32))
        if world_size == 1:
            return tuple(whole) if has_logits else tuple(whole[:4])
        lo, hi = rank * batch_size, (rank + 1) * batch_size
        mine = [np.ascontiguousarray(np.asarray(c)[lo:hi]) for c in (whole if has_logits else whole[:4])]
        if not has_logits:
            mine.append(np.zeros((1,), np.float32))  # the loss net's teacher_logits slot, unread
        return (*mine, loss_normalizers(whole, world_size))

    return build


def argument_names(columns: Sequence[str], world_size: int) -> List[str]:
    """The step's argument names for these loader columns: data parallel always passes a teacher_logits slot (a
    placeholder when the data has none) and the normalizers."""
    if world_size > 1:
        return list(ARGUMENT_COLUMNS)
    return list(ARGUMENT_COLUMNS[:5] if "teacher_logits" in columns else ARGUMENT_COLUMNS[:4])


def step_dataset(dataset, columns: Sequence[str], batch_size: int, rank: int, world_size: int):
    """`dataset` (global batches of `columns`) mapped to the training step's arguments."""
    names = argument_names(columns, world_size)
    mapped = dataset.map(operations=step_columns(columns, batch_size, rank, world_size),
                         input_columns=list(columns), output_columns=names)
    return mapped.project(names)


class SinkFeed:
    """Runs up to `size` training steps per call on batches sunk to the device; returns (outputs, finite, norm,
    steps_run) of the call's last step. `data_sink` is mindspore.data_sink (a test passes a stand-in: MindSpore
    refuses sink mode on CPU)."""

    def __init__(self, step: Any, dataset, size: int, graph: bool = True, data_sink: Optional[Callable] = None):
        self.size = size
        self.dataset = dataset
        self.counter = ms.Parameter(ms.Tensor(np.zeros((1,), np.int32)), name="sink_steps", requires_grad=False)
        counter, gradients, update = self.counter, step.gradients_fn, step.update_fn

        def train(*args):
            outputs, grads = gradients(*args)
            finite, norm, _ = update(*grads)
            ops.assign_add(counter, ops.ones((1,), ms.int32))
            return outputs, finite, norm

        sink = data_sink or ms.data_sink
        self.feed = sink(train, dataset, sink_size=size, jit_config=ms.JitConfig() if graph else None)

    def __call__(self):
        before = int(self.counter.asnumpy()[0])
        outputs, finite, norm = self.feed()
        return outputs, finite, norm, int(self.counter.asnumpy()[0]) - before

    def close(self) -> None:
        """Stop the host thread that sends batches (it would loop over the dataset for ever) and free the queue."""
        transfer = getattr(self.dataset, "__transfer_dataset__", None)
        if transfer is not None:
            transfer.stop_send()
            transfer.release()
