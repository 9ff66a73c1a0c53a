"""Build the networks of each stage from a config and run it (used by run_general_distill.py and
run_task_distill.py).

Run directories (run.output_dir = OUT):
    GD:         OUT/                    (student backbone + fit_dense)
    TD:         OUT/teacher/            fine-tuned teacher (--phase finetune)
                OUT/student_labels/     the student trained on labels alone (--phase finetune --target student)
                OUT/phase1/             intermediate-layer distillation
                OUT/phase2/             prediction-layer distillation, started from OUT/phase1's manifest
Checkpoints in the config (checkpoint.teacher / checkpoint.student) are .ckpt files or finished run
directories (their manifest names the checkpoint: best if the stage evaluated, else last).
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from mindspore import nn

from src import checkpoint as ckpt
from src import teacher_cache
from src.config import BertConfig, ConfigError, GDConfig, TDConfig, resolve_layer_map, to_dict
from src.dataset import resolve_files
from src.distill import DistillLoss, build_fit_dense
from src.modeling import build_model, cpu_gelu
from src.runtime import Runtime
from src.trainer import (FIT_DENSE, Evaluator, Stage, eval_sets_from, load_fit_dense, prepare_run_dir,
                         read_manifest, resolve_stage_checkpoint, run_stage)

logger = logging.getLogger(__name__)

GD_COLUMNS = ["input_ids", "input_mask", "segment_ids"]
TD_COLUMNS = ["input_ids", "input_mask", "segment_ids", "label_ids"]
ARCHITECTURE_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                     "hidden_act", "max_position_embeddings", "type_vocab_size")


def check_architecture(expected: BertConfig, found: BertConfig, role: str, path: str) -> None:
    """The checkpoint's saved architecture must be the one the config describes."""
    diffs = [f"{k}: config {getattr(expected, k)!r}, checkpoint {getattr(found, k)!r}" for k in ARCHITECTURE_KEYS
             if getattr(expected, k) != getattr(found, k)]
    if diffs:
        raise ConfigError(f"{path}: the {role} checkpoint does not match the '{role}:' section of the config:\n  "
                          + "\n  ".join(diffs) + f"\nset {role}.preset / {role}.<key> to the checkpoint's values")


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


def _sha(path: str) -> str:
    return ckpt.read_metadata(path).get("sha256", "")


def _source(path: str) -> Dict[str, str]:
    return {"path": os.path.abspath(path), "sha256": _sha(path)}


def load_network(path: str, role: str, expected: BertConfig, head: str, **head_kwargs: Any) -> nn.Cell:
    """Load a checkpoint (file or run directory) as `head`, checking its architecture against the config."""
    found = ckpt.read_model_config(path)
    check_architecture(expected, found, role, path)
    return ckpt.load_model(path, head=head, **head_kwargs)


STUDENT_INITS = ("random", "teacher_lower_layers", "teacher_mapped_layers")


def init_layer_sources(mode: str, student_layers: int, teacher_layers: int,
                       pairs: Sequence[Tuple[int, int]]) -> List[int]:
    """0-based teacher encoder layer copied into each 0-based student layer.

    teacher_lower_layers: student layer i <- teacher layer i (DistilBERT-style truncation).
    teacher_mapped_layers: student layer i <- the teacher layer the layer map pairs it with, so the start is
    consistent with what the intermediate losses ask of it (6 -> 3 uniform: teacher layers 2, 4, 6, 1-based).
    """
    if mode == "teacher_lower_layers":
        return list(range(student_layers))
    if mode != "teacher_mapped_layers":
        raise ConfigError(f"checkpoint.student_init: {mode!r}; expected one of {', '.join(STUDENT_INITS)}")
    mapped = {s: t for s, t in pairs}
    missing = [s for s in range(1, student_layers + 1) if s not in mapped or mapped[s] < 1]
    if missing:
        raise ConfigError(f"checkpoint.student_init=teacher_mapped_layers: distill.layer_map pairs no teacher "
                          f"encoder layer with student layer(s) {missing} (1-based)")
    return [mapped[s] - 1 for s in range(1, student_layers + 1)]


