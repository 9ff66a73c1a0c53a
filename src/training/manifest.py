"""A stage's run directory and its manifest: what ran, how far it got, which files hold what.

Every training stage (GD, TD phase 1, TD phase 2, fine-tuning) writes one run directory with fixed names:

    manifest.json   this module's Manifest: config, status (running / finished), position, totals, metrics (last and
                    best), the checkpoints it started from (path + SHA-256), which files hold what
    metrics.jsonl   one JSON object per log interval ("type": "train") and per evaluation ("type": "eval")
    last.ckpt       the student network (with its .json: config and head), loadable by load_model / export.py
    best.ckpt       the student with the best evaluation score (stages that evaluate)
    fit_dense.ckpt  the hidden-state projection(s) (GD and phase 1), reloaded by the next stage
    state.ckpt      everything needed to resume: student, fit_dense, Adam moments, optimizer step, loss scale

The manifest is read and written here only (Manifest.read / Manifest.write), always atomically, and last in a
save, so it never names a file that is not complete.
"""
from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from src.infra.files import TMP_INFIX, atomic_output, write_json_atomic

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
LOCK = ".lock"  # held (flock) by the process training in the run directory; the kernel drops it when that process dies
METRICS = "metrics.jsonl"
LAST, BEST, FIT_DENSE, STATE = "last.ckpt", "best.ckpt", "fit_dense.ckpt", "state.ckpt"
SCHEMA_VERSION = 1  # manifests written before the field existed are version 1 too


class RunDirError(RuntimeError):
    """A run directory that cannot be used as asked (message says why and what to do)."""


@dataclass
class Position:
    """Where training is: epoch (0-based) and batches of it already consumed."""

    epoch: int = 0
    batch: int = 0


@dataclass
class Metrics:
    """The last evaluation and the best one (dicts: score, metric, sets, step, epoch, seconds), or None."""

    last: Optional[Dict[str, Any]] = None
    best: Optional[Dict[str, Any]] = None


@dataclass
class Checkpoints:
    """File names (relative to the run directory) of the checkpoints written so far, or None."""

    last: Optional[str] = None
    best: Optional[str] = None
    fit_dense: Optional[str] = None
    state: Optional[str] = None


