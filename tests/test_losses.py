"""Distillation losses against independent numpy references, in PYNATIVE and GRAPH mode."""
import numpy as np
import mindspore as ms
import pytest
from mindspore import nn

from src.distill import losses

RNG = np.random.default_rng(7)
B, N, S, H, C = 3, 2, 5, 4, 3
MASK = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]], np.int32)


def _scores(mask):
    x = RNG.normal(size=(B, N, S, S)).astype(np.float32)
    return x + (1.0 - mask[:, None, None, :]) * -10000.0  # the model's additive key mask


def _np_softmax(x, axis=-1):
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


class Wrap(nn.Cell):
    """Runs a loss function as a Cell so GRAPH mode compiles it."""

    def __init__(self, fn, **kwargs):
        super().__init__()
        self.fn = fn
        self.kwargs = kwargs

    def construct(self, *args):
        return self.fn(*args, **self.kwargs)


def run(fn, *arrays, **kwargs):
    tensors = [ms.Tensor(a) for a in arrays]
    return float(Wrap(fn, **kwargs)(*tensors).asnumpy())


def test_attention_mse_masks_padding(mode):
    s, t = _scores(MASK), _scores(MASK)
    got = run(losses.attention_mse, s, t, MASK)
    pairs = (MASK[:, :, None] * MASK[:, None, :])[:, None]  # [B, 1, S, S]
    expected = ((s - t) ** 2 * pairs).sum() / (pairs.sum() * N)
    assert got == pytest.approx(expected, rel=1e-5)
    # Padded positions do not matter: change them wildly, the loss stays the same.
    s2 = s.copy()
    s2[1, :, 3:, :] += 50.0
    s2[2, :, :, 2:] -= 7.0
    assert run(losses.attention_mse, s2, t, MASK) == pytest.approx(got, rel=1e-5)


def test_attention_mse_reference_parity(mode):
    s, t = _scores(MASK), _scores(MASK)
    got = run(losses.attention_mse, s, t, MASK, reference_parity=True)
    zero = lambda x: np.where(x <= -100.0, 0.0, x)  # noqa: E731  the reference's Select
    expected = np.mean((zero(s) - zero(t)) ** 2)  # every element, padded query rows included
    assert got == pytest.approx(expected, rel=1e-5)
    assert got != pytest.approx(run(losses.attention_mse, s, t, MASK), rel=1e-3)


def test_hidden_mse(mode):
    s, t = RNG.normal(size=(B, S, H)).astype(np.float32), RNG.normal(size=(B, S, H)).astype(np.float32)
    m = MASK[:, :, None]
    assert run(losses.hidden_mse, s, t, MASK) == pytest.approx(((s - t) ** 2 * m).sum() / (m.sum() * H), rel=1e-5)
    assert run(losses.hidden_mse, s, t, MASK, reference_parity=True) == pytest.approx(np.mean((s - t) ** 2), rel=1e-5)


@pytest.mark.parametrize("temperature,squared", [(1.0, False), (2.0, False), (2.0, True)])
def test_soft_cross_entropy(mode, temperature, squared):
    s, t = RNG.normal(size=(B, C)).astype(np.float32), RNG.normal(size=(B, C)).astype(np.float32)
    p = _np_softmax(t / temperature)
    log_q = np.log(_np_softmax(s / temperature))
    per_example = -(p * log_q).sum(-1)
    factor = temperature ** 2 if squared else 1.0
    got = run(losses.soft_cross_entropy, s, t, temperature=temperature, temperature_squared=squared)
    assert got == pytest.approx(per_example.mean() * factor, rel=1e-5)
    parity = run(losses.soft_cross_entropy, s, t, temperature=temperature, temperature_squared=squared,
                 reference_parity=True)
    assert parity == pytest.approx(per_example.mean() / C * factor, rel=1e-5)  # mean over B x C, as the reference


def test_soft_cross_entropy_is_minimal_at_teacher(mode):
    t = RNG.normal(size=(B, C)).astype(np.float32)
    at_teacher = run(losses.soft_cross_entropy, t, t)
    elsewhere = run(losses.soft_cross_entropy, t + RNG.normal(size=(B, C)).astype(np.float32), t)
    entropy = -(_np_softmax(t) * np.log(_np_softmax(t))).sum(-1).mean()
    assert at_teacher == pytest.approx(entropy, rel=1e-5) and elsewhere > at_teacher


def test_token_soft_cross_entropy_skips_ignored_positions(mode):
    s, t = RNG.normal(size=(B, S, C)).astype(np.float32), RNG.normal(size=(B, S, C)).astype(np.float32)
    labels = np.where(MASK == 1, 1, -1).astype(np.int32)
    labels[:, 0] = -1  # [CLS]
    per_token = -(_np_softmax(t) * np.log(_np_softmax(s))).sum(-1)
    scored = labels != -1
    got = run(losses.token_soft_cross_entropy, s, t, labels)
    assert got == pytest.approx(per_token[scored].mean(), rel=1e-5)
    parity = run(losses.token_soft_cross_entropy, s, t, labels, reference_parity=True)
    assert parity == pytest.approx(per_token.mean() / C, rel=1e-5)


def test_cross_entropy(mode):
    logits = RNG.normal(size=(B, C)).astype(np.float32)
    labels = np.array([0, 2, 1], np.int32)
    log_p = np.log(_np_softmax(logits))
    assert run(losses.cross_entropy, logits, labels) == pytest.approx(-log_p[np.arange(B), labels].mean(), rel=1e-5)
    token_logits = RNG.normal(size=(B, S, C)).astype(np.float32)
    token_labels = RNG.integers(0, C, (B, S)).astype(np.int32)
    token_labels[MASK == 0] = -1
    log_p = np.log(_np_softmax(token_logits))
    picked = np.take_along_axis(log_p, np.maximum(token_labels, 0)[..., None], -1)[..., 0]
    expected = -picked[token_labels != -1].mean()
    assert run(losses.cross_entropy, token_logits, token_labels) == pytest.approx(expected, rel=1e-5)


def test_mse(mode):
    a, b = RNG.normal(size=(B, 1)).astype(np.float32), RNG.normal(size=(B, 1)).astype(np.float32)
    assert run(losses.mse, a, b) == pytest.approx(np.mean((a - b) ** 2), rel=1e-5)
