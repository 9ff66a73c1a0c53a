"""The training loop of one stage, its run directory, evaluation and exact resumption.

A stage (GD, TD phase 1, TD phase 2, fine-tuning) writes everything to its run directory, with fixed names:

    manifest.json   config, status (running / finished), position, totals, metrics (last and best), the
                    checkpoints it started from (path + SHA-256), which files hold what
    metrics.jsonl   one JSON object per log interval ("type": "train") and per evaluation ("type": "eval")
    last.ckpt       the student network (with its .json: config and head), loadable by load_model / export.py
    best.ckpt       the student with the best evaluation score (stages that evaluate)
    fit_dense.ckpt  the hidden-state projection(s) (GD and phase 1), reloaded by the next stage
    state.ckpt      everything needed to resume: student, fit_dense, Adam moments, optimizer step, loss scale

Checkpoints are written by a background thread (checkpoint.CheckpointWriter): each save copies the weights,
moments and manifest on the training thread, then serialises, hashes, fsyncs and renames them into place while
training goes on; the manifest is written last, so it never names a file that is not complete.

Resumption: the data order of epoch e is fixed by `data_seed + e`; the manifest records the epoch and the
number of batches consumed in it, so a resumed run skips exactly those and continues with the same weights,
moments, loss scale and learning-rate position. (Dropout's random stream is not restored.)
Only rank 0 writes files; every rank runs the same steps.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import mindspore as ms
from mindspore import nn

from src import checkpoint as ckpt
from src.config import DataConfig, StageConfig
from src.dataset import create_tinybert_dataset
from src.distill import LOSS_TERMS
from src.metrics import evaluate
from src.train import TrainStep, lr_at

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
METRICS = "metrics.jsonl"
LAST, BEST, FIT_DENSE, STATE = "last.ckpt", "best.ckpt", "fit_dense.ckpt", "state.ckpt"
CRASH_EXIT_CODE = 75  # --stop_after_steps exits with this code, without saving, like a killed process


class RunDirError(RuntimeError):
    """A run directory that cannot be used as asked (message says why and what to do)."""


def write_json_atomic(path: str, data: Dict[str, Any]) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_manifest(run_dir: str) -> Optional[Dict[str, Any]]:
    path = os.path.join(run_dir, MANIFEST)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as err:
            raise RunDirError(f"{path}: not valid JSON ({err})") from None


def resolve_stage_checkpoint(path: str, which: str = "auto") -> str:
    """A checkpoint file, or a run directory -> the checkpoint its manifest names.

    which: "best", "last", or "auto" (best when the stage evaluated, else last).
    """
    if os.path.isfile(path):
        return path
    if not os.path.isdir(path):
        raise FileNotFoundError(f"checkpoint or run directory not found: {path}")
    manifest = read_manifest(path)
    if manifest is None:
        raise RunDirError(f"{path}: a directory without {MANIFEST}; give a .ckpt file or a run directory written by "
                          f"run_general_distill.py / run_task_distill.py")
    if manifest.get("status") != "finished":
        raise RunDirError(f"{path}: the run there is not finished (status {manifest.get('status')!r}); finish it "
                          f"(re-run its command) or give a checkpoint file explicitly")
    files = manifest.get("checkpoints", {})
    name = files.get("best") if which in ("best", "auto") and files.get("best") else files.get("last")
    if which == "best" and not files.get("best"):
        raise RunDirError(f"{path}: the run has no best checkpoint (it did not evaluate)")
    return os.path.join(path, name)


_UNSET_EQUIVALENTS = (None, "", (), [], {})
# How often to log and save changes nothing a run computes: a resumed run may change them. Nor does reading
# the teacher's logits from the store instead of computing them in the step (the same numbers).
_NOT_RESULT_KEYS = {"log_steps", "save_steps", "keep_checkpoints", "store_teacher_logits"}


def config_difference(old: Dict[str, Any], new: Dict[str, Any], prefix: str = "") -> List[str]:
    """Dotted keys whose values differ between two config dicts.

    Keys only one side has are compared as unset: a key added to the schema since the run was made, at its
    empty default, and a key the schema no longer has, which nothing reads any more, do not count. Nor do
    log_steps, save_steps, keep_checkpoints and distill.store_teacher_logits, which change no result.
    """
    keys = sorted(set(old) | set(new))
    diffs = []
    for key in keys:
        a, b = old.get(key), new.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += config_difference(a, b, name + ".")
        elif key in _NOT_RESULT_KEYS or (key not in old and b in _UNSET_EQUIVALENTS):
            continue
        elif key not in new:
            continue
        elif a != b:
            diffs.append(f"{name}: {a!r} -> {b!r}")
    return diffs


# --------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------
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
        self.columns = ["input_ids", "input_mask", "segment_ids", label_column]

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
            for ids, mask, segments, label in dataset.create_tuple_iterator(num_epochs=1):
                n = int(ids.shape[0])
                if n < self.batch_size:  # the last batch (of each bucket): padded with copies of its first row,
                    ids, mask, segments = (_pad_rows(t, self.batch_size) for t in (ids, mask, segments))
                # so graph mode compiles one eval graph per length, not one more per partial batch
                batch_logits, batch_labels = self.net(ids, segments, mask)[0].asnumpy()[:n], label.asnumpy()
                if batch_logits.ndim == 3 and batch_logits.shape[1] < self.data.seq_length:
                    # token logits of a bucketed batch: pad back to seq_length; padded positions are not scored
                    pad = self.data.seq_length - batch_logits.shape[1]
                    batch_logits = np.pad(batch_logits, ((0, 0), (0, pad), (0, 0)))
                    batch_labels = np.pad(batch_labels, ((0, 0), (0, pad)), constant_values=-1)
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


def _pad_rows(tensor: ms.Tensor, rows: int) -> ms.Tensor:
    value = tensor.asnumpy()
    return ms.Tensor(np.concatenate([value, np.repeat(value[:1], rows - value.shape[0], axis=0)]))


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


# --------------------------------------------------------------------------------------------------
# One stage
# --------------------------------------------------------------------------------------------------
@dataclass
class Stage:
    """Everything one training stage needs. `loss_net` returns (total, *terms) in LOSS_TERMS order."""

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
    graph: bool = True
    rank: int = 0
    world_size: int = 1
    data_seed: int = 2
    fit_dense: Optional[nn.Cell] = None
    evaluator: Optional[Evaluator] = None
    eval_steps: int = 0  # also evaluate every K steps (0: after each epoch only)
    stop_after_steps: int = 0  # testing aid: exit abruptly (no save) after this many steps
    async_checkpoints: bool = True  # write checkpoints on a background thread (run.async_checkpoints)
    cpu_host_update: bool = True  # CPU, one device: the optimizer update in numpy (run.cpu_host_update)
    # Phase 1: the loss net's last output is the teacher's logits; they are kept for the phase-2 store.
    logit_collector: Optional[Any] = None
    progress: bool = True
    extra_manifest: Dict[str, Any] = field(default_factory=dict)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _dataset(stage: Stage, epoch: int, skip_batches: int = 0):
    dataset = create_tinybert_dataset(list(stage.data.train_files), list(stage.columns), stage.stage.batch_size,
                                      stage.data.seq_length, dataset_type=stage.data.dataset_type,
                                      schema_file=stage.data.schema_file or None, shuffle=stage.data.shuffle,
                                      seed=stage.data_seed + epoch, num_shards=stage.world_size,
                                      shard_id=stage.rank, drop_remainder=True,
                                      bucket_boundaries=list(stage.data.bucket_boundaries) or None)
    if skip_batches:
        dataset = dataset.skip(skip_batches)
    return dataset


def _state_params(stage: Stage) -> Dict[str, Tuple[str, ms.Parameter]]:
    """state.ckpt name -> parameter for the student and fit_dense."""
    out = {f"student.{name}": p for name, p in ckpt.named_parameters(stage.student)}
    if stage.fit_dense is not None:
        out.update({f"fit_dense.{name}": p for name, p in ckpt.named_parameters(stage.fit_dense)})
    return out


def save_fit_dense(params: Dict[str, np.ndarray], path: str, count: int, student_hidden: int,
                   teacher_hidden: int) -> str:
    """fit_dense.ckpt from a name -> array snapshot of the FitDense Cell's `count` projections."""
    return ckpt.save_checkpoint(params, path, head={"type": "fit_dense", "count": int(count),
                                                    "student_hidden": student_hidden, "teacher_hidden": teacher_hidden})