@dataclass
class Manifest:
    """manifest.json of one stage."""

    stage: str
    config: Dict[str, Any]  # the part of the config the stage's result depends on (training/networks.py)
    started_from: Dict[str, Any]  # checkpoints (path + sha256) or the init the networks started from
    world_size: int = 1
    steps_per_epoch: int = 0
    total_steps: int = 0
    batch_size: int = 0
    status: str = "running"  # "running" or "finished"
    step: int = 0  # steps taken (overflow-skipped ones included)
    position: Position = field(default_factory=Position)
    optimizer_steps: int = 0
    overflow_steps: int = 0
    metrics: Metrics = field(default_factory=Metrics)
    checkpoints: Checkpoints = field(default_factory=Checkpoints)
    layer_map: Optional[List[List[int]]] = None  # [student, teacher] pairs (distillation stages)
    full_config: Optional[Dict[str, Any]] = None  # the whole resolved config (what --resume reads)
    teacher_logits: Optional[Dict[str, Any]] = None  # phase 1: the logits it kept; phase 2: the store it read
    student_sha256: Optional[str] = None  # digest of the final student weights (equal on every rank)
    schema_version: int = SCHEMA_VERSION

    @property
    def finished(self) -> bool:
        return self.status == "finished"

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any], source: str) -> "Manifest":
        """Build from the JSON content of `source`; unknown keys and newer schema versions are refused."""
        if not isinstance(data, dict):
            raise RunDirError(f"{source}: expected a JSON object, got {type(data).__name__}")
        version = data.get("schema_version", 1)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise RunDirError(f"{source}: schema_version {version!r}; this version of the code reads up to "
                              f"{SCHEMA_VERSION} (written by a newer version?)")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise RunDirError(f"{source}: unknown keys {unknown}; expected some of {sorted(names)}")
        for key in ("stage", "config", "started_from"):
            if key not in data:
                raise RunDirError(f"{source}: key {key!r} missing")
        parts = {"position": Position, "metrics": Metrics, "checkpoints": Checkpoints}
        values = dict(data)
        for key, part in parts.items():
            if key in values:
                raw = values[key]
                allowed = {f.name for f in dataclasses.fields(part)}
                if not isinstance(raw, dict) or set(raw) - allowed:
                    raise RunDirError(f"{source}: {key}: got {raw!r}; expected an object with keys {sorted(allowed)}")
                values[key] = part(**raw)
        return cls(**values)

    @classmethod
    def read(cls, run_dir: str) -> Optional["Manifest"]:
        """The manifest of `run_dir`, or None when there is none."""
        path = os.path.join(run_dir, MANIFEST)
        if not os.path.isfile(path):
            return None
        with open(path, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as err:
                raise RunDirError(f"{path}: not valid JSON ({err})") from None
        return cls.from_dict(data, path)

    def write(self, run_dir: str) -> None:
        write_json_atomic(os.path.join(run_dir, MANIFEST), self.to_dict())


def resolve_stage_checkpoint(path: str, which: str = "auto") -> str:
    """A checkpoint file, or a run directory -> the checkpoint its manifest names.

    which: "best", "last", or "auto" (best when the stage evaluated, else last).
    """
    if os.path.isfile(path):
        return path
    if not os.path.isdir(path):
        raise FileNotFoundError(f"checkpoint or run directory not found: {path}")
    manifest = Manifest.read(path)
    if manifest is None:
        raise RunDirError(f"{path}: a directory without {MANIFEST}; give a .ckpt file or a run directory written by "
                          f"run_general_distill.py / run_task_distill.py")
    if not manifest.finished:
        raise RunDirError(f"{path}: the run there is not finished (status {manifest.status!r}); finish it "
                          f"(re-run its command) or give a checkpoint file explicitly")
    files = manifest.checkpoints
    if which == "best" and not files.best:
        raise RunDirError(f"{path}: the run has no best checkpoint (it did not evaluate)")
    name = files.best if which in ("best", "auto") and files.best else files.last
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
    diffs = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += config_difference(a, b, name + ".")
        elif key in _NOT_RESULT_KEYS or (key not in old and b in _UNSET_EQUIVALENTS) or key not in new:
            continue
        elif a != b:
            diffs.append(f"{name}: {a!r} -> {b!r}")
    return diffs


_LOCKS: Dict[str, Any] = {}  # run directory (absolute) -> the open lock file this process holds


def lock_run_dir(run_dir: str) -> None:
    """Make this process the only one training in `run_dir` (created if needed), until `unlock_run_dir` or exit.

    Then every temporary file a killed writer left in it (names with TMP_INFIX: a checkpoint or manifest whose save
    was cut short) is deleted: with the lock held, no live process owns them. Taking a lock this process holds is a
    no-op.

    Raises:
        RunDirError: another process holds it (its pid named).
    """
    key = os.path.abspath(run_dir)
    if key in _LOCKS:
        return
    os.makedirs(run_dir, exist_ok=True)
    handle = open(os.path.join(run_dir, LOCK), "a+", encoding="utf-8")  # pylint: disable=consider-using-with
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise RunDirError(f"{run_dir} is in use by another training process (pid {holder}); wait for it to finish or "
                          f"stop it, or use another run.output_dir") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    _LOCKS[key] = handle
    for folder in (run_dir, os.path.join(run_dir, "checkpoints")):
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            if TMP_INFIX in name and os.path.isfile(os.path.join(folder, name)):
                os.remove(os.path.join(folder, name))
                logger.warning("%s: removed %s, left by an interrupted save", folder, name)


def unlock_run_dir(run_dir: str) -> None:
    handle = _LOCKS.pop(os.path.abspath(run_dir), None)
    if handle is not None:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def truncate_metrics(run_dir: str, step: int) -> int:
    """Drop the metrics.jsonl rows after `step` (the steps an interrupted run did after its last saved state, which
    the resumed run does again; all rows for a fresh start), so every step is listed once. Returns rows dropped."""
    path = os.path.join(run_dir, METRICS)
    if not os.path.exists(path):
        return 0
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    kept = []
    for line in lines:
        try:
            row_step = json.loads(line).get("step", 0)
        except json.JSONDecodeError:  # a row cut short by the kill
            continue
        if row_step <= step:
            kept.append(line if line.endswith("\n") else line + "\n")
    if len(kept) != len(lines):
        with atomic_output(path) as f:
            f.writelines(kept)
        logger.info("%s: dropped %d metrics rows after step %d (they are run again)", path, len(lines) - len(kept),
                    step)
    return len(lines) - len(kept)


def prepare_run_dir(run_dir: str, config: Dict[str, Any], overwrite: bool = False,
                    owner: bool = True) -> Optional[Manifest]:
    """The manifest to resume from (None for a fresh start); raise if the directory holds another run or another
    process trains in it. `owner` (rank 0): an existing directory is locked now (lock_run_dir), a new one when the
    stage creates it."""
    if owner and os.path.isdir(run_dir):
        lock_run_dir(run_dir)
    manifest = Manifest.read(run_dir)
    if manifest is None:
        return None
    if overwrite:
        logger.warning("%s: existing run overwritten (--overwrite)", run_dir)
        return None
    diffs = config_difference(manifest.config, config)
    if diffs:
        shown = "\n  ".join(diffs[:12])
        raise RunDirError(f"{run_dir} holds a run with a different config:\n  {shown}\nuse another run.output_dir, "
                          f"--overwrite to start this stage again, or --resume {run_dir} to go on with the config "
                          f"that run was started with")
    return manifest
