"""A training stage's checkpoints: written on a background thread, reloaded for exact resumption.

One save (StageCheckpoints.save) writes, in this order, last.ckpt (the student), fit_dense.ckpt (the projections,
GD and phase 1), state.ckpt (student, fit_dense, Adam moments, optimizer step, loss scale) and then the manifest,
which therefore never names a file that is not complete. The weights are copied on the training thread into
buffers reused from save to save; serialising, hashing, fsync and the renames happen on the writer's thread while
training goes on. Only rank 0 writes.
"""
from __future__ import annotations

import copy
import hashlib
import logging
import os
import threading
from typing import Any, Dict, Optional

import numpy as np
import mindspore as ms
from mindspore import nn

from src.model import checkpoint as ckpt
from src.model.heads import head_spec
from src.training.manifest import BEST, FIT_DENSE, LAST, STATE, Manifest, RunDirError

logger = logging.getLogger(__name__)


class CheckpointWriter:
    """Writes a training stage's checkpoints on one background thread, so training does not wait for the disk.

    `copy(key, value)` first waits for the save in flight, then copies `value` into a buffer kept for `key` across
    saves (a copy is needed because Tensor.asnumpy() shares memory with the live parameter on CPU; a fresh 210 MB
    copy costs 0.5-1.4 s in page faults on the development VM, copying into the same buffer 15 ms).
    `submit(write)` runs `write`, which must only read such copies, on a non-daemon thread at the lowest CPU
    priority (nice 19, Linux), so an exception or Ctrl-C on the training thread still lets the save finish. At most
    one save is in flight: the next copy or submit, and wait(), block until it is done and re-raise its error.
    `enabled=False` (run.async_checkpoints: false) writes inline and copies nothing.

    Measured on the SST-2 student (52 M floats in state.ckpt + 17 M in last.ckpt, phase-2 steps of ~0.19 s):
    inline, each save stopped training for ~2.5 s; in the background it takes ~2 s while the steps it overlaps
    run ~2x slower (the 280 MB of new page-cache pages compete for memory bandwidth), ~1-1.5 s of training time
    per save. Writing with mindspore.save_checkpoint from this thread was worse than inline (see write_ckpt_file).
    """

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self._thread: Optional[threading.Thread] = None
        self._error: Optional[BaseException] = None
        self._buffers: Dict[str, np.ndarray] = {}

    def _run(self, write) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)  # this thread only (Linux)
        except (AttributeError, OSError):
            pass
        try:
            write()
        except BaseException as exc:  # pylint: disable=broad-except  # re-raised by wait() on the training thread
            self._error = exc

    def copy(self, key: str, value: np.ndarray) -> np.ndarray:
        """`value` as of now, safe to hand to a later write: a reused buffer (a view when writing inline)."""
        self.wait()
        if not self.enabled:
            return value
        buffer = self._buffers.get(key)
        if buffer is None or buffer.shape != value.shape or buffer.dtype != value.dtype:
            buffer = self._buffers[key] = np.empty_like(value)
        np.copyto(buffer, value)
        return buffer

    def snapshot(self, key: str, net: nn.Cell) -> Dict[str, np.ndarray]:
        """name -> copy() of each parameter of `net`, buffers under `key`."""
        return {name: self.copy(f"{key}/{name}", p.asnumpy()) for name, p in ckpt.named_parameters(net)}

    def submit(self, write) -> None:
        self.wait()
        if not self.enabled:
            write()
            return
        self._thread = threading.Thread(target=self._run, args=(write,), name="checkpoint-writer", daemon=False)
        self._thread.start()

    def wait(self) -> None:
        """Block until the save in flight is on disk; raise its error, if it failed."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise RuntimeError(f"writing a checkpoint failed: {error}") from error


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


def fit_dense_beside(student_ckpt: str) -> Optional[str]:
    """The GD projection that goes with `student_ckpt`, if there is one: the file its sidecar names ("fit_dense",
    written by scripts/convert_checkpoint.py for a released General TinyBERT), else the fit_dense.ckpt saved in the
    same run directory. A sidecar naming a file that is not there is an error, not a fresh projection."""
    folder = os.path.dirname(os.path.abspath(student_ckpt))
    named = (ckpt.read_metadata(student_ckpt).get("fit_dense") or {}).get("file")
    if named:
        path = os.path.join(folder, named)
        if not os.path.isfile(path):
            raise ckpt.CheckpointError(f"{student_ckpt}: its .json names the projection {named}, which is not in "
                                       f"{folder}; copy it beside the checkpoint (or convert again)")
        return path
    path = os.path.join(folder, FIT_DENSE)
    return path if os.path.isfile(path) else None


def weights_digest(net: nn.Cell) -> str:
    """SHA-256 over the network's parameters in name order: equal on every data-parallel rank."""
    digest = hashlib.sha256()
    for _, p in sorted(ckpt.named_parameters(net), key=lambda item: item[0]):
        digest.update(p.asnumpy().tobytes())
    return digest.hexdigest()


