"""The training loop of one stage (GD, TD phase 1, TD phase 2, fine-tuning): steps, logging, evaluation, saves.

`run_stage(Stage(...), resume_from)` trains a stage to its end, or continues it, and returns its finished
Manifest. Its run directory (src/training/manifest.py) holds the manifest, metrics.jsonl and the checkpoints
(src/training/checkpoints.py).

Resumption: the data order of epoch e is fixed by `data_seed + e`; the manifest records the epoch and the number of
batches consumed in it, so a resumed run skips exactly those and continues with the same weights, moments, loss
scale and learning-rate position. (Dropout's random stream is not restored.) Every rank runs the same steps; only
rank 0 writes files.
"""
from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Sequence

import numpy as np
import mindspore as ms
from mindspore import nn

from src.config import DataConfig, StageConfig
from src.data.dataset import Batch, create_tinybert_dataset
from src.distill.loss import LossOutput
from src.infra.backend import Backend
from src.model import checkpoint as ckpt
from src.training.checkpoints import StageCheckpoints, weights_digest
from src.training.evaluation import Evaluator
from src.training.manifest import BEST, Manifest, Position, lock_run_dir, truncate_metrics, unlock_run_dir
from src.training.metrics_log import MetricsLog, TrainWindow
from src.training.optim import lr_at
from src.training.sink import SinkFeed, loss_normalizers, step_dataset
from src.training.step import TrainStep

logger = logging.getLogger(__name__)


@dataclass
class Stage:
    """Everything one training stage needs. `loss_net` takes a Batch and returns a LossOutput tuple."""

    name: str
    run_dir: str
    stage: StageConfig
    loss_net: nn.Cell
    params: Sequence[ms.Parameter]
    student: nn.Cell
    data: DataConfig
    columns: Sequence[str]
    config: Dict[str, Any]
    started_from: Dict[str, Any]
    backend: Backend = field(default_factory=Backend)  # host_update: the optimizer update in numpy (CPU)
    graph: bool = True
    rank: int = 0
    world_size: int = 1
    data_seed: int = 2
    fit_dense: Optional[nn.Cell] = None
    evaluator: Optional[Evaluator] = None
    eval_steps: int = 0  # also evaluate every K steps (0: after each epoch only)
    async_checkpoints: bool = True  # write checkpoints on a background thread (run.async_checkpoints)
    # Phase 1: the loss net's teacher_logits output is kept for the phase-2 store (src/distill/teacher_cache.py).
    logit_collector: Optional[Any] = None
    progress: bool = True
    manifest_fields: Dict[str, Any] = field(default_factory=dict)  # e.g. layer_map, full_config, teacher_logits
    barrier: Optional[Any] = None  # data parallel: called when the stage is finished (Runtime.barrier)
    rank_mean: Optional[Any] = None  # data parallel: mean over the ranks (Runtime.rank_mean), for logged losses
    # Dataset sink mode (Ascend/GPU; src/training/sink.py): steps per host sync, -1 = the epoch; 0 = step by step.
    sink_steps: int = 0
    data_sink: Optional[Any] = None  # mindspore.data_sink when None; tests pass a stand-in (no sink mode on CPU)
    vocab: Optional[Dict[str, Any]] = None  # the records' vocabulary fingerprint, saved with the student

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _dataset(stage: Stage, epoch: int, skip_batches: int = 0):
    """The epoch's global batches: batch_size x world_size rows each, the same on every rank (same files, seed and
    length buckets), so every rank takes the same number of steps at the same lengths."""
    dataset = create_tinybert_dataset(list(stage.data.train_files), list(stage.columns),
                                      stage.stage.batch_size * stage.world_size, stage.data.seq_length,
                                      dataset_type=stage.data.dataset_type,
                                      schema_file=stage.data.schema_file or None, shuffle=stage.data.shuffle,
                                      seed=stage.data_seed + epoch, drop_remainder=True,
                                      bucket_boundaries=list(stage.data.bucket_boundaries) or None)
    return dataset.skip(skip_batches) if skip_batches else dataset


def _rank_batches(stage: Stage, epoch: int, skip: int):
    """(this rank's Batch, normalizers or None) for each step of the epoch from batch `skip` on. One device: the
    loader's batches. Data parallel: rows [rank * B, (rank + 1) * B) of each global batch."""
    dataset = _dataset(stage, epoch, skip)
    if stage.world_size == 1:
        for columns in dataset.create_tuple_iterator(num_epochs=1):
            yield Batch(*columns), None
        return
    lo, hi = stage.rank * stage.stage.batch_size, (stage.rank + 1) * stage.stage.batch_size
    for columns in dataset.create_tuple_iterator(num_epochs=1, output_numpy=True):
        whole = Batch(*columns)
        yield Batch(*(ms.Tensor(np.ascontiguousarray(c[lo:hi])) for c in columns)), \
            ms.Tensor(loss_normalizers(whole, stage.world_size))