def load_fit_dense(fit_dense: nn.Cell, path: str) -> bool:
    """Load fit_dense.ckpt if its shapes fit; returns False (and logs why) when it cannot be reused."""
    params = ckpt.read_checkpoint(path)
    expected = {n: tuple(p.shape) for n, p in ckpt.named_parameters(fit_dense)}
    found = {n: tuple(v.shape) for n, v in params.items()}
    if expected != found:
        logger.warning("%s does not fit this stage's projection (%s vs %s); fit_dense starts fresh", path,
                       sorted(found.items())[:2], sorted(expected.items())[:2])
        return False
    ckpt.load_params(fit_dense, params, path)
    logger.info("fit_dense reloaded from %s", path)
    return True


def prepare_run_dir(run_dir: str, config: Dict[str, Any], overwrite: bool = False) -> Optional[Dict[str, Any]]:
    """The manifest to resume from (None for a fresh start); raise if the directory holds another run."""
    manifest = read_manifest(run_dir)
    if manifest is None:
        return None
    if overwrite:
        logger.warning("%s: existing run overwritten (--overwrite)", run_dir)
        return None
    diffs = config_difference(manifest.get("config", {}), config)
    if diffs:
        shown = "\n  ".join(diffs[:12])
        raise RunDirError(f"{run_dir} holds a run with a different config:\n  {shown}\nuse another run.output_dir, "
                          f"or --overwrite to start this stage again")
    return manifest