def copy_teacher_layers(student: nn.Cell, teacher: nn.Cell, mode: str,
                        pairs: Sequence[Tuple[int, int]] = ()) -> List[int]:
    """Initialise the student from the teacher: embeddings, chosen encoder layers, pooler, and the task head when
    both have the same one (a fine-tuned teacher's classifier is a far better start than a random one).

    Needs the teacher's width, head count and intermediate size. Returns the 0-based teacher layers copied.
    """
    s_cfg, t_cfg = student.config, teacher.config
    for key in ("hidden_size", "num_attention_heads", "intermediate_size", "vocab_size"):
        if getattr(s_cfg, key) != getattr(t_cfg, key):
            raise ConfigError(f"checkpoint.student_init={mode} needs student.{key} == teacher.{key} "
                              f"({getattr(s_cfg, key)} vs {getattr(t_cfg, key)})")
    if s_cfg.num_hidden_layers > t_cfg.num_hidden_layers:
        raise ConfigError(f"checkpoint.student_init={mode}: the student is deeper than the teacher")
    sources = init_layer_sources(mode, s_cfg.num_hidden_layers, t_cfg.num_hidden_layers, pairs)
    teacher_params = dict(ckpt.named_parameters(teacher))
    prefix = "encoder.layer."
    params, head, same_head = {}, [], True
    for name, param in ckpt.named_parameters(student):
        key = name[len("bert."):] if name.startswith("bert.") else name
        source = name
        if key.startswith(prefix):
            index = key[len(prefix):].split(".", 1)[0]
            source = name.replace(f"{prefix}{index}.", f"{prefix}{sources[int(index)]}.", 1)
        elif not key.startswith(("embeddings.", "pooler.")):
            # classifier: copied below when the teacher has the same head
            head.append(name)
            same_head = same_head and name in teacher_params and teacher_params[name].shape == param.shape
            continue
        if source not in teacher_params:
            raise ConfigError(f"teacher has no parameter {source} to copy into the student's {name}")
        params[name] = teacher_params[source].asnumpy()
    copied_head = bool(head) and same_head
    if copied_head:
        params.update({n: teacher_params[n].asnumpy() for n in head})
    ckpt.load_params(student, params, f"teacher ({mode})", allow_missing=() if copied_head else ("classifier.*",))
    logger.info("student initialised from the teacher's embeddings, encoder layers %s (1-based), pooler%s",
                [i + 1 for i in sources], " and classifier" if copied_head else "")
    return sources


def _fit_dense_beside(student_ckpt: str) -> Optional[str]:
    path = os.path.join(os.path.dirname(os.path.abspath(student_ckpt)), FIT_DENSE)
    return path if os.path.isfile(path) else None


def _training_kernels(fn):
    """Networks a training stage builds use the fast exact-GELU kernel on CPU (run.cpu_gelu) and the training
    attention head split/merge (set_cpu_views: the SwapAxes12 kernel, less memory); the settings are restored
    afterwards, so networks built later in the same process for evaluation or export keep MindSpore's GeLU and
    ops.transpose."""
    @functools.wraps(fn)
    def wrapped(cfg: Any, runtime: Runtime, *args: Any, **kwargs: Any) -> Dict[str, Any]:
        with cpu_gelu(cfg.run.cpu_gelu if runtime.device_target == "CPU" else "builtin", views=True):
            return fn(cfg, runtime, *args, **kwargs)
    return wrapped


