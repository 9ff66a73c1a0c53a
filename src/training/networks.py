"""The networks of a stage from its config: teacher and student checkpoints checked against the config, the task
head, the evaluator, and what a stage's result depends on (the config part stored in its manifest)."""
from __future__ import annotations

import glob
import logging
import os
from typing import Any, Dict, List, Optional, Tuple

from mindspore import nn

from src.config import BertConfig, ConfigError, TDConfig, resolve_layer_map, to_dict
from src.data import vocab as vocab_check
from src.data.dataset import resolve_files
from src.data.records import records_vocab
from src.distill.student_init import copy_teacher_layers
from src.infra.backend import Backend
from src.model import checkpoint as ckpt
from src.model.heads import build_model
from src.training.evaluation import Evaluator, eval_sets_from
from src.training.manifest import Manifest, resolve_stage_checkpoint

logger = logging.getLogger(__name__)

ARCHITECTURE_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "hidden_act", "max_position_embeddings", "type_vocab_size")

# What each stage's result depends on: a run directory is reused (skipped or resumed) only when these agree.
_RUN_KEYS = ["run.seed", "run.data_seed"]
STAGE_KEYS = {
    "gd": _RUN_KEYS + ["data", "checkpoint", "teacher", "student", "distill", "gd"],
    "teacher": _RUN_KEYS + ["task", "data", "checkpoint.pretrained", "teacher", "td.finetune", "eval"],
    "student_labels": _RUN_KEYS + ["task", "data", "checkpoint", "student", "teacher", "td.finetune", "eval"],
    "phase1": _RUN_KEYS + ["task", "data.train_files", "data.dataset_type", "data.schema_file", "data.seq_length",
                           "data.bucket_boundaries",
                           "data.shuffle", "checkpoint", "teacher", "student", "distill", "td.phase1"],
    "phase2": _RUN_KEYS + ["task", "data", "checkpoint.teacher", "teacher", "student", "distill", "td.phase2",
                           "eval"],
}
TD_STAGES = ("teacher", "student_labels", "phase1", "phase2")  # run directories under run.output_dir


def stage_config(cfg: Any, stage: str) -> Dict[str, Any]:
    """The part of the config a stage depends on (as nested dicts), stored in its manifest."""
    full = to_dict(cfg)
    out: Dict[str, Any] = {}
    for key in STAGE_KEYS[stage]:
        src, dst = full, out
        parts = key.split(".")
        for part in parts[:-1]:
            src = src[part]
            dst = dst.setdefault(part, {})
        dst[parts[-1]] = src[parts[-1]]
    return out


def stage_dirs(cfg: TDConfig) -> Dict[str, str]:
    """OUT/teacher, OUT/student_labels, OUT/phase1, OUT/phase2."""
    return {name: os.path.join(cfg.run.output_dir, name) for name in TD_STAGES}


def checkpoint_sha(path: str) -> str:
    return ckpt.read_metadata(path).get("sha256", "")


def source_of(path: str) -> Dict[str, str]:
    """How a manifest names a checkpoint a stage started from."""
    return {"path": os.path.abspath(path), "sha256": checkpoint_sha(path)}


def check_architecture(expected: BertConfig, found: BertConfig, role: str, path: str) -> None:
    """The checkpoint's saved architecture must be the one the config describes."""
    diffs = [f"{k}: config {getattr(expected, k)!r}, checkpoint {getattr(found, k)!r}" for k in ARCHITECTURE_KEYS
             if getattr(expected, k) != getattr(found, k)]
    if diffs:
        raise ConfigError(f"{path}: the {role} checkpoint does not match the '{role}:' section of the config:\n  "
                          + "\n  ".join(diffs) + f"\nset {role}.preset / {role}.<key> to the checkpoint's values")


# Training settings of the network, not of its weights: the config's values apply to a loaded checkpoint too.
TRAINING_KEYS = ("hidden_dropout_prob", "attention_probs_dropout_prob")


def load_network(path: str, role: str, expected: BertConfig, head: str, backend: Backend,
                 **head_kwargs: Any) -> nn.Cell:
    """Load a checkpoint (file or run directory) as `head`, checking its architecture against the config. The
    dropout probabilities are the config's (a checkpoint saved with others is logged); layer_norm_eps is the
    checkpoint's, which its weights were trained with (a config asking another is logged)."""
    found = ckpt.read_model_config(path)
    check_architecture(expected, found, role, path)
    overrides = {k: getattr(expected, k) for k in TRAINING_KEYS if getattr(expected, k) != getattr(found, k)}
    if overrides:
        logger.info("%s: %s from the config's '%s:' section (the checkpoint was saved with %s)", path,
                    ", ".join(f"{k}={v}" for k, v in overrides.items()), role,
                    ", ".join(f"{k}={getattr(found, k)}" for k in overrides))
    if expected.layer_norm_eps != found.layer_norm_eps:
        logger.warning("%s: layer_norm_eps %g kept from the checkpoint (the config's '%s:' section says %g)", path,
                       found.layer_norm_eps, role, expected.layer_norm_eps)
    return ckpt.load_model(path, head=head, backend=backend, model_overrides=overrides, **head_kwargs)


def task_head(cfg: TDConfig) -> Tuple[str, Dict[str, Any]]:
    """The head name and its arguments for the task."""
    if cfg.task.type == "ner":
        return "token_classification", {"num_labels": cfg.task.num_labels}
    num_labels = 1 if cfg.task.type == "regression" else cfg.task.num_labels
    return "sequence_classification", {"num_labels": num_labels, "pooled_activation": cfg.task.pooled_activation}


