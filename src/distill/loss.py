"""Distillation networks: one loss Cell for GD, TD phase 1, TD phase 2 and supervised fine-tuning.

`DistillLoss(student, teacher, ...)` takes one batch in the model's input order, (input_ids, segment_ids,
input_mask, label_ids[, teacher_logits]) (the loader's column order, src/data/dataset.py), and returns the
7-tuple that `LossOutput` names: the total, the five terms in LOSS_TERMS order (0 when a stage does not use
one) and the teacher's logits (phase 1 with emit_teacher_logits; a placeholder otherwise). The teacher runs in
eval mode (dropout off), its outputs go through stop_gradient, and its parameters are frozen and never handed to
the optimizer.

Stages:
- "gd": BertModel student and teacher; attention + hidden-state (+ embedding) losses.
- "intermediate" (TD phase 1): task heads; the same losses, logits unused.
- "prediction" (TD phase 2): soft cross-entropy between logits with temperature (MSE for regression; per
  token for NER), plus an optional hard-label term.
- "finetune": no teacher; hard-label cross-entropy (MSE for regression). Used for the teacher and for the
  labels-only student baseline.
"""
from __future__ import annotations

import logging
from typing import Any, List, NamedTuple, Optional, Sequence, Tuple

import mindspore as ms
from mindspore import nn, ops

from src.distill import losses
from src.config import BertConfig, DistillConfig
from src.model.bert import ATTENTION_SCORES, HIDDEN_STATES, BertModel, truncated_normal
from src.model.heads import HEAD_ATTENTION_SCORES, HEAD_HIDDEN_STATES, LOGITS, BertForTokenClassification

logger = logging.getLogger(__name__)

LOSS_TERMS = ("attention", "hidden", "embedding", "prediction", "hard_label")
STAGES = ("gd", "intermediate", "prediction", "finetune")


class LossOutput(NamedTuple):
    """Python-side view of DistillLoss's output tuple: `LossOutput(*loss_net(*batch))`."""

    total: Any
    attention: Any
    hidden: Any
    embedding: Any
    prediction: Any
    hard_label: Any
    teacher_logits: Any  # [B, C] in phase 1 with emit_teacher_logits; a [1] placeholder otherwise

    @property
    def terms(self) -> Tuple[Any, ...]:
        """The five terms in LOSS_TERMS order."""
        return self[1:6]


class DistillError(ValueError):
    """A teacher/student pair or layer map that cannot be distilled (message says why)."""


def _config(net: nn.Cell) -> BertConfig:
    return net.config


def _output_indices(net: nn.Cell) -> Tuple[int, int]:
    """(hidden_states index, attention_scores index) in the net's output tuple."""
    if isinstance(net, BertModel):
        return HIDDEN_STATES, ATTENTION_SCORES
    return HEAD_HIDDEN_STATES, HEAD_ATTENTION_SCORES


class FitDense(nn.Cell):
    """Projection(s) from the student hidden size to the teacher's: one shared (reference) or one per layer.

    Parameters are named `fit_dense.{k}.weight/bias`; k indexes the hidden-state pairs of the layer map.
    """

    def __init__(self, student_hidden: int, teacher_hidden: int, count: int, initializer_range: float = 0.02):
        super().__init__()
        self.count = count
        self.layers = nn.CellList([nn.Dense(student_hidden, teacher_hidden, weight_init=truncated_normal(
            initializer_range), bias_init="zeros")
                                   for _ in range(count)])

    def construct(self, hidden, index):
        return self.layers[index](hidden)


def build_fit_dense(student: BertConfig, teacher: BertConfig, layer_pairs: Sequence[Tuple[int, int]],
                    mode: str) -> FitDense:
    """FitDense for `mode` "shared" (one projection) or "per_layer" (one per mapped hidden state)."""
    if mode not in ("shared", "per_layer"):
        raise DistillError(f"distill.fit_dense: got {mode!r}; expected 'shared' or 'per_layer'")
    count = 1 if mode == "shared" else len(layer_pairs)
    return FitDense(student.hidden_size, teacher.hidden_size, count, student.initializer_range)