# --------------------------------------------------------------------------------------------------
# General distillation
# --------------------------------------------------------------------------------------------------
@_training_kernels
def run_general_distill(cfg: GDConfig, runtime: Runtime, overwrite: bool = False, stop_after_steps: int = 0,
                        progress: bool = True) -> Dict[str, Any]:
    if not cfg.checkpoint.teacher:
        raise ConfigError("checkpoint.teacher: empty; give the converted BERT teacher (scripts/convert_checkpoint.py)")
    if not cfg.data.train_files:
        raise ConfigError("data.train_files: empty; give pre-training records (scripts/create_pretraining_data.py)")
    pairs = resolve_layer_map(cfg.distill.layer_map, cfg.teacher.num_hidden_layers, cfg.student.num_hidden_layers)
    config = stage_config(cfg, "gd")
    run_dir = cfg.run.output_dir
    resume = prepare_run_dir(run_dir, config, overwrite)
    teacher_path = resolve_stage_checkpoint(cfg.checkpoint.teacher)
    teacher = load_network(teacher_path, "teacher", cfg.teacher, "backbone")
    started = {"teacher": _source(teacher_path)}
    if cfg.checkpoint.student:
        student_path = resolve_stage_checkpoint(cfg.checkpoint.student, "last")
        student = load_network(student_path, "student", cfg.student, "backbone")
        started["student"] = _source(student_path)
    else:
        student = build_model(cfg.student, "backbone")
        if cfg.checkpoint.student_init == "random":
            started["student"] = {"init": "random", "seed": cfg.run.seed}
        else:
            sources = copy_teacher_layers(student, teacher, cfg.checkpoint.student_init, pairs)
            started["student"] = {"init": cfg.checkpoint.student_init, "teacher_layers": [i + 1 for i in sources]}
    fit_dense = build_fit_dense(cfg.student, cfg.teacher, pairs, cfg.distill.fit_dense)
    if cfg.checkpoint.student and _fit_dense_beside(student_path):
        load_fit_dense(fit_dense, _fit_dense_beside(student_path))
    loss_net = DistillLoss(student, teacher, "gd", cfg.distill, pairs, fit_dense=fit_dense)
    stage = Stage(name="gd", run_dir=run_dir, stage=cfg.gd, loss_net=loss_net, params=loss_net.optimizer_params(),
                  student=student, data=cfg.data, columns=GD_COLUMNS, config=config, started_from=started,
                  graph=runtime.graph, rank=runtime.rank, world_size=runtime.world_size, data_seed=cfg.run.data_seed,
                  fit_dense=fit_dense, stop_after_steps=stop_after_steps, progress=progress,
                  async_checkpoints=cfg.run.async_checkpoints, cpu_host_update=cfg.run.cpu_host_update,
                  extra_manifest={"layer_map": [list(p) for p in pairs], "full_config": to_dict(cfg)})
    return run_stage(stage, resume)


# --------------------------------------------------------------------------------------------------
# Task distillation
# --------------------------------------------------------------------------------------------------
def task_head(cfg: TDConfig) -> Tuple[str, Dict[str, Any]]:
    if cfg.task.type == "ner":
        return "token_classification", {"num_labels": cfg.task.num_labels}
    num_labels = 1 if cfg.task.type == "regression" else cfg.task.num_labels
    return "sequence_classification", {"num_labels": num_labels, "pooled_activation": cfg.task.pooled_activation}


def label_names(cfg: TDConfig) -> Optional[List[str]]:
    """task.labels, else the labels.json the converter wrote beside the eval (or train) records."""
    if cfg.task.labels:
        return list(cfg.task.labels)
    from src.task_data import LABELS_FILE, load_label_map  # pylint: disable=import-outside-toplevel
    import glob  # pylint: disable=import-outside-toplevel

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


def _evaluator(cfg: TDConfig, net: nn.Cell) -> Optional[Evaluator]:
    if not cfg.data.eval_files:
        logger.warning("data.eval_files is empty: no evaluation, no best checkpoint")
        return None
    return Evaluator(net, eval_sets_from(cfg.data.eval_files), cfg.data, cfg.eval.batch_size, cfg.task.metric,
                     label_names(cfg))


