"""Each stage of the pipeline, built from a config and run (used by run_general_distill.py and run_task_distill.py).

Run directories (run.output_dir = OUT):
    GD:         OUT/                    (student backbone + fit_dense)
    TD:         OUT/teacher/            fine-tuned teacher (--phase finetune)
                OUT/student_labels/     the student trained on labels alone (--phase finetune --target student)
                OUT/phase1/             intermediate-layer distillation
                OUT/phase2/             prediction-layer distillation, started from OUT/phase1's manifest
Checkpoints in the config (checkpoint.teacher / checkpoint.student) are .ckpt files or finished run
directories (their manifest names the checkpoint: best if the stage evaluated, else last).

Every network a training stage builds (teacher included) computes with the training backend
(Backend.for_training: the CPU kernels); networks built for evaluation or export use the portable one.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any, Dict

from src.config import ConfigError, GDConfig, TDConfig, resolve_layer_map, to_dict
from src.data.dataset import GD_COLUMNS, TD_COLUMNS, resolve_files
from src.distill import teacher_cache
from src.distill.loss import DistillLoss, build_fit_dense
from src.distill.student_init import copy_teacher_layers
from src.infra.backend import Backend
from src.infra.runtime import Runtime
from src.model import checkpoint as ckpt
from src.model.heads import build_model
from src.training.checkpoints import fit_dense_beside, load_fit_dense
from src.training import sink
from src.training.loop import Stage, run_stage
from src.training.manifest import Manifest, prepare_run_dir, resolve_stage_checkpoint
from src.training.networks import (checkpoint_sha, evaluator_for, initial_student, load_network, load_teacher,
                                   source_of, stage_config, stage_dirs, stage_vocab, task_head, teacher_path)

logger = logging.getLogger(__name__)


def _backend(cfg: Any, runtime: Runtime) -> Backend:
    return Backend.for_training(cfg.run, runtime.device_target, runtime.distributed)


def _stage(cfg: Any, runtime: Runtime, backend: Backend, progress: bool, **fields: Any) -> Stage:
    """A Stage with what every stage takes from the run config and the runtime. Data parallel: only rank 0
    evaluates (it alone writes metrics and best.ckpt)."""
    if not runtime.is_main:
        fields["evaluator"] = None
    return Stage(backend=backend, graph=runtime.graph, rank=runtime.rank, world_size=runtime.world_size,
                 barrier=runtime.barrier if runtime.distributed else None,
                 rank_mean=runtime.rank_mean if runtime.distributed else None,
                 data_seed=cfg.run.data_seed, async_checkpoints=cfg.run.async_checkpoints, progress=progress,
                 sink_steps=_sink_steps(cfg, runtime), params=fields["loss_net"].optimizer_params(),
                 vocab=stage_vocab(cfg, fields["data"], fields["started_from"]), **fields)


def _sink_steps(cfg: Any, runtime: Runtime) -> int:
    """Stage.sink_steps: run.data_sink_steps (-1: the epoch) in dataset sink mode, 0 (step by step) otherwise."""
    return cfg.run.data_sink_steps if sink.active(cfg.run, runtime.device_target) else 0


# --------------------------------------------------------------------------------------------------
# General distillation
# --------------------------------------------------------------------------------------------------
def run_general_distill(cfg: GDConfig, runtime: Runtime, overwrite: bool = False, progress: bool = True) -> Manifest:
    if not cfg.checkpoint.teacher:
        raise ConfigError("checkpoint.teacher: empty; give the converted BERT teacher (scripts/convert_checkpoint.py)")
    if not cfg.data.train_files:
        raise ConfigError("data.train_files: empty; give pre-training records (scripts/create_pretraining_data.py)")
    backend = _backend(cfg, runtime)
    pairs = resolve_layer_map(cfg.distill.layer_map, cfg.teacher.num_hidden_layers, cfg.student.num_hidden_layers)
    config = stage_config(cfg, "gd")
    resume = prepare_run_dir(cfg.run.output_dir, config, overwrite, owner=runtime.is_main)
    path = resolve_stage_checkpoint(cfg.checkpoint.teacher)
    teacher = load_network(path, "teacher", cfg.teacher, "backbone", backend)
    started: Dict[str, Any] = {"teacher": source_of(path)}
    student_path = None
    if cfg.checkpoint.student:
        student_path = resolve_stage_checkpoint(cfg.checkpoint.student, "last")
        student = load_network(student_path, "student", cfg.student, "backbone", backend)
        started["student"] = source_of(student_path)
    else:
        student = build_model(cfg.student, "backbone", backend)
        started["student"] = {"init": "random", "seed": cfg.run.seed}
        if cfg.checkpoint.student_init != "random":
            sources = copy_teacher_layers(student, teacher, cfg.checkpoint.student_init, pairs)
            started["student"] = {"init": cfg.checkpoint.student_init, "teacher_layers": [i + 1 for i in sources]}
    fit_dense = build_fit_dense(cfg.student, cfg.teacher, pairs, cfg.distill.fit_dense)
    beside = fit_dense_beside(student_path) if student_path else None
    if beside and load_fit_dense(fit_dense, beside):
        started["fit_dense"] = source_of(beside)
    loss_net = DistillLoss(student, teacher, "gd", cfg.distill, pairs, fit_dense=fit_dense)
    stage = _stage(cfg, runtime, backend, progress, name="gd", run_dir=cfg.run.output_dir, stage=cfg.gd,
                   loss_net=loss_net, student=student, data=cfg.data, columns=GD_COLUMNS, config=config,
                   started_from=started, fit_dense=fit_dense,
                   manifest_fields={"layer_map": [list(p) for p in pairs], "full_config": to_dict(cfg)})
    return run_stage(stage, resume)


# --------------------------------------------------------------------------------------------------
# Task distillation
# --------------------------------------------------------------------------------------------------
def run_finetune(cfg: TDConfig, runtime: Runtime, target: str = "teacher", overwrite: bool = False,
                 progress: bool = True) -> Manifest:
    """Supervised training on the labels: the teacher (from a pre-trained BERT) or the labels-only student."""
    backend = _backend(cfg, runtime)
    head, kwargs = task_head(cfg)
    config = stage_config(cfg, "teacher" if target == "teacher" else "student_labels")
    if target == "teacher":
        if not cfg.checkpoint.pretrained:
            raise ConfigError("checkpoint.pretrained: empty; give the pre-trained BERT to fine-tune into the teacher "
                              "(a converted checkpoint, scripts/convert_checkpoint.py)")
        path = resolve_stage_checkpoint(cfg.checkpoint.pretrained)
        net = load_network(path, "teacher", cfg.teacher, head, backend, **kwargs)
        started = {"model": source_of(path)}
        run_dir = stage_dirs(cfg)["teacher"]
    elif target == "student":
        init_teacher, started = None, {}
        if cfg.checkpoint.student_init != "random" and not cfg.checkpoint.student:
            init_teacher, path = load_teacher(cfg, backend)  # the same start as the distilled student
            config["teacher_sha256"] = checkpoint_sha(path)
            started["teacher"] = source_of(path)
        net, started["student"], _ = initial_student(cfg, init_teacher, backend)
        run_dir = stage_dirs(cfg)["student_labels"]
    else:
        raise ValueError(f"--target {target!r}; expected 'teacher' or 'student'")
    resume = prepare_run_dir(run_dir, config, overwrite, owner=runtime.is_main)
    loss_net = DistillLoss(net, None, "finetune", cfg.distill, task_type=cfg.task.type)
    stage = _stage(cfg, runtime, backend, progress, name=f"finetune-{target}", run_dir=run_dir, stage=cfg.td.finetune,
                   loss_net=loss_net, student=net, data=cfg.data, columns=TD_COLUMNS, config=config,
                   started_from=started, evaluator=evaluator_for(cfg, net), eval_steps=cfg.eval.eval_steps,
                   manifest_fields={"full_config": to_dict(cfg)})
    return run_stage(stage, resume)


def run_phase1(cfg: TDConfig, runtime: Runtime, overwrite: bool = False, progress: bool = True) -> Manifest:
    """Intermediate-layer distillation: attention scores, hidden states and embeddings."""
    backend = _backend(cfg, runtime)
    pairs = resolve_layer_map(cfg.distill.layer_map, cfg.teacher.num_hidden_layers, cfg.student.num_hidden_layers)
    config = stage_config(cfg, "phase1")
    teacher, path = load_teacher(cfg, backend)
    config["teacher_sha256"] = checkpoint_sha(path)  # a re-trained teacher invalidates this phase
    resume = prepare_run_dir(stage_dirs(cfg)["phase1"], config, overwrite, owner=runtime.is_main)
    student, student_source, student_path = initial_student(cfg, teacher, backend)
    fit_dense = build_fit_dense(cfg.student, cfg.teacher, pairs, cfg.distill.fit_dense)
    beside = fit_dense_beside(student_path) if student_path else None
    started = {"teacher": source_of(path), "student": student_source}
    if beside and load_fit_dense(fit_dense, beside):
        started["fit_dense"] = source_of(beside)
    # With stored logits for phase 2, phase 1 keeps the teacher's logits it computes anyway (src/distill/teacher_cache.py).
    # Not in sink mode: its graph returns only the last step of a chunk (phase 2 then runs the teacher once).
    collect = (cfg.distill.store_teacher_logits and teacher_cache.supported(cfg.task.type)
               and not sink.active(cfg.run, runtime.device_target))
    loss_net = DistillLoss(student, teacher, "intermediate", cfg.distill, pairs, cfg.task.type, fit_dense,
                           emit_teacher_logits=collect)
    stage = _stage(cfg, runtime, backend, progress, name="phase1", run_dir=stage_dirs(cfg)["phase1"],
                   stage=cfg.td.phase1, loss_net=loss_net, student=student, data=cfg.data, columns=TD_COLUMNS,
                   config=config, started_from=started, fit_dense=fit_dense,
                   logit_collector=teacher_cache.LogitCollector(config["teacher_sha256"]) if collect else None,
                   manifest_fields={"layer_map": [list(p) for p in pairs], "full_config": to_dict(cfg)})
    return run_stage(stage, resume)


def _stored_teacher_logits(cfg: TDConfig, runtime: Runtime, teacher_net, sha: str, progress: bool) -> Dict[str, Any]:
    """Phase 2's teacher-logit store (built or reused), taking what phase 1 kept."""
    known = teacher_cache.load_known(os.path.join(stage_dirs(cfg)["phase1"], teacher_cache.BYPRODUCT_FILE), sha,
                                     cfg.task.num_labels)
    return teacher_cache.build(teacher_net, resolve_files(list(cfg.data.train_files)), list(TD_COLUMNS), cfg.data,
                               teacher_cache.store_path(cfg.run.output_dir, runtime.rank), sha, cfg.task.num_labels,
                               cfg.eval.batch_size, progress, known=known)