def check_pair(student: BertConfig, teacher: BertConfig, distill: DistillConfig, stage: str,
               layer_pairs: Sequence[Tuple[int, int]]) -> None:
    """Errors for pairs that cannot be distilled at this stage."""
    if stage in ("gd", "intermediate") and distill.attention_weight > 0:
        if student.num_attention_heads != teacher.num_attention_heads:
            raise DistillError(
                f"the attention loss compares [batch, heads, seq, seq] scores, so the student needs as many heads "
                f"as the teacher: student.num_attention_heads={student.num_attention_heads}, "
                f"teacher.num_attention_heads={teacher.num_attention_heads}; change the student or set "
                f"distill.attention_weight: 0")
        if not any(s > 0 for s, _ in layer_pairs):
            raise DistillError("distill.layer_map maps no transformer layer (only embeddings), so the attention "
                               "loss has nothing to compare; map layers or set distill.attention_weight: 0")
    if student.vocab_size != teacher.vocab_size:
        raise DistillError(f"student.vocab_size={student.vocab_size} != teacher.vocab_size={teacher.vocab_size}: "
                           f"both nets must read the same token ids")


class DistillLoss(nn.Cell):
    """Loss of one training stage; construct(input_ids, segment_ids, input_mask, label_ids[, teacher_logits]) ->
    the LossOutput tuple (total, five terms, teacher logits or a placeholder).

    For "gd" batches have no labels: pass a dummy tensor (it is not read).
    """

    def __init__(self, student: nn.Cell, teacher: Optional[nn.Cell], stage: str, distill: DistillConfig,
                 layer_pairs: Sequence[Tuple[int, int]] = (), task_type: str = "classification",
                 fit_dense: Optional[FitDense] = None, stored_teacher_logits: bool = False,
                 emit_teacher_logits: bool = False):
        super().__init__()
        if stage not in STAGES:
            raise DistillError(f"stage {stage!r}; expected one of {STAGES}")
        if stored_teacher_logits and (stage != "prediction" or task_type == "ner"):
            raise DistillError(f"stored teacher logits serve only the prediction stage of classification and "
                               f"regression; got stage {stage!r}, task type {task_type!r}")
        if emit_teacher_logits and (stage != "intermediate" or task_type == "ner" or teacher is None):
            raise DistillError(f"emit_teacher_logits: phase 1 (stage 'intermediate') of classification and "
                               f"regression with a teacher; got stage {stage!r}, task type {task_type!r}")
        # Phase 1 can also return the teacher's logits (computed anyway) as a last output, for the phase-2 store.
        self.emit_teacher_logits = bool(emit_teacher_logits)
        # Phase 2 with stored logits: the batch carries the teacher's logits (src/distill/teacher_cache.py), no teacher here.
        self.stored_teacher_logits = bool(stored_teacher_logits)
        if stage != "finetune" and teacher is None and not self.stored_teacher_logits:
            raise DistillError(f"stage {stage!r} needs a teacher")
        self.stage = stage
        self.task_type = task_type
        self.student = student
        self.teacher = teacher
        self.intermediate = stage in ("gd", "intermediate")
        self.reference_parity = bool(distill.reference_parity)
        self.temperature = float(distill.temperature)
        self.temperature_squared = bool(distill.temperature_squared)
        self.hard_label_weight = float(distill.hard_label_weight)
        self.attention_weight = float(distill.attention_weight)
        self.hidden_weight = float(distill.hidden_weight)
        self.embedding_weight = float(distill.embedding_weight)
        if teacher is not None:
            check_pair(_config(student), _config(teacher), distill, stage, layer_pairs)
            teacher.set_train(False)
            for p in teacher.get_parameters():
                p.requires_grad = False
        self.s_hidden, self.s_scores = _output_indices(student)
        self.t_hidden, self.t_scores = _output_indices(teacher) if teacher is not None else (0, 0)
        pairs = tuple((int(s), int(t)) for s, t in layer_pairs)
        # Attention: student layer s >= 1 <-> teacher layer t >= 1 (scores index s - 1). Hidden: every pair.
        self.attention_pairs = tuple((s - 1, t - 1) for s, t in pairs if s > 0 and t > 0)
        self.hidden_pairs = tuple((k, s, t) for k, (s, t) in enumerate(pairs))
        self.shared_fit = fit_dense is not None and fit_dense.count == 1
        if self.intermediate:
            if fit_dense is None:
                raise DistillError(f"stage {stage!r} needs a fit_dense projection")
            if fit_dense.count not in (1, len(pairs)):
                raise DistillError(f"fit_dense has {fit_dense.count} projections for {len(pairs)} mapped layers")
        self.fit_dense = fit_dense if self.intermediate else None

    def optimizer_params(self) -> List[ms.Parameter]:
        """Student (+ fit_dense) parameters that this stage's loss depends on; the teacher is excluded.

        Parts with no gradient in a stage (the pooler in GD and in NER; pooler and classifier in phase 1;
        fit_dense in phase 2) are left out, so the optimizer's decoupled weight decay does not shrink them for nothing
        (the reference kept them in the optimizer).
        """
        unused: Tuple[str, ...] = ()
        if self.stage == "gd":
            unused = ("pooler.",)
        elif self.stage == "intermediate":
            unused = ("bert.pooler.", "classifier.")
        elif isinstance(self.student, BertForTokenClassification):  # token logits never use the pooler
            unused = ("bert.pooler.",)
        params = [p for name, p in self.student.parameters_and_names()  # names relative to the student
                  if p.requires_grad and not name.startswith(unused)]
        if self.fit_dense is not None:
            params += list(self.fit_dense.trainable_params())
        return params

    def _project(self, hidden, k):
        return self.fit_dense(hidden, 0 if self.shared_fit else k)

    def construct(self, input_ids, segment_ids, input_mask, label_ids, teacher_logits=None, normalizers=None):
        """normalizers: None (each masked mean divides by this batch's own count), or [3] float32: the real tokens,
        the real (query, key) pairs per head and the scored labels to divide by (data parallel: the global
        batch's counts / world size, so that the mean of the ranks' losses is the global batch's loss)."""
        counts = (None, None, None) if normalizers is None else (normalizers[0], normalizers[1], normalizers[2])
        s_out = self.student(input_ids, segment_ids, input_mask)
        # Fresh zeros each call (never `+=` on a shared tensor: graph mode would update it in place).
        zero = ops.zeros((), ms.float32)
        no_logits = ops.zeros((1,), ms.float32)
        if self.stage == "finetune":
            hard = self._hard_loss(s_out[LOGITS], label_ids, counts[2])
            return hard, zero, zero, zero, zero, hard, no_logits
        if self.intermediate:
            t_out = self.teacher(input_ids, segment_ids, input_mask)
            attention, hidden, embedding = self._intermediate(s_out, t_out, input_mask, counts)
            total = self.attention_weight * attention + self.hidden_weight * hidden + \
                self.embedding_weight * embedding
            kept = ops.stop_gradient(t_out[LOGITS]) if self.emit_teacher_logits else no_logits
            return total, attention, hidden, embedding, zero, zero, kept
        s_logits = s_out[LOGITS]
        if self.stored_teacher_logits:
            t_logits = teacher_logits
        else:
            t_logits = ops.stop_gradient(self.teacher(input_ids, segment_ids, input_mask)[LOGITS])
        prediction = self._prediction(s_logits, t_logits, label_ids, counts[2])
        total, hard = prediction, zero
        if self.hard_label_weight > 0:
            hard = self._hard_loss(s_logits, label_ids, counts[2])
            total = total + self.hard_label_weight * hard
        return total, zero, zero, zero, prediction, hard, no_logits

    def _intermediate(self, s_out, t_out, input_mask, counts):
        """(attention, hidden, embedding) MSE terms over the mapped layers."""
        attention = ops.zeros((), ms.float32)
        hidden = ops.zeros((), ms.float32)
        embedding = ops.zeros((), ms.float32)
        s_scores, t_scores = s_out[self.s_scores], t_out[self.t_scores]
        for s, t in self.attention_pairs:
            attention = attention + losses.attention_mse(s_scores[s], ops.stop_gradient(t_scores[t]), input_mask,
                                                         self.reference_parity, counts[1])
        s_hidden, t_hidden = s_out[self.s_hidden], t_out[self.t_hidden]
        for k, s, t in self.hidden_pairs:
            term = losses.hidden_mse(self._project(s_hidden[s], k), ops.stop_gradient(t_hidden[t]), input_mask,
                                     self.reference_parity, counts[0])
            if s == 0:
                embedding = embedding + term
            else:
                hidden = hidden + term
        return attention, hidden, embedding

    def _prediction(self, s_logits, t_logits, label_ids, scored_count):
        if self.task_type == "regression":
            return losses.mse(s_logits, t_logits)
        if self.task_type == "ner":
            return losses.token_soft_cross_entropy(s_logits, t_logits, label_ids, self.temperature,
                                                   self.temperature_squared, self.reference_parity, scored_count)
        return losses.soft_cross_entropy(s_logits, t_logits, self.temperature, self.temperature_squared,
                                         self.reference_parity)

    def _hard_loss(self, logits, label_ids, scored_count=None):
        if self.task_type == "regression":
            return losses.mse(logits.reshape(-1), label_ids.astype(ms.float32).reshape(-1))
        return losses.cross_entropy(logits, label_ids, scored_count if self.task_type == "ner" else None)