def teacher_checkpoint(cfg: TDConfig) -> str:
    """checkpoint.teacher, else the best checkpoint of the finished fine-tuning run in OUT/teacher."""
    if cfg.checkpoint.teacher:
        return resolve_stage_checkpoint(cfg.checkpoint.teacher)
    run_dir = stage_dirs(cfg)["teacher"]
    manifest = read_manifest(run_dir)
    if manifest is None or manifest.get("status") != "finished":
        raise ConfigError(f"checkpoint.teacher is empty and {run_dir} holds no finished fine-tuning run; run "
                          f"--phase finetune first (with checkpoint.pretrained set), or set checkpoint.teacher to a "
                          f"fine-tuned teacher")
    return resolve_stage_checkpoint(run_dir)


def _teacher(cfg: TDConfig) -> Tuple[nn.Cell, str]:
    path = _teacher_path(cfg)
    return load_network(path, "teacher", cfg.teacher, task_head(cfg)[0]), path


def _teacher_path(cfg: TDConfig) -> str:
    """The teacher checkpoint, checked to be a fine-tuned network of the task's head and label count."""
    path = teacher_checkpoint(cfg)
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


def _initial_student(cfg: TDConfig, teacher_for_init: Optional[nn.Cell]) -> Tuple[nn.Cell, Dict[str, Any],
                                                                                     Optional[str]]:
    """The student head before phase 1 / the labels baseline, and where it came from."""
    head, kwargs = task_head(cfg)
    if cfg.checkpoint.student:
        path = resolve_stage_checkpoint(cfg.checkpoint.student, "last")
        return load_network(path, "student", cfg.student, head, **kwargs), _source(path), path
    student = build_model(cfg.student, head, **kwargs)
    if cfg.checkpoint.student_init != "random":
        if teacher_for_init is None:
            raise ConfigError(f"checkpoint.student_init={cfg.checkpoint.student_init} needs checkpoint.teacher")
        pairs = resolve_layer_map(cfg.distill.layer_map, cfg.teacher.num_hidden_layers, cfg.student.num_hidden_layers)
        sources = copy_teacher_layers(student, teacher_for_init, cfg.checkpoint.student_init, pairs)
        return student, {"init": cfg.checkpoint.student_init, "teacher_layers": [i + 1 for i in sources]}, None
    return student, {"init": "random", "seed": cfg.run.seed}, None


def stage_dirs(cfg: TDConfig) -> Dict[str, str]:
    out = cfg.run.output_dir
    return {name: os.path.join(out, name) for name in ("teacher", "student_labels", "phase1", "phase2")}


@_training_kernels
def run_finetune(cfg: TDConfig, runtime: Runtime, target: str = "teacher", overwrite: bool = False,
                 stop_after_steps: int = 0, progress: bool = True) -> Dict[str, Any]:
    """Supervised training on the labels: the teacher (from a pre-trained BERT) or the labels-only student."""
    head, kwargs = task_head(cfg)
    config = stage_config(cfg, "teacher" if target == "teacher" else "student_labels")
    if target == "teacher":
        if not cfg.checkpoint.pretrained:
            raise ConfigError("checkpoint.pretrained: empty; give the pre-trained BERT to fine-tune into the teacher "
                              "(a converted checkpoint, scripts/convert_checkpoint.py)")
        path = resolve_stage_checkpoint(cfg.checkpoint.pretrained)
        net = load_network(path, "teacher", cfg.teacher, head, **kwargs)
        started = {"model": _source(path)}
        run_dir = stage_dirs(cfg)["teacher"]
    elif target == "student":
        init_teacher = None
        started = {}
        if cfg.checkpoint.student_init != "random" and not cfg.checkpoint.student:
            init_teacher, teacher_path = _teacher(cfg)  # the same start as the distilled student
            config["teacher_sha256"] = _sha(teacher_path)
            started["teacher"] = _source(teacher_path)
        net, student_source, _ = _initial_student(cfg, init_teacher)
        started["student"] = student_source
        run_dir = stage_dirs(cfg)["student_labels"]
    else:
        raise ValueError(f"--target {target!r}; expected 'teacher' or 'student'")
    resume = prepare_run_dir(run_dir, config, overwrite)
    loss_net = DistillLoss(net, None, "finetune", cfg.distill, task_type=cfg.task.type)
    stage = Stage(name=f"finetune-{target}", run_dir=run_dir, stage=cfg.td.finetune, loss_net=loss_net,
                  params=loss_net.optimizer_params(), student=net, data=cfg.data, columns=TD_COLUMNS, config=config,
                  started_from=started, graph=runtime.graph, rank=runtime.rank, world_size=runtime.world_size,
                  data_seed=cfg.run.data_seed, evaluator=_evaluator(cfg, net), eval_steps=cfg.eval.eval_steps,
                  stop_after_steps=stop_after_steps, progress=progress,
                  async_checkpoints=cfg.run.async_checkpoints, cpu_host_update=cfg.run.cpu_host_update,
                  extra_manifest={"full_config": to_dict(cfg)})
    return run_stage(stage, resume)


