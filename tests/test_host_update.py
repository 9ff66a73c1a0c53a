"""src/training/step.py HostUpdate (run.cpu_host_update): the optimizer update in numpy on the parameters' memory gives what
the graph update gives: clipped AdamWeightDecay, the optimizer's step, the dynamic loss scale, overflow skipping."""
import mindspore as ms
import numpy as np
import pytest

from src.config import BertConfig, DistillConfig, LossScaleConfig, StageConfig
from src.distill.loss import DistillLoss
from src.model.heads import BertForSequenceClassification
from src.training.step import TrainStep
from src.training.host_update import HostUpdate


def make_step(clip_mode="global", window=1000, max_grad_norm=1.0, max_scale=2.0 ** 24):
    cfg = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                     max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    ms.set_seed(1)
    loss_net = DistillLoss(BertForSequenceClassification(cfg, 2), None, "finetune", DistillConfig())
    stage = StageConfig(lr=1e-2, warmup_ratio=0.2, clip_mode=clip_mode, max_grad_norm=max_grad_norm,
                        loss_scale=LossScaleConfig(init=1024.0, window=window, max=max_scale))
    return TrainStep(loss_net, loss_net.optimizer_params(), stage, 20, graph=True, host_update=False)


def state(step):
    tensors = list(step.optimizer.parameters) + list(step.optimizer.moments1) + list(step.optimizer.moments2) + \
        [step.optimizer.global_step, step.scaler.scale_value, step.scaler.counter]
    return tensors


def batch():
    rng = np.random.default_rng(0)
    return [ms.Tensor(rng.integers(1, 99, (4, 8)).astype(np.int32)), ms.Tensor(np.zeros((4, 8), np.int32)),
            ms.Tensor(np.ones((4, 8), np.int32)), ms.Tensor(np.array([0, 1, 0, 1], np.int32))]


def both_updates(step, grads):
    """Apply the graph update and the host update to the same state and gradients; return both results."""
    tensors = state(step)
    before = [t.asnumpy().copy() for t in tensors]
    graph_out = [float(x) for x in step.graph_update(*grads)]
    graph_after = [t.asnumpy().copy() for t in tensors]
    for t, value in zip(tensors, before):
        t.asnumpy()[...] = value  # on CPU asnumpy() is a writable view of the parameter
    host_out = [float(x) for x in HostUpdate(step.optimizer, step.scaler, step.stage, step.total_steps)(*grads)]
    host_after = [t.asnumpy().copy() for t in tensors]
    return before, (graph_out, graph_after), (host_out, host_after), [t.name for t in tensors]


@pytest.mark.slow
@pytest.mark.parametrize("clip_mode,max_grad_norm", [("global", 1.0), ("global", 1e-3),
                                                     ("per_tensor", 1e-2)])
def test_host_update_equals_the_graph_update(clip_mode, max_grad_norm):
    ms.set_context(mode=ms.GRAPH_MODE)
    step = make_step(clip_mode, max_grad_norm=max_grad_norm)
    data = batch()
    for _ in range(3):  # non-zero moments and a warmed-up learning rate
        step.step(*data)
    _, grads = step.gradients(*data)
    before, (g_out, g_after), (h_out, h_after), names = both_updates(step, grads)
    np.testing.assert_allclose(h_out, g_out, rtol=1e-6)
    changed = 0
    for name, old, a, b in zip(names, before, g_after, h_after):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7, err_msg=name)
        changed += int(not np.array_equal(a, old))
    assert changed > len(names) // 2  # the update did move parameters and moments
    assert int(h_after[names.index("global_step")].reshape(-1)[0]) == 4


@pytest.mark.slow
def test_host_update_overflow_skips_and_halves_the_scale_then_grows_it():
    ms.set_context(mode=ms.GRAPH_MODE)
    step = make_step(window=2)
    data = batch()
    step.step(*data)
    _, grads = step.gradients(*data)
    grads = list(grads)
    bad = grads[0].asnumpy().copy()
    bad.reshape(-1)[0] = np.inf
    grads[0] = ms.Tensor(bad)
    before, (g_out, g_after), (h_out, h_after), names = both_updates(step, grads)
    assert g_out[0] == h_out[0] == 0.0  # not finite
    for name, old, a, b in zip(names, before, g_after, h_after):
        if name == "scale_value":
            assert float(a) == float(b) == float(old) / 2
        elif name == "counter":
            assert int(a) == int(b) == 0
        else:
            np.testing.assert_array_equal(b, old, err_msg=name)  # skipped: nothing moved
            np.testing.assert_array_equal(a, old, err_msg=name)
    # two clean steps with window 2 double the scale back
    host = TrainStep(step.loss_net, list(step.optimizer.parameters), step.stage, 20, graph=True, host_update=True)
    assert host.host_update is not None
    scales = [float(host.step(*data)[3]) for _ in range(2)]
    assert scales == [1024.0, 2048.0]


@pytest.mark.slow
def test_the_loss_scale_stops_growing_at_its_max_in_both_updates():
    """window 1: every clean step doubles the scale, up to loss_scale.max (2048 here) and no further."""
    ms.set_context(mode=ms.GRAPH_MODE)
    data = batch()
    graph = make_step(window=1, max_scale=2048.0)
    assert [float(graph.step(*data)[3]) for _ in range(3)] == [2048.0, 2048.0, 2048.0]
    host_step = make_step(window=1, max_scale=2048.0)
    host = TrainStep(host_step.loss_net, list(host_step.optimizer.parameters), host_step.stage, 20, graph=True,
                     host_update=True)
    assert host.host_update is not None
    assert [float(host.step(*data)[3]) for _ in range(3)] == [2048.0, 2048.0, 2048.0]
    uncapped = make_step(window=1)
    assert [float(uncapped.step(*data)[3]) for _ in range(3)] == [2048.0, 4096.0, 8192.0]


def test_cpu_training_uses_the_host_update_on_one_device_only():
    from src.config import RunConfig
    from src.infra.backend import Backend

    step = make_step()
    assert step.host_update is None  # host_update=False asked for the graph
    loss_net = step.loss_net
    assert Backend.for_training(RunConfig(), "CPU").host_update  # what CPU training stages pass
    assert TrainStep(loss_net, loss_net.optimizer_params(), step.stage, 20, host_update=True).host_update is not None
    with pytest.raises(ValueError, match="host_update: the host update serves one device"):
        TrainStep(loss_net, loss_net.optimizer_params(), step.stage, 20, host_update=True, distributed=True)