def _start_manifest(stage: Stage, steps_per_epoch: int, total_steps: int,
                    resume_from: Optional[Manifest]) -> Manifest:
    manifest = Manifest(stage=stage.name, config=stage.config, started_from=stage.started_from,
                        world_size=stage.world_size, steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                        batch_size=stage.stage.batch_size, **stage.manifest_fields)
    if resume_from is not None and resume_from.checkpoints.state:
        for key in ("step", "position", "optimizer_steps", "overflow_steps", "metrics", "checkpoints",
                    "started_from"):
            setattr(manifest, key, getattr(resume_from, key))
        adopt_newer_best(stage.run_dir, manifest)
    return manifest


def adopt_newer_best(run_dir: str, manifest: Manifest) -> None:
    """A best.ckpt written after the state a run resumes from (the manifest names a new best only from the next
    save on) stays the best so far: the replayed steps draw other dropout masks, may score lower at the same step,
    and must not replace it with a worse checkpoint."""
    path = os.path.join(run_dir, BEST)
    if not os.path.isfile(path):
        return
    try:
        meta = ckpt.read_metadata(path, verify=True)
    except ckpt.CheckpointError as err:  # an incomplete best.ckpt (killed while writing) is simply replaced
        logger.warning("%s: not used as the best so far (%s)", path, err)
        return
    metrics, best = meta.get("metrics"), manifest.metrics.best
    if not isinstance(metrics, dict) or "score" not in metrics:
        return
    if best is None or int(meta.get("step", -1)) > int(best.get("step", -1)):
        manifest.metrics.best = metrics
        manifest.checkpoints.best = BEST
        logger.info("%s: best so far is %s (score %.4f at step %s), saved after the state this run resumes from",
                    run_dir, BEST, metrics["score"], meta.get("step"))


def run_stage(stage: Stage, resume_from: Optional[Manifest] = None) -> Manifest:
    """Train one stage to the end (or continue it), evaluating and checkpointing; returns the final manifest."""
    if resume_from is not None and resume_from.finished:
        logger.info("%s: finished earlier (step %d), skipped", stage.run_dir, resume_from.step)
        unlock_run_dir(stage.run_dir)  # prepare_run_dir's lock, if it took one
        return resume_from
    steps_per_epoch = _dataset(stage, 0).get_dataset_size()  # checks the files before anything is written
    if stage.evaluator is not None:
        stage.evaluator.check_files()
    if steps_per_epoch < 1:
        raise ValueError(f"{stage.name}: the training data gives no full batch of {stage.stage.batch_size} rows "
                         f"(files {list(stage.data.train_files)}); lower batch_size or add data")
    total_steps = int(math.ceil(stage.stage.epochs * steps_per_epoch))
    # Dropout on while the student trains: a MindSpore Cell starts in eval mode (training=False), so without this
    # every stage trained with dropout off whatever the config's *_dropout_prob said. The teacher inside the loss
    # net stays in eval mode (DistillLoss set it); the evaluator switches the student to eval and back.
    stage.student.set_train(True)
    step = TrainStep(stage.loss_net, stage.params, stage.stage, total_steps, graph=stage.graph,
                     distributed=stage.world_size > 1, host_update=stage.backend.host_update)
    manifest = _start_manifest(stage, steps_per_epoch, total_steps, resume_from)
    os.makedirs(stage.run_dir, exist_ok=True)
    if stage.is_main:
        lock_run_dir(stage.run_dir)  # (a no-op if prepare_run_dir locked it) until the stage ends
        truncate_metrics(stage.run_dir, manifest.step)
    try:
        return _run_locked(stage, step, manifest, resume_from)
    finally:
        if stage.is_main:
            unlock_run_dir(stage.run_dir)


def _run_locked(stage: Stage, step: TrainStep, manifest: Manifest, resume_from: Optional[Manifest]) -> Manifest:
    saves = StageCheckpoints(stage.run_dir, stage.student, stage.fit_dense, writes=stage.is_main,
                             background=stage.async_checkpoints, keep=stage.stage.keep_checkpoints,
                             vocab=stage.vocab)
    if resume_from is not None and resume_from.checkpoints.state:
        step.load_state_dict(saves.load_state(), os.path.join(stage.run_dir, "state.ckpt"))
        logger.info("%s: resuming at step %d (epoch %d, batch %d)", stage.run_dir, manifest.step,
                    manifest.position.epoch, manifest.position.batch)
    elif resume_from is not None:
        logger.info("%s: the earlier run saved no state yet; starting the stage again", stage.run_dir)
    if stage.is_main:
        manifest.write(stage.run_dir)
    _Loop(stage, step, manifest, saves).run()
    if stage.logit_collector is not None and stage.is_main:
        _complete_teacher_logits(stage, step, manifest)
    manifest.status = "finished"
    manifest.student_sha256 = weights_digest(stage.student)
    if stage.is_main:
        manifest.write(stage.run_dir)
    if stage.barrier is not None:
        stage.barrier()  # the next stage, on every rank, reads what rank 0 wrote
    return manifest