class StageCheckpoints:
    """The checkpoints of one stage in `run_dir`: the student, its fit_dense, and the training state.

    `writes`: this process writes files (rank 0); the others only load. `keep` > 1 also keeps the student of the
    last `keep` saves in checkpoints/step_N.ckpt.
    """

    def __init__(self, run_dir: str, student: nn.Cell, fit_dense: Optional[nn.Cell] = None, writes: bool = True,
                 background: bool = True, keep: int = 1, vocab: Optional[Dict[str, Any]] = None):
        self.run_dir, self.student, self.fit_dense = run_dir, student, fit_dense
        self.writes, self.keep = writes, keep
        self.vocab = {"vocab": vocab} if vocab else {}  # sidecar key of the student's checkpoints
        self.writer = CheckpointWriter(background)

    def state_params(self) -> Dict[str, ms.Parameter]:
        """state.ckpt name -> parameter for the student and fit_dense."""
        out = {f"student.{name}": p for name, p in ckpt.named_parameters(self.student)}
        if self.fit_dense is not None:
            out.update({f"fit_dense.{name}": p for name, p in ckpt.named_parameters(self.fit_dense)})
        return out

    def save(self, manifest: Manifest, training_state: Dict[str, np.ndarray]) -> None:
        """Snapshot the student, fit_dense, `training_state` (TrainStep.state_dict()) and `manifest` now; the writer
        puts them on disk (last.ckpt, fit_dense.ckpt, state.ckpt, then manifest.json)."""
        if not self.writes:
            return
        copy_of = self.writer.copy
        # One copy of the student and fit_dense, under the state.ckpt names; last.ckpt and fit_dense.ckpt are views
        state = {name: copy_of(f"state/{name}", p.asnumpy()) for name, p in self.state_params().items()}
        student = {name[len("student."):]: value for name, value in state.items() if name.startswith("student.")}
        config, head = self.student.config, head_spec(self.student)
        extra = {"stage": manifest.stage, "step": manifest.step, **self.vocab}
        manifest.checkpoints.last = LAST
        fit = fit_args = None
        if self.fit_dense is not None:
            fit = {name[len("fit_dense."):]: value for name, value in state.items() if name.startswith("fit_dense.")}
            fit_args = (int(self.fit_dense.count), config.hidden_size, int(self.fit_dense.layers[0].weight.shape[0]))
            manifest.checkpoints.fit_dense = FIT_DENSE
        state.update({name: copy_of(f"state/{name}", value) for name, value in training_state.items()})
        manifest.checkpoints.state = STATE
        state_extra = {"step": manifest.step, "position": {"epoch": manifest.position.epoch,
                                                           "batch": manifest.position.batch}}
        saved = copy.deepcopy(manifest)
        run_dir, keep = self.run_dir, self.keep

        def write() -> None:
            ckpt.save_checkpoint(student, os.path.join(run_dir, LAST), config, head, extra)
            if fit is not None:
                save_fit_dense(fit, os.path.join(run_dir, FIT_DENSE), *fit_args)
            ckpt.save_checkpoint(state, os.path.join(run_dir, STATE), head={"type": "training_state"},
                                 extra=state_extra)
            if keep > 1:
                self._keep_numbered(student, config, head, extra)
            saved.write(run_dir)  # last: names only complete files

        self.writer.submit(write)

    def save_best(self, manifest: Manifest, result: Dict[str, Any]) -> None:
        """best.ckpt of the student as it is now; the manifest names it from the next save on."""
        if not self.writes:
            return
        weights, config, head = self.writer.snapshot("best", self.student), self.student.config, \
            head_spec(self.student)
        extra = {"stage": manifest.stage, "step": manifest.step, "metrics": result, **self.vocab}
        path = os.path.join(self.run_dir, BEST)
        self.writer.submit(lambda: ckpt.save_checkpoint(weights, path, config, head, extra))
        manifest.checkpoints.best = BEST

    def _keep_numbered(self, student: Dict[str, np.ndarray], config: Any, head: Dict[str, Any],
                       extra: Dict[str, Any]) -> None:
        folder = os.path.join(self.run_dir, "checkpoints")
        ckpt.save_checkpoint(student, os.path.join(folder, f"step_{extra['step']:08d}.ckpt"), config, head, extra)
        numbered = sorted(f for f in os.listdir(folder) if f.startswith("step_") and f.endswith(".ckpt"))
        for old in numbered[:-self.keep]:
            for path in (os.path.join(folder, old), ckpt.sidecar_path(os.path.join(folder, old))):
                if os.path.exists(path):
                    os.remove(path)

    def load_state(self) -> Dict[str, np.ndarray]:
        """Load the student and fit_dense from state.ckpt (strictly) and return the rest: the training state."""
        path = os.path.join(self.run_dir, STATE)
        meta = ckpt.read_metadata(path, verify=True)
        if meta.get("head", {}).get("type") != "training_state":
            raise RunDirError(f"{path}: not a training state file")
        state = ckpt.read_checkpoint(path)
        targets = self.state_params()
        missing = sorted(set(targets) - set(state))
        if missing:
            raise RunDirError(f"{path}: missing {len(missing)} weights, e.g. {missing[:5]}")
        for name, param in targets.items():
            if tuple(state[name].shape) != tuple(param.shape):
                raise RunDirError(f"{path}: {name} has shape {state[name].shape}, the network has "
                                  f"{tuple(param.shape)}")
            param.set_data(ms.Tensor(state[name], param.dtype))
        return {k: v for k, v in state.items() if k not in targets}

    def wait(self) -> None:
        """Block until the save in flight is on disk (raises its error)."""
        self.writer.wait()
