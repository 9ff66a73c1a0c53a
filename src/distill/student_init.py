"""A student that starts from its teacher (checkpoint.student_init): the teacher's embeddings, some of its encoder
layers, its pooler and, for the same task head, its classifier. teacher_lower_layers and teacher_mapped_layers copy
them, so they need the teacher's width, head count and intermediate size. teacher_selected takes the mapped layers
of a wider teacher and cuts every weight to the student's shape by weight selection (Xu et al., "Initializing
Models with Larger Ones", ICLR 2024): evenly spaced residual dimensions, the same ones in every tensor that reads or
writes the residual stream; evenly spaced heads, and dimensions within each kept head; evenly spaced FFN units."""
from __future__ import annotations

import logging
import re
from typing import Dict, List, Sequence, Tuple

import numpy as np
from mindspore import nn

from src.config import ConfigError
from src.model import checkpoint as ckpt

logger = logging.getLogger(__name__)


STUDENT_INITS = ("random", "teacher_lower_layers", "teacher_mapped_layers", "teacher_selected")
# gd_config.yaml and td_config/sst2_tinybert4.yaml start from the teacher by default: say how to leave that
OR_RANDOM = "; or start the student from a random init: --checkpoint.student_init=random"


def init_layer_sources(mode: str, student_layers: int, teacher_layers: int,
                       pairs: Sequence[Tuple[int, int]]) -> List[int]:
    """0-based teacher encoder layer copied into each 0-based student layer.

    teacher_lower_layers: student layer i <- teacher layer i (DistilBERT-style truncation).
    teacher_mapped_layers: student layer i <- the teacher layer the layer map pairs it with, so the start is
    consistent with what the intermediate losses ask of it (6 -> 3 uniform: teacher layers 2, 4, 6, 1-based).
    """
    if mode == "teacher_lower_layers":
        return list(range(student_layers))
    if mode not in ("teacher_mapped_layers", "teacher_selected"):
        raise ConfigError(f"checkpoint.student_init: {mode!r}; expected one of {', '.join(STUDENT_INITS)}")
    mapped = {s: t for s, t in pairs}
    missing = [s for s in range(1, student_layers + 1) if s not in mapped or mapped[s] < 1]
    if missing:
        raise ConfigError(f"checkpoint.student_init={mode}: distill.layer_map pairs no teacher "
                          f"encoder layer with student layer(s) {missing} (1-based){OR_RANDOM}")
    return [mapped[s] - 1 for s in range(1, student_layers + 1)]


def copy_teacher_layers(student: nn.Cell, teacher: nn.Cell, mode: str,
                        pairs: Sequence[Tuple[int, int]] = ()) -> List[int]:
    """Initialise the student from the teacher: embeddings, chosen encoder layers, pooler, and the task head when
    both have the same one (a fine-tuned teacher's classifier is a far better start than a random one).

    Needs the teacher's width, head count and intermediate size, except teacher_selected, which needs them at least
    the student's (and the same vocabulary). Returns the 0-based teacher layers copied.
    """
    s_cfg, t_cfg = student.config, teacher.config
    same = ("vocab_size",) if mode == "teacher_selected" else \
        ("hidden_size", "num_attention_heads", "intermediate_size", "vocab_size")
    for key in same:
        if getattr(s_cfg, key) != getattr(t_cfg, key):
            raise ConfigError(f"checkpoint.student_init={mode} needs student.{key} == teacher.{key} "
                              f"({getattr(s_cfg, key)} vs {getattr(t_cfg, key)}){OR_RANDOM}")
    select = selection_indices(s_cfg, t_cfg) if mode == "teacher_selected" else None
    if s_cfg.num_hidden_layers > t_cfg.num_hidden_layers:
        raise ConfigError(f"checkpoint.student_init={mode}: the student is deeper than the teacher{OR_RANDOM}")
    sources = init_layer_sources(mode, s_cfg.num_hidden_layers, t_cfg.num_hidden_layers, pairs)
    teacher_params = dict(ckpt.named_parameters(teacher))
    prefix = "encoder.layer."
    params, head = {}, []
    for name, param in ckpt.named_parameters(student):
        key = name[len("bert."):] if name.startswith("bert.") else name
        source = name
        if key.startswith(prefix):
            index = key[len(prefix):].split(".", 1)[0]
            source = name.replace(f"{prefix}{index}.", f"{prefix}{sources[int(index)]}.", 1)
        elif not key.startswith(("embeddings.", "pooler.")):
            head.append((name, tuple(param.shape)))  # the classifier: copied below when the teacher has the same
            continue
        if source not in teacher_params:
            raise ConfigError(f"teacher has no parameter {source} to copy into the student's {name}")
        params[name] = teacher_params[source].asnumpy()
        if select is not None:
            params[name] = select_weight(key, params[name], select, tuple(param.shape))
    # the task head, when the teacher has the same one (same names and label count; under selection its columns,
    # which read the residual stream, are cut like the rest)
    head_params = {}
    for name, shape in head:
        value = teacher_params[name].asnumpy() if name in teacher_params else None
        if value is not None and select is not None:
            value = select_weight(name, value, select, shape, optional=True)
        if value is None or value.shape != shape:
            head_params = {}
            break
        head_params[name] = value
    copied_head = bool(head_params)
    params.update(head_params)
    # a head that is not copied keeps the student's own init (any head: classifier, masked-LM, ...)
    ckpt.load_params(student, params, f"teacher ({mode})",
                     allow_missing=() if copied_head else tuple(name for name, _ in head))
    logger.info("student initialised from the teacher's embeddings, encoder layers %s (1-based), pooler%s%s",
                [i + 1 for i in sources], " and classifier" if copied_head else "",
                f", weights selected {t_cfg.hidden_size} -> {s_cfg.hidden_size} wide" if select is not None else "")
    return sources