def _complete_teacher_logits(stage: Stage, step: TrainStep, manifest: Manifest) -> None:
    """Phase 1: the teacher logits of the rows no full batch held, then the kept logits to teacher_logits.npz."""
    from src.distill.teacher_cache import BYPRODUCT_FILE  # pylint: disable=import-outside-toplevel

    def teacher_logits(batch):  # the phase's own gradients graph (already compiled); nothing is applied
        tensors = [ms.Tensor(np.ascontiguousarray(a)) for a in batch]
        return LossOutput(*step.gradients(*tensors)[0]).teacher_logits.asnumpy()

    started = time.time()
    added = stage.logit_collector.complete(list(stage.data.train_files), list(stage.columns), stage.data,
                                           stage.stage.batch_size, teacher_logits)
    if added:
        logger.info("%s: teacher logits of the %d rows no full batch held, in %.1f s", stage.name, added,
                    time.time() - started)
    rows = stage.logit_collector.save(os.path.join(stage.run_dir, BYPRODUCT_FILE))
    manifest.teacher_logits = {"file": BYPRODUCT_FILE if rows else None, "rows": rows,
                               "teacher_sha256": stage.logit_collector.teacher_sha256}


class _Loop:
    """The epochs of one stage, from the manifest's position to total_steps."""

    def __init__(self, stage: Stage, step: TrainStep, manifest: Manifest, saves: StageCheckpoints):
        self.stage, self.step, self.manifest, self.saves = stage, step, manifest, saves
        self.log = MetricsLog(stage.run_dir, enabled=stage.is_main)
        self.window = TrainWindow()
        self.run_start, self.run_start_step = time.time(), manifest.step
        self.last_saved = manifest.step  # periodic saves count from the last save (an epoch's end included)
        self.dummy_labels = self.placeholder = None
        self.last_evaluated = None  # the step of the last evaluation (an epoch's end does not evaluate twice)
        self.bar = None

    def run(self) -> None:
        from tqdm import tqdm  # pylint: disable=import-outside-toplevel

        total = self.manifest.total_steps
        self.bar = tqdm(total=total, initial=self.manifest.step, unit="step", desc=self.stage.name,
                        dynamic_ncols=True, disable=not (self.stage.progress and self.stage.is_main))
        completed = False
        try:
            while self.manifest.step < total:
                self._epoch()
            completed = True
        except KeyboardInterrupt:
            logger.warning("interrupted at step %d: saving state so the run can resume", self.manifest.step)
            self._save()
            self.saves.wait()
            raise
        finally:
            self.bar.close()
            if completed:
                self.saves.wait()  # the stage is finished only when its last checkpoint is on disk
            else:
                try:
                    self.saves.wait()  # let the save in flight land; the error already raised is the one to report
                except RuntimeError as exc:
                    logger.error("%s", exc)

    def _epoch(self) -> None:
        manifest, total = self.manifest, self.manifest.total_steps
        epoch, skip = manifest.position.epoch, manifest.position.batch
        if self.stage.sink_steps:
            self._sink_epoch()
        else:
            for batch, normalizers in _rank_batches(self.stage, epoch, skip):
                self._train(batch, normalizers)
                self._after_step()
                if manifest.step >= total:
                    break
        epoch_done = manifest.position.batch >= manifest.steps_per_epoch
        if epoch_done or manifest.step >= total:
            if epoch_done:
                manifest.position = Position(epoch + 1, 0)
            if self.stage.evaluator is not None and self.last_evaluated != manifest.step:
                self._evaluate()
            self._save()

    def _sink_epoch(self) -> None:
        """The rest of the epoch in chunks of stage.sink_steps steps, each one call of a sunk graph."""
        stage, manifest = self.stage, self.manifest
        epoch = manifest.position.epoch
        remaining = min(manifest.steps_per_epoch - manifest.position.batch, manifest.total_steps - manifest.step)
        chunk = remaining if stage.sink_steps < 0 else min(stage.sink_steps, remaining)
        feed = None
        try:
            while remaining > 0:
                size = min(chunk, remaining)
                if feed is None or feed.size != size:  # a dataset is sunk once: the last, shorter chunk gets its own
                    if feed is not None:
                        feed.close()
                    dataset = step_dataset(_dataset(stage, epoch, manifest.position.batch), stage.columns,
                                           stage.stage.batch_size, stage.rank, stage.world_size)
                    feed = SinkFeed(self.step, dataset, size, graph=stage.graph, data_sink=stage.data_sink)
                before = self.step.global_step
                outputs, finite, norm, ran = feed()
                if ran < 1 or ran > size:
                    raise RuntimeError(f"{stage.name}: the sunk graph ran {ran} steps (asked for at most {size})")
                applied = self.step.global_step - before
                manifest.step += ran
                manifest.position.batch += ran
                manifest.optimizer_steps += applied
                manifest.overflow_steps += ran - applied
                if bool(finite):  # the device reports the chunk's last step only
                    out = LossOutput(*outputs)
                    self.window.add(out.total, out.terms, norm, steps=ran)
                remaining -= ran
                self._after_step(ran)
        finally:
            if feed is not None:
                feed.close()

    def _train(self, batch: Batch, normalizers=None) -> None:
        if batch.label_ids is None:  # GD: no labels; the loss Cell takes a placeholder it does not read
            if self.dummy_labels is None:
                self.dummy_labels = ms.Tensor(np.zeros((batch.input_ids.shape[0],), np.int32))
            batch = batch._replace(label_ids=self.dummy_labels)
        args = tuple(batch) if batch.teacher_logits is not None else tuple(batch[:4])
        if normalizers is not None:  # data parallel: the global batch's counts (see loss_normalizers)
            if len(args) == 4:
                args += (self._no_logits(),)
            args += (normalizers,)
        outputs, finite, norm, _ = self.step.step(*args)
        out = LossOutput(*outputs)
        if self.stage.logit_collector is not None:
            self.stage.logit_collector.add(batch.input_ids.asnumpy(), batch.segment_ids.asnumpy(),
                                           batch.input_mask.asnumpy(), out.teacher_logits.asnumpy())
        manifest = self.manifest
        manifest.step += 1
        manifest.position.batch += 1
        if bool(finite):
            manifest.optimizer_steps += 1
            self.window.add(out.total, out.terms, norm)
        else:
            manifest.overflow_steps += 1

    def _no_logits(self):
        if self.placeholder is None:
            self.placeholder = ms.Tensor(np.zeros((1,), np.float32))
        return self.placeholder

    def _after_step(self, ran: int = 1) -> None:
        """After `ran` steps (1, or a sunk chunk): progress, and the log / eval / save whose multiple was passed."""
        stage, manifest, done = self.stage, self.manifest, self.manifest.step

        def passed(every: int) -> bool:
            return bool(every) and done // every > (done - ran) // every

        self.bar.update(ran)
        if self.window.count:
            self.bar.set_postfix(loss=f"{self.window.mean_loss():.4f}", scale=f"{self.step.loss_scale:g}",
                                 refresh=False)
        if passed(stage.stage.log_steps) and self.window.count:
            if stage.rank_mean is not None:  # every rank logs the same: the global batch's loss terms
                self.window.sums = stage.rank_mean(self.window.sums)
            per_step = (time.time() - self.run_start) / max(done - self.run_start_step, 1)
            self.log.append(self.window.row(
                stage.name, done, manifest.position.epoch, manifest.total_steps,
                lr_at(stage.stage, self.step.global_step, manifest.total_steps), self.step.loss_scale,
                manifest.overflow_steps, stage.stage.batch_size * stage.world_size,
                per_step * (manifest.total_steps - done)))
        if stage.evaluator is not None and passed(stage.eval_steps):
            self._evaluate()
        if done - self.last_saved >= stage.stage.save_steps:
            self._save()

    def _evaluate(self) -> None:
        stage, manifest = self.stage, self.manifest
        started = time.time()
        result = stage.evaluator()
        self.last_evaluated = manifest.step
        result.update(step=manifest.step, epoch=manifest.position.epoch, seconds=time.time() - started)
        manifest.metrics.last = result
        best = manifest.metrics.best
        improved = best is None or result["score"] > best["score"]
        sets = ", ".join(f"{name} {r['score']:.4f}" for name, r in result["sets"].items())
        logger.info("%s eval at step %d: %s %s%s", stage.name, manifest.step, result["metric"], sets,
                    " (best so far)" if improved else f" (best {best['score']:.4f} at step {best['step']})")
        self.log.append({"type": "eval", **result})
        if improved:
            manifest.metrics.best = result
            self.saves.save_best(manifest, result)

    def _save(self) -> None:
        self.saves.save(self.manifest, self.step.state_dict())
        self.last_saved = self.manifest.step