@_training_kernels
def run_phase1(cfg: TDConfig, runtime: Runtime, overwrite: bool = False, stop_after_steps: int = 0,
               progress: bool = True) -> Dict[str, Any]:
    pairs = resolve_layer_map(cfg.distill.layer_map, cfg.teacher.num_hidden_layers, cfg.student.num_hidden_layers)
    config = stage_config(cfg, "phase1")
    run_dir = stage_dirs(cfg)["phase1"]
    teacher, teacher_path = _teacher(cfg)
    config["teacher_sha256"] = _sha(teacher_path)  # a re-trained teacher invalidates this phase
    resume = prepare_run_dir(run_dir, config, overwrite)
    student, student_source, student_path = _initial_student(cfg, teacher)
    fit_dense = build_fit_dense(cfg.student, cfg.teacher, pairs, cfg.distill.fit_dense)
    beside = _fit_dense_beside(student_path) if student_path else None
    if beside:
        load_fit_dense(fit_dense, beside)
    # With stored logits for phase 2, phase 1 keeps the teacher's logits it computes anyway (src/teacher_cache.py).
    collect = cfg.distill.store_teacher_logits and teacher_cache.supported(cfg.task.type)
    loss_net = DistillLoss(student, teacher, "intermediate", cfg.distill, pairs, cfg.task.type, fit_dense,
                           emit_teacher_logits=collect)
    stage = Stage(name="phase1", run_dir=run_dir, stage=cfg.td.phase1, loss_net=loss_net,
                  params=loss_net.optimizer_params(), student=student, data=cfg.data, columns=TD_COLUMNS,
                  config=config, started_from={"teacher": _source(teacher_path), "student": student_source},
                  graph=runtime.graph, rank=runtime.rank, world_size=runtime.world_size, data_seed=cfg.run.data_seed,
                  fit_dense=fit_dense, stop_after_steps=stop_after_steps, progress=progress,
                  async_checkpoints=cfg.run.async_checkpoints, cpu_host_update=cfg.run.cpu_host_update,
                  logit_collector=teacher_cache.LogitCollector(config["teacher_sha256"]) if collect else None,
                  extra_manifest={"layer_map": [list(p) for p in pairs], "full_config": to_dict(cfg)})
    return run_stage(stage, resume)


