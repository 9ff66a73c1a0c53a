"""A student that starts from its teacher (checkpoint.student_init): the teacher's embeddings, some of its encoder
layers, its pooler and, for the same task head, its classifier. Needs the teacher's width, head count and
intermediate size; otherwise the student starts from general distillation or at random."""
from __future__ import annotations

import logging
from typing import List, Sequence, Tuple

from mindspore import nn

from src.config import ConfigError
from src.model import checkpoint as ckpt

logger = logging.getLogger(__name__)


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