def evenly_spaced(keep: int, total: int, what: str) -> np.ndarray:
    """`keep` of `total` indices, evenly spaced from 0 (all of them when keep == total)."""
    if not 0 < keep <= total:
        raise ConfigError(f"checkpoint.student_init=teacher_selected needs student {what} <= teacher {what} "
                          f"({keep} vs {total}){OR_RANDOM}")
    return (np.arange(keep) * total) // keep


def selection_indices(s_cfg, t_cfg) -> Dict[str, np.ndarray]:
    """Which teacher rows/columns each student dimension takes: "h" residual stream, "qkv" attention head
    dimensions (kept heads, and dimensions inside each), "f" FFN units."""
    s_heads, t_heads = s_cfg.num_attention_heads, t_cfg.num_attention_heads
    s_dim, t_dim = s_cfg.hidden_size // s_heads, t_cfg.hidden_size // t_heads
    hidden = evenly_spaced(s_cfg.hidden_size, t_cfg.hidden_size, "hidden_size")
    heads = evenly_spaced(s_heads, t_heads, "num_attention_heads")
    inside = evenly_spaced(s_dim, t_dim, "attention head size (hidden_size / num_attention_heads)")
    return {"h": hidden, "qkv": (heads[:, None] * t_dim + inside[None, :]).reshape(-1),
            "f": evenly_spaced(s_cfg.intermediate_size, t_cfg.intermediate_size, "intermediate_size")}


# Per parameter (name without "bert."; matched at its end): the index set of each axis, None = every row
_SELECTED_AXES = (
    (r"embeddings\.(word|position|token_type)_embeddings\.weight$", (None, "h")),
    (r"LayerNorm\.(weight|bias)$", ("h",)),
    (r"attention\.self\.(query|key|value)\.weight$", ("qkv", "h")),
    (r"attention\.self\.(query|key|value)\.bias$", ("qkv",)),
    (r"attention\.output\.dense\.weight$", ("h", "qkv")),
    (r"intermediate\.dense\.weight$", ("f", "h")),
    (r"intermediate\.dense\.bias$", ("f",)),
    (r"(?<!attention\.)output\.dense\.weight$", ("h", "f")),
    (r"(output\.dense|pooler\.dense)\.bias$", ("h",)),
    (r"pooler\.dense\.weight$", ("h", "h")),
    (r"^classifier\.weight$", (None, "h")),
    (r"^classifier\.bias$", (None,)),
)


def select_weight(key: str, value: np.ndarray, select: Dict[str, np.ndarray], shape: Tuple[int, ...],
                  optional: bool = False):
    """The teacher tensor `value` cut to the student's `shape` along the index sets of its name `key`. A name with no
    rule or a shape that does not come out is a ConfigError, or None with optional=True (a task head that is not
    copied)."""
    for pattern, axes in _SELECTED_AXES:
        if re.search(pattern, key):
            out = value
            for axis, kind in enumerate(axes):
                if kind is not None:
                    out = np.take(out, select[kind], axis=axis)
            if out.shape != shape:
                if optional:
                    return None
                raise ConfigError(f"checkpoint.student_init=teacher_selected: {key}: the teacher's {value.shape} "
                                  f"cut to {out.shape}, but the student's is {shape}")
            return np.ascontiguousarray(out)
    if optional:
        return None
    raise ConfigError(f"checkpoint.student_init=teacher_selected: no selection rule for the parameter {key}")