@_training_kernels
def run_phase2(cfg: TDConfig, runtime: Runtime, overwrite: bool = False, stop_after_steps: int = 0,
               progress: bool = True) -> Dict[str, Any]:
    dirs = stage_dirs(cfg)
    phase1 = read_manifest(dirs["phase1"])
    if phase1 is None or phase1.get("status") != "finished":
        raise ConfigError(f"phase 2 starts from the phase-1 checkpoint named in {dirs['phase1']}/manifest.json, and "
                          f"there is no finished phase 1 there; run --phase 1 first (or --phase both)")
    student_path = os.path.join(dirs["phase1"], phase1["checkpoints"]["last"])
    config = stage_config(cfg, "phase2")
    config["phase1_checkpoint_sha256"] = _sha(student_path)  # a re-run phase 1 invalidates this phase 2
    run_dir = dirs["phase2"]
    teacher_path = _teacher_path(cfg)
    config["teacher_sha256"] = _sha(teacher_path)
    resume = prepare_run_dir(run_dir, config, overwrite)
    head, kwargs = task_head(cfg)
    student = load_network(student_path, "student", cfg.student, head, **kwargs)
    data, columns, stored = cfg.data, TD_COLUMNS, None

    def teacher_net() -> nn.Cell:
        return load_network(teacher_path, "teacher", cfg.teacher, head)

    if cfg.distill.store_teacher_logits and teacher_cache.supported(cfg.task.type) and \
            (resume or {}).get("status") != "finished":
        known = teacher_cache.load_known(os.path.join(dirs["phase1"], teacher_cache.BYPRODUCT_FILE),
                                         config["teacher_sha256"], cfg.task.num_labels)
        stored = teacher_cache.build(teacher_net, resolve_files(list(cfg.data.train_files)), TD_COLUMNS, cfg.data,
                                     teacher_cache.store_path(cfg.run.output_dir, runtime.rank),
                                     config["teacher_sha256"], cfg.task.num_labels, cfg.eval.batch_size, progress,
                                     known=known)
        data = dataclasses.replace(cfg.data, train_files=(stored["path"],), dataset_type="mindrecord",
                                   schema_file="")
        columns = TD_COLUMNS + [teacher_cache.LOGITS_COLUMN]  # no teacher in the training graph
    elif cfg.distill.store_teacher_logits and not teacher_cache.supported(cfg.task.type):
        logger.info("distill.store_teacher_logits: %s logits are per token; phase 2 runs the teacher every step",
                    cfg.task.type)
    loss_net = DistillLoss(student, teacher_net() if stored is None else None, "prediction", cfg.distill,
                           task_type=cfg.task.type, stored_teacher_logits=stored is not None)
    stage = Stage(name="phase2", run_dir=run_dir, stage=cfg.td.phase2, loss_net=loss_net,
                  params=loss_net.optimizer_params(), student=student, data=data, columns=columns,
                  config=config, started_from={"teacher": _source(teacher_path), "student": _source(student_path)},
                  graph=runtime.graph, rank=runtime.rank, world_size=runtime.world_size, data_seed=cfg.run.data_seed,
                  evaluator=_evaluator(cfg, student), eval_steps=cfg.eval.eval_steps,
                  stop_after_steps=stop_after_steps, progress=progress,
                  async_checkpoints=cfg.run.async_checkpoints, cpu_host_update=cfg.run.cpu_host_update,
                  extra_manifest={"full_config": to_dict(cfg),
                                  "teacher_logits": ({k: stored[k] for k in ("path", "rows", "seconds", "reused",
                                                                             "from_phase1")}
                                                     if stored else None)})
    return run_stage(stage, resume)


def run_eval(cfg: TDConfig, checkpoint_path: str) -> Dict[str, Any]:
    """Evaluate a checkpoint (file or run directory) on data.eval_files."""
    path = resolve_stage_checkpoint(checkpoint_path)
    head, kwargs = task_head(cfg)
    meta = ckpt.read_metadata(path)
    net = ckpt.load_model(path) if (meta.get("head") or {}).get("type") == head else ckpt.load_model(path, head, **kwargs)
    evaluator = _evaluator(cfg, net)
    if evaluator is None:
        raise ConfigError("data.eval_files: empty; nothing to evaluate")
    result = evaluator()
    result["checkpoint"] = os.path.abspath(path)
    return result