def run_stage(stage: Stage, resume_from: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Train one stage to the end (or continue it), evaluating and checkpointing; returns the final manifest."""
    os.makedirs(stage.run_dir, exist_ok=True)
    if resume_from is not None and resume_from.get("status") == "finished":
        logger.info("%s: finished earlier (step %d), skipped", stage.run_dir, resume_from["step"])
        return resume_from
    steps_per_epoch = _dataset(stage, 0).get_dataset_size()
    if steps_per_epoch < 1:
        raise ValueError(f"{stage.name}: the training data gives no full batch of {stage.stage.batch_size} rows "
                         f"(files {list(stage.data.train_files)}); lower batch_size or add data")
    total_steps = int(math.ceil(stage.stage.epochs * steps_per_epoch))
    step = TrainStep(stage.loss_net, stage.params, stage.stage, total_steps, graph=stage.graph,
                     distributed=stage.world_size > 1, host_update=None if stage.cpu_host_update else False)
    manifest: Dict[str, Any] = {
        "stage": stage.name, "status": "running", "config": stage.config, "started_from": stage.started_from,
        "world_size": stage.world_size, "steps_per_epoch": steps_per_epoch, "total_steps": total_steps,
        "batch_size": stage.stage.batch_size, "step": 0, "position": {"epoch": 0, "batch": 0},
        "optimizer_steps": 0, "overflow_steps": 0, "metrics": {"last": None, "best": None},
        "checkpoints": {"last": None, "best": None, "fit_dense": None, "state": None}, **stage.extra_manifest,
    }
    if resume_from is not None and resume_from.get("checkpoints", {}).get("state"):
        manifest.update({k: resume_from[k] for k in ("step", "position", "optimizer_steps", "overflow_steps",
                                                      "metrics", "checkpoints") if k in resume_from})
        manifest["started_from"] = resume_from.get("started_from", stage.started_from)
        _load_state(stage, step, os.path.join(stage.run_dir, STATE))
        logger.info("%s: resuming at step %d (epoch %d, batch %d)", stage.run_dir, manifest["step"],
                    manifest["position"]["epoch"], manifest["position"]["batch"])
    elif resume_from is not None:
        logger.info("%s: the earlier run saved no state yet; starting the stage again", stage.run_dir)
    if stage.is_main:
        write_json_atomic(os.path.join(stage.run_dir, MANIFEST), manifest)
    _loop(stage, step, manifest, total_steps, steps_per_epoch)
    if stage.logit_collector is not None and stage.is_main:
        from src.teacher_cache import BYPRODUCT_FILE  # pylint: disable=import-outside-toplevel

        def teacher_logits(batch):  # the phase's own gradients graph (already compiled); nothing is applied
            tensors = [ms.Tensor(np.ascontiguousarray(a)) for a in batch]
            return step.gradients_only(*tensors)[0][-1].asnumpy()

        started = time.time()
        added = stage.logit_collector.complete(list(stage.data.train_files), list(stage.columns), stage.data,
                                               stage.stage.batch_size, teacher_logits)
        if added:
            logger.info("%s: teacher logits of the %d rows no full batch held, in %.1f s", stage.name, added,
                        time.time() - started)
        rows = stage.logit_collector.save(os.path.join(stage.run_dir, BYPRODUCT_FILE))
        manifest["teacher_logits"] = {"file": BYPRODUCT_FILE if rows else None, "rows": rows,
                                      "teacher_sha256": stage.logit_collector.teacher_sha256}
    manifest["status"] = "finished"
    manifest["student_sha256"] = weights_digest(stage.student)
    if stage.is_main:
        write_json_atomic(os.path.join(stage.run_dir, MANIFEST), manifest)
    return manifest


def weights_digest(net: nn.Cell) -> str:
    """SHA-256 over the network's parameters in name order: equal on every data-parallel rank."""
    digest = hashlib.sha256()
    for _, p in sorted(ckpt.named_parameters(net), key=lambda item: item[0]):
        digest.update(p.asnumpy().tobytes())
    return digest.hexdigest()


def _log_train(stage: Stage, manifest: Dict[str, Any], sums: np.ndarray, count: int, elapsed: float,
               step: TrainStep, grad_norm: float, total_steps: int, remaining_s: float) -> Dict[str, Any]:
    row: Dict[str, Any] = {"type": "train", "step": manifest["step"], "epoch": manifest["position"]["epoch"]}
    row["loss"] = float(sums[0] / count)
    row.update({name: float(sums[i + 1] / count) for i, name in enumerate(LOSS_TERMS)})
    row.update(lr=lr_at(stage.stage, step.global_step, total_steps), loss_scale=step.loss_scale,
               overflow_steps=manifest["overflow_steps"], grad_norm=grad_norm,
               samples_per_s=count * stage.stage.batch_size * stage.world_size / max(elapsed, 1e-9),
               eta_s=remaining_s, time=time.time())
    terms = " ".join(f"{k} {row[k]:.4f}" for k in ("loss",) + LOSS_TERMS if row[k] or k == "loss")
    logger.info("%s step %d/%d epoch %d: %s | lr %.3g scale %g overflow %d | %.1f samples/s | ETA %s",
                stage.name, row["step"], total_steps, row["epoch"], terms, row["lr"], row["loss_scale"],
                row["overflow_steps"], row["samples_per_s"], _duration(remaining_s))
    return row


def _duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _append_metrics(stage: Stage, row: Dict[str, Any]) -> None:
    if stage.is_main:
        with open(os.path.join(stage.run_dir, METRICS), "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")


def _loop(stage: Stage, step: TrainStep, manifest: Dict[str, Any], total_steps: int, steps_per_epoch: int) -> None:
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel

    bar = tqdm(total=total_steps, initial=manifest["step"], unit="step", desc=stage.name, dynamic_ncols=True,
               disable=not (stage.progress and stage.is_main))
    sums = np.zeros(len(LOSS_TERMS) + 1)
    count = 0
    window_start = time.time()
    run_start, run_start_step = time.time(), manifest["step"]
    grad_norm = 0.0
    dummy_labels = None
    writer = ckpt.CheckpointWriter(stage.async_checkpoints)
    last_saved = manifest["step"]  # periodic saves count from the last save (an epoch's end included)
    completed = False
    try:
        while manifest["step"] < total_steps:
            epoch, skip = manifest["position"]["epoch"], manifest["position"]["batch"]
            for batch in _dataset(stage, epoch, skip).create_tuple_iterator(num_epochs=1):
                if len(batch) == 3:  # GD: no labels; the loss Cell takes a placeholder it does not read
                    if dummy_labels is None:
                        dummy_labels = ms.Tensor(np.zeros((batch[0].shape[0],), np.int32))
                    batch = (*batch, dummy_labels)
                outputs, finite, norm, _ = step.step(*batch)
                if stage.logit_collector is not None:
                    stage.logit_collector.add(batch[0].asnumpy(), batch[1].asnumpy(), batch[2].asnumpy(),
                                              outputs[-1].asnumpy())
                    outputs = outputs[:-1]
                manifest["step"] += 1
                manifest["position"]["batch"] += 1
                if bool(finite):
                    manifest["optimizer_steps"] += 1
                    values = np.array([float(v) for v in outputs])
                    sums += values
                    count += 1
                    grad_norm = float(norm)
                else:
                    manifest["overflow_steps"] += 1
                bar.update(1)
                if count:
                    bar.set_postfix(loss=f"{sums[0] / count:.4f}", scale=f"{step.loss_scale:g}", refresh=False)
                done = manifest["step"]
                if done % stage.stage.log_steps == 0 and count:
                    rate = (time.time() - run_start) / max(done - run_start_step, 1)
                    row = _log_train(stage, manifest, sums, count, time.time() - window_start, step, grad_norm,
                                     total_steps, rate * (total_steps - done))
                    _append_metrics(stage, row)
                    sums[:] = 0
                    count = 0
                    window_start = time.time()
                if stage.stop_after_steps and done == stage.stop_after_steps:
                    writer.wait()  # a save begun before the simulated crash lands, so tests know what is on disk
                    logger.warning("stop_after_steps=%d reached: exiting without saving (simulated crash)", done)
                    os._exit(CRASH_EXIT_CODE)  # pylint: disable=protected-access
                if stage.evaluator is not None and stage.eval_steps and done % stage.eval_steps == 0:
                    _evaluate(stage, manifest, writer)
                if done - last_saved >= stage.stage.save_steps:
                    _save(stage, step, manifest, writer)
                    last_saved = done
                if done >= total_steps:
                    break
            if manifest["position"]["batch"] >= steps_per_epoch or manifest["step"] >= total_steps:
                if manifest["position"]["batch"] >= steps_per_epoch:
                    manifest["position"] = {"epoch": epoch + 1, "batch": 0}
                if stage.evaluator is not None and not (stage.eval_steps and manifest["step"] % stage.eval_steps == 0):
                    _evaluate(stage, manifest, writer)
                _save(stage, step, manifest, writer)
                last_saved = manifest["step"]
        completed = True
    except KeyboardInterrupt:
        logger.warning("interrupted at step %d: saving state so the run can resume", manifest["step"])
        _save(stage, step, manifest, writer)
        writer.wait()
        raise
    finally:
        bar.close()
        if completed:
            writer.wait()  # the stage is finished only when its last checkpoint is on disk
        else:
            try:
                writer.wait()  # let the save in flight land; the error already raised is the one to report
            except RuntimeError as exc:
                logger.error("%s", exc)


def _evaluate(stage: Stage, manifest: Dict[str, Any], writer: ckpt.CheckpointWriter) -> None:
    started = time.time()
    result = stage.evaluator()
    result.update(step=manifest["step"], epoch=manifest["position"]["epoch"], seconds=time.time() - started)
    manifest["metrics"]["last"] = result
    best = manifest["metrics"]["best"]
    improved = best is None or result["score"] > best["score"]
    sets = ", ".join(f"{name} {r['score']:.4f}" for name, r in result["sets"].items())
    logger.info("%s eval at step %d: %s %s%s", stage.name, manifest["step"], result["metric"], sets,
                " (best so far)" if improved else f" (best {best['score']:.4f} at step {best['step']})")
    _append_metrics(stage, {"type": "eval", **{k: v for k, v in result.items()}})
    if improved:
        manifest["metrics"]["best"] = result
        if stage.is_main:
            weights, config = writer.snapshot("best", stage.student), stage.student.config
            head = ckpt.head_spec(stage.student)
            extra = {"stage": stage.name, "step": manifest["step"], "metrics": result}
            path = os.path.join(stage.run_dir, BEST)
            writer.submit(lambda: ckpt.save_checkpoint(weights, path, config, head, extra))
            manifest["checkpoints"]["best"] = BEST  # written to the manifest by the next _save, after this file


def _save(stage: Stage, step: TrainStep, manifest: Dict[str, Any], writer: ckpt.CheckpointWriter) -> None:
    """Snapshot the student, fit_dense, optimizer state and manifest now; the writer puts them on disk."""
    if not stage.is_main:
        return
    run_dir = stage.run_dir
    # One copy of the student and fit_dense, under the state.ckpt names; last.ckpt and fit_dense.ckpt are views of it
    state = {name: writer.copy(f"state/{name}", p.asnumpy()) for name, p in _state_params(stage).items()}
    student = {name[len("student."):]: value for name, value in state.items() if name.startswith("student.")}
    config, head = stage.student.config, ckpt.head_spec(stage.student)
    extra = {"stage": stage.name, "step": manifest["step"]}
    fit = None
    manifest["checkpoints"]["last"] = LAST
    if stage.fit_dense is not None:
        fit = {name[len("fit_dense."):]: value for name, value in state.items() if name.startswith("fit_dense.")}
        fit_args = (int(stage.fit_dense.count), stage.student.config.hidden_size,
                    int(stage.fit_dense.layers[0].weight.shape[0]))
        manifest["checkpoints"]["fit_dense"] = FIT_DENSE
    state.update({name: writer.copy(f"state/{name}", value) for name, value in step.state_dict().items()})
    manifest["checkpoints"]["state"] = STATE
    state_extra = {"step": manifest["step"], "position": dict(manifest["position"])}
    keep = stage.stage.keep_checkpoints
    saved_manifest = json.loads(json.dumps(manifest))

    def write() -> None:
        ckpt.save_checkpoint(student, os.path.join(run_dir, LAST), config, head, extra)
        if fit is not None:
            save_fit_dense(fit, os.path.join(run_dir, FIT_DENSE), *fit_args)
        ckpt.save_checkpoint(state, os.path.join(run_dir, STATE), head={"type": "training_state"}, extra=state_extra)
        if keep > 1:
            _keep_numbered(run_dir, student, config, head, extra, keep)
        write_json_atomic(os.path.join(run_dir, MANIFEST), saved_manifest)  # last: names only complete files

    writer.submit(write)


def _keep_numbered(run_dir: str, student: Dict[str, np.ndarray], config: Any, head: Dict[str, Any],
                   extra: Dict[str, Any], keep: int) -> None:
    folder = os.path.join(run_dir, "checkpoints")
    ckpt.save_checkpoint(student, os.path.join(folder, f"step_{extra['step']:08d}.ckpt"), config, head, extra)
    numbered = sorted(f for f in os.listdir(folder) if f.startswith("step_") and f.endswith(".ckpt"))
    for old in numbered[:-keep]:
        for path in (os.path.join(folder, old), ckpt.sidecar_path(os.path.join(folder, old))):
            if os.path.exists(path):
                os.remove(path)


def _load_state(stage: Stage, step: TrainStep, path: str) -> None:
    meta = ckpt.read_metadata(path, verify=True)
    if meta.get("head", {}).get("type") != "training_state":
        raise RunDirError(f"{path}: not a training state file")
    state = ckpt.read_checkpoint(path)
    targets = _state_params(stage)
    missing = sorted(set(targets) - set(state))
    if missing:
        raise RunDirError(f"{path}: missing {len(missing)} weights, e.g. {missing[:5]}")
    for name, param in targets.items():
        if tuple(state[name].shape) != tuple(param.shape):
            raise RunDirError(f"{path}: {name} has shape {state[name].shape}, the network has {tuple(param.shape)}")
        param.set_data(ms.Tensor(state[name], param.dtype))
    step.load_state_dict({k: v for k, v in state.items() if k not in targets}, path)