def run_phase2(cfg: TDConfig, runtime: Runtime, overwrite: bool = False, progress: bool = True) -> Manifest:
    """Prediction-layer distillation, started from the phase-1 checkpoint its manifest names."""
    backend = _backend(cfg, runtime)
    dirs = stage_dirs(cfg)
    phase1 = Manifest.read(dirs["phase1"])
    if phase1 is None or not phase1.finished:
        raise ConfigError(f"phase 2 starts from the phase-1 checkpoint named in {dirs['phase1']}/manifest.json, and "
                          f"there is no finished phase 1 there; run --phase 1 first (or --phase both)")
    student_path = os.path.join(dirs["phase1"], phase1.checkpoints.last)
    config = stage_config(cfg, "phase2")
    config["phase1_checkpoint_sha256"] = checkpoint_sha(student_path)  # a re-run phase 1 invalidates this phase 2
    path = teacher_path(cfg)
    config["teacher_sha256"] = checkpoint_sha(path)
    resume = prepare_run_dir(dirs["phase2"], config, overwrite, owner=runtime.is_main)
    head, kwargs = task_head(cfg)
    student = load_network(student_path, "student", cfg.student, head, backend, **kwargs)

    def teacher_net():
        return load_network(path, "teacher", cfg.teacher, head, backend)

    data, columns, stored = cfg.data, TD_COLUMNS, None
    if cfg.distill.store_teacher_logits and teacher_cache.supported(cfg.task.type) and \
            not (resume is not None and resume.finished):
        stored = _stored_teacher_logits(cfg, runtime, teacher_net, config["teacher_sha256"], progress)
        data = dataclasses.replace(cfg.data, train_files=(stored["path"],), dataset_type="mindrecord",
                                   schema_file="")
        columns = TD_COLUMNS + (teacher_cache.LOGITS_COLUMN,)  # no teacher in the training graph
    elif cfg.distill.store_teacher_logits and not teacher_cache.supported(cfg.task.type):
        logger.info("distill.store_teacher_logits: %s logits are per token; phase 2 runs the teacher every step",
                    cfg.task.type)
    loss_net = DistillLoss(student, teacher_net() if stored is None else None, "prediction", cfg.distill,
                           task_type=cfg.task.type, stored_teacher_logits=stored is not None)
    stored_info = {k: stored[k] for k in ("path", "rows", "seconds", "reused", "from_phase1")} if stored else None
    stage = _stage(cfg, runtime, backend, progress, name="phase2", run_dir=dirs["phase2"], stage=cfg.td.phase2,
                   loss_net=loss_net, student=student, data=data, columns=columns, config=config,
                   started_from={"teacher": source_of(path), "student": source_of(student_path)},
                   evaluator=evaluator_for(cfg, student), eval_steps=cfg.eval.eval_steps,
                   manifest_fields={"full_config": to_dict(cfg), "teacher_logits": stored_info})
    return run_stage(stage, resume)


def run_eval(cfg: TDConfig, checkpoint_path: str) -> Dict[str, Any]:
    """Evaluate a checkpoint (file or run directory) on data.eval_files."""
    path = resolve_stage_checkpoint(checkpoint_path)
    head, kwargs = task_head(cfg)
    meta = ckpt.read_metadata(path)
    net = ckpt.load_model(path) if (meta.get("head") or {}).get("type") == head else ckpt.load_model(path, head,
                                                                                                     **kwargs)
    evaluator = evaluator_for(cfg, net)
    if evaluator is None:
        raise ConfigError("data.eval_files: empty; nothing to evaluate")
    result = evaluator()
    result["checkpoint"] = os.path.abspath(path)
    return result
