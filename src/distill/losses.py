"""TinyBERT distillation losses: small pure functions on MindSpore tensors (GRAPH and PYNATIVE).

Shapes: B batch, S sequence, N heads, H hidden, C labels. `mask` is the [B, S] 1/0 attention mask of the batch.

Default reductions average only over real tokens. `reference_parity=True` reproduces the original TinyBERT
(huawei-noah task_distill.py and the MindSpore model zoo) exactly:
- attention: scores <= -100 (masked keys, which sit near -10000) are set to 0 in both nets, then the mean over
  every element, padded query rows included;
- hidden states: the mean over every element, padding included;
- soft cross-entropy: the mean over B x C elements (the per-example cross-entropy divided by C).
"""
from __future__ import annotations

import mindspore as ms
from mindspore import ops

from src.metrics import IGNORE_INDEX

PARITY_SCORE_FLOOR = -100.0  # the reference zeroes attention scores at or below this value


# sum(x ** 2) over a whole tensor as one [1, n] x [n, 1] product (BLAS): MindSpore's CPU ReduceSum over a large
# tensor, and the Tile its gradient broadcasts with, are slow. One attention-score term at batch 8 x 12 heads x
# 128 x 128 took 16 ms forward + backward this way against 55 ms as square + sum (a one-off timing, GRAPH mode, 2
# cores shared with a training job; the term runs once per mapped layer in GD and phase 1).
# bench/bench_train_step.py --breakdown times the student part it is in.
_NT_MATMUL = ops.MatMul(transpose_b=True)


def _sum_of_squares(x):
    flat = x.reshape(1, -1)
    return _NT_MATMUL(flat, flat).reshape(())


def _valid_pairs(mask):
    """[B, S] -> [B, 1, S, S] float: 1 where both the query and the key are real tokens."""
    m = mask.astype(ms.float32)
    return (m.expand_dims(2) * m.expand_dims(1)).expand_dims(1)


def attention_mse(student_scores, teacher_scores, mask, reference_parity: bool = False, pair_count=None):
    """MSE between [B, N, S, S] pre-softmax attention scores of one student layer and one teacher layer.

    Default: mean over heads and the (query, key) pairs where both are real tokens. Padded keys carry the
    -10000 mask in both nets, so including them would only add noise from the near-equal large values.
    pair_count: the number of such (query, key) pairs per head to divide by, when it is not this batch's own (data
    parallel: the global batch's count / world size, so that the ranks' mean is the global batch's loss).
    """
    if reference_parity:
        s = ops.where(student_scores <= PARITY_SCORE_FLOOR, ops.zeros_like(student_scores), student_scores)
        t = ops.where(teacher_scores <= PARITY_SCORE_FLOOR, ops.zeros_like(teacher_scores), teacher_scores)
        return _sum_of_squares(s - t) / float(s.size)
    # explicit broadcast: MindSpore's CPU graph runtime keeps the buffer of a broadcasting Mul alive
    pairs = ops.broadcast_to(_valid_pairs(mask), student_scores.shape)
    total = _sum_of_squares((student_scores - teacher_scores) * pairs)  # pairs is 0/1
    if pair_count is None:  # sum over (i, j) of m_i m_j = (sum of m)^2 per example, from [B, S] not [B, N, S, S]
        lengths = mask.astype(ms.float32).sum(-1)
        count = (lengths * lengths).sum() * student_scores.shape[1]
    else:
        count = pair_count * student_scores.shape[1]
    return total / ops.maximum(count, 1.0)


def hidden_mse(student_hidden, teacher_hidden, mask, reference_parity: bool = False, token_count=None):
    """MSE between [B, S, H] (projected) student and teacher hidden states; default: real tokens only
    (token_count: the number of real tokens to divide by, when it is not this batch's own; see attention_mse)."""
    if reference_parity:
        return _sum_of_squares(student_hidden - teacher_hidden) / float(student_hidden.size)
    m = mask.astype(ms.float32)
    total = _sum_of_squares((student_hidden - teacher_hidden) * ops.broadcast_to(m.expand_dims(-1),
                                                                                 student_hidden.shape))
    count = (m.sum() if token_count is None else token_count) * student_hidden.shape[-1]
    return total / ops.maximum(count, 1.0)


def soft_cross_entropy(student_logits, teacher_logits, temperature: float = 1.0,
                       temperature_squared: bool = False, reference_parity: bool = False):
    """Cross-entropy of softmax(teacher / T) against log_softmax(student / T) for [B, C] logits.

    Default: summed over classes, averaged over examples (the usual KD loss), times T^2 if asked
    (Hinton et al.: keeps gradient magnitudes comparable across temperatures).
    """
    target = ops.softmax(teacher_logits / temperature, axis=-1)
    log_prob = ops.log_softmax(student_logits / temperature, axis=-1)
    per_class = -target * log_prob
    loss = ops.mean(per_class) if reference_parity else ops.mean(per_class.sum(-1))
    return loss * (temperature * temperature) if temperature_squared else loss


def token_soft_cross_entropy(student_logits, teacher_logits, label_ids, temperature: float = 1.0,
                             temperature_squared: bool = False, reference_parity: bool = False, scored_count=None):
    """Soft cross-entropy per token for [B, S, C] logits (NER): averaged over scored tokens.

    Scored tokens are those whose label id is not IGNORE_INDEX, so [CLS], [SEP] and padding are excluded.
    reference_parity: every position counts and the mean is over B x S x C, as the reference did.
    """
    target = ops.softmax(teacher_logits / temperature, axis=-1)
    log_prob = ops.log_softmax(student_logits / temperature, axis=-1)
    per_class = -target * log_prob
    if reference_parity:
        loss = ops.mean(per_class)
    else:
        scored = (label_ids != IGNORE_INDEX).astype(ms.float32)
        count = scored.sum() if scored_count is None else scored_count
        loss = (per_class.sum(-1) * scored).sum() / ops.maximum(count, 1.0)
    return loss * (temperature * temperature) if temperature_squared else loss


def cross_entropy(logits, label_ids, scored_count=None):
    """Hard-label cross-entropy: [B, C] logits with [B] labels, or [B, S, C] with [B, S] labels where
    IGNORE_INDEX positions are skipped. Mean over scored positions."""
    num_classes = logits.shape[-1]
    flat_logits = logits.reshape(-1, num_classes)
    flat_labels = label_ids.reshape(-1)
    scored = (flat_labels != IGNORE_INDEX).astype(ms.float32)
    safe_labels = ops.maximum(flat_labels, 0).astype(ms.int32)
    log_prob = ops.log_softmax(flat_logits, axis=-1)
    picked = ops.gather_elements(log_prob, 1, safe_labels.expand_dims(-1)).squeeze(-1)
    count = scored.sum() if scored_count is None else scored_count
    return -(picked * scored).sum() / ops.maximum(count, 1.0)


def mse(student, teacher):
    """Plain mean squared error (regression logits against teacher outputs or float labels)."""
    return ops.mean(ops.square(student - teacher))