def label_names(cfg: TDConfig) -> Optional[List[str]]:
    """task.labels, else the labels.json the converter wrote beside the eval (or train) records."""
    if cfg.task.labels:
        return list(cfg.task.labels)
    from src.data.task_data import LABELS_FILE, load_label_map  # pylint: disable=import-outside-toplevel

    for entry in list(cfg.data.eval_files) + list(cfg.data.train_files):
        matches = sorted(glob.glob(entry)) or [entry]
        path = os.path.join(os.path.dirname(os.path.abspath(matches[0])), LABELS_FILE)
        if os.path.isfile(path):
            names = load_label_map(path)
            if len(names) != cfg.task.num_labels:
                raise ConfigError(f"{path} lists {len(names)} labels but task.num_labels is {cfg.task.num_labels}")
            return names
    if cfg.task.metric == "entity_f1":
        raise ConfigError("entity_f1 needs the tag names: set task.labels or keep the converter's labels.json "
                          "beside the records")
    return None


def evaluator_for(cfg: TDConfig, net: nn.Cell) -> Optional[Evaluator]:
    """The evaluator of data.eval_files with the task's metric (None, with a warning, when there are none)."""
    if not cfg.data.eval_files:
        logger.warning("data.eval_files is empty: no evaluation, no best checkpoint")
        return None
    return Evaluator(net, eval_sets_from(cfg.data.eval_files), cfg.data, cfg.eval.batch_size, cfg.task.metric,
                     label_names(cfg))


def teacher_path(cfg: TDConfig) -> str:
    """checkpoint.teacher (else the finished fine-tuning run in OUT/teacher), checked to be a fine-tuned network of
    the task's head and label count."""
    if cfg.checkpoint.teacher:
        path = resolve_stage_checkpoint(cfg.checkpoint.teacher)
    else:
        run_dir = stage_dirs(cfg)["teacher"]
        manifest = Manifest.read(run_dir)
        if manifest is None or not manifest.finished:
            raise ConfigError(f"checkpoint.teacher is empty and {run_dir} holds no finished fine-tuning run; run "
                              f"--phase finetune first (with checkpoint.pretrained set), or set checkpoint.teacher to "
                              f"a fine-tuned teacher")
        path = resolve_stage_checkpoint(run_dir)
    head, kwargs = task_head(cfg)
    meta = ckpt.read_metadata(path)
    saved = (meta.get("head") or {}).get("type", "backbone")
    if saved != head:
        raise ConfigError(f"{path}: the teacher is a {saved!r} network, but task distillation needs a fine-tuned "
                          f"{head!r} teacher; fine-tune it first: run_task_distill.py --phase finetune")
    if int(meta["head"].get("num_labels", -1)) != kwargs["num_labels"]:
        raise ConfigError(f"{path}: the teacher has {meta['head'].get('num_labels')} labels, the task "
                          f"{kwargs['num_labels']}")
    return path


def load_teacher(cfg: TDConfig, backend: Backend) -> Tuple[nn.Cell, str]:
    """The fine-tuned task teacher and its checkpoint path."""
    path = teacher_path(cfg)
    return load_network(path, "teacher", cfg.teacher, task_head(cfg)[0], backend), path


def initial_student(cfg: TDConfig, teacher_for_init: Optional[nn.Cell],
                    backend: Backend) -> Tuple[nn.Cell, Dict[str, Any], Optional[str]]:
    """The student head before phase 1 / the labels baseline, where it came from, and its checkpoint (if any)."""
    head, kwargs = task_head(cfg)
    if cfg.checkpoint.student:
        path = resolve_stage_checkpoint(cfg.checkpoint.student, "last")
        return load_network(path, "student", cfg.student, head, backend, **kwargs), source_of(path), path
    student = build_model(cfg.student, head, backend, **kwargs)
    if cfg.checkpoint.student_init != "random":
        if teacher_for_init is None:
            raise ConfigError(f"checkpoint.student_init={cfg.checkpoint.student_init} needs checkpoint.teacher")
        pairs = resolve_layer_map(cfg.distill.layer_map, cfg.teacher.num_hidden_layers, cfg.student.num_hidden_layers)
        sources = copy_teacher_layers(student, teacher_for_init, cfg.checkpoint.student_init, pairs)
        return student, {"init": cfg.checkpoint.student_init, "teacher_layers": [i + 1 for i in sources]}, None
    return student, {"init": "random", "seed": cfg.run.seed}, None


def stage_vocab(cfg: Any, data: Any, started_from: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The vocabulary of a stage, checked before anything is trained (src/data/vocab.py): the fingerprints the
    training and eval records and the checkpoints it starts from recorded must be one vocabulary, of the size of
    teacher.vocab_size and student.vocab_size. Returns it (None if nothing recorded one), for the student's
    checkpoints."""
    recorded = []
    for key in ("train_files", "eval_files"):
        for entry in getattr(data, key, ()) or ():
            for path in resolve_files(entry):
                recorded.append((f"data.{key} {path}", records_vocab(path)))
    for role, source in started_from.items():
        if isinstance(source, dict) and source.get("path"):
            recorded.append((f"the {role} checkpoint {source['path']}",
                             ckpt.read_metadata(source["path"]).get(vocab_check.KEY)))
    found = vocab_check.agree_where(recorded)
    if found is None:
        return None
    where, fingerprint = found
    for role in ("teacher", "student"):
        model = getattr(cfg, role, None)
        if model is not None:
            vocab_check.check_size(fingerprint, where, model.vocab_size, f"the config's {role}.vocab_size")
    return fingerprint
