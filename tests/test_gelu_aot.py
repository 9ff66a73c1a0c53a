"""The AOT kernels (src/infra/aot.py): exact GELU (the same function as erf GELU to float32 rounding, its gradient),
the attention-head swap and LayerNorm with its backward; both execution modes, use inside BERT and training, and
the fallback when they cannot be compiled."""
import dataclasses
import math
import os
import subprocess
import sys

import numpy as np
import mindspore as ms
import pytest
from mindspore import Tensor, nn

from src.infra import aot as gelu_aot
from src.infra.backend import Backend
from src.model.bert import BertModel, activation
from conftest import ROOT


def reference(x):
    x = x.astype(np.float64)
    phi = 0.5 * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))
    grad = phi + x * np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    return x * phi, grad


def sample():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(60_000) * 3, np.linspace(-10, 10, 20_001), [0.0, -0.0, 1.0, -1.0, 14.5]])
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def kernel():
    return gelu_aot.gelu_ops(strict=True)  # the CI machine has g++: building must work, not fall back


def test_forward_matches_float64_erf_gelu_to_float32_rounding(kernel, mode):
    x = sample()
    want, _ = reference(x)
    got = gelu_aot.GeluAOT(strict=True)(Tensor(x)).asnumpy()
    builtin = nn.GELU(approximate=False)(Tensor(x)).asnumpy()
    assert np.abs(got - want).max() <= 1e-6
    assert np.abs(got - builtin).max() <= 2e-6  # MindSpore's own kernel is 4.5e-7 off float64 itself
    assert np.isnan(gelu_aot.GeluAOT(strict=True)(Tensor(np.array([np.nan], np.float32))).asnumpy()).all()
    assert gelu_aot.GeluAOT(strict=True)(Tensor(np.array([np.inf], np.float32))).asnumpy()[0] == np.inf


def test_gradient_matches_the_analytic_derivative(kernel, mode):
    x = sample()
    dy = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    _, grad = reference(x)

    class Weighted(nn.Cell):
        def __init__(self, act):
            super().__init__()
            self.act = act

        def construct(self, v, w):
            return (self.act(v) * w).sum()

    got = ms.grad(Weighted(gelu_aot.GeluAOT(strict=True)))(Tensor(x), Tensor(dy)).asnumpy()
    assert np.abs(got - grad * dy).max() <= 2e-6


@pytest.mark.slow
def test_bert_with_the_kernel_computes_the_same_function(tiny_config, kernel, mode):
    config = dataclasses.replace(tiny_config, hidden_act="gelu", hidden_dropout_prob=0.0,
                                 attention_probs_dropout_prob=0.0)
    ms.set_seed(4)
    builtin_net = BertModel(config)
    fast_net = BertModel(config, Backend(gelu="aot"))
    assert isinstance(fast_net.encoder.layer[0].intermediate.act, gelu_aot.GeluAOT)
    assert isinstance(builtin_net.encoder.layer[0].intermediate.act, nn.GELU)
    ms.load_param_into_net(fast_net, {p.name: p for p in builtin_net.get_parameters()})
    rng = np.random.default_rng(2)
    ids = Tensor(rng.integers(1, 99, (3, 16)).astype(np.int32))
    types, mask = Tensor(np.zeros((3, 16), np.int32)), Tensor(np.ones((3, 16), np.int32))
    a = builtin_net(ids, types, mask)[0].asnumpy()
    b = fast_net(ids, types, mask)[0].asnumpy()
    assert np.abs(a - b).max() <= 1e-5


def test_missing_compiler_falls_back_or_raises(tmp_path):
    """Without a compiler (in a fresh process, so nothing is built yet): strict building raises naming the
    compiler; otherwise the cell computes MindSpore's GeLU and the training backend falls back."""
    code = """
import numpy as np, pytest
from mindspore import Tensor, nn
from src.config import RunConfig
from src.infra import aot
from src.infra.backend import Backend
with pytest.raises(aot.KernelBuildError, match="/nonexistent/g\\+\\+"):
    aot.gelu_ops(strict=True)
cell = aot.GeluAOT()
assert not cell.use_aot and not aot.available()
x = np.linspace(-3, 3, 7).astype(np.float32)
np.testing.assert_array_equal(cell(Tensor(x)).asnumpy(), nn.GELU(approximate=False)(Tensor(x)).asnumpy())
assert Backend.for_training(RunConfig(), "CPU") == Backend(gelu="builtin", heads="views", host_update=True)
print("ok")
"""
    env = dict(os.environ, CXX="/nonexistent/g++", TINYBERT_KERNEL_CACHE=str(tmp_path), PYTHONPATH=ROOT, GLOG_v="3")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


def test_library_is_cached_by_content(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYBERT_KERNEL_CACHE", str(tmp_path))
    first = gelu_aot.build_library()
    stamp = (tmp_path / first.split("/")[-1]).stat().st_mtime_ns
    assert gelu_aot.build_library() == first and (tmp_path / first.split("/")[-1]).stat().st_mtime_ns == stamp
    assert not [p for p in tmp_path.iterdir() if p.suffix == ".so" and p.name != first.split("/")[-1]]


def test_training_backend_uses_the_kernels_on_cpu_only_and_the_portable_one_builds_mindspores_ops(kernel):
    from src.config import RunConfig

    backend = Backend.for_training(RunConfig(cpu_gelu="aot"), "CPU")
    assert backend == Backend(gelu="aot", heads="swap", layer_norm="aot", host_update=True)
    assert isinstance(activation("gelu", backend), gelu_aot.GeluAOT)
    # run.cpu_gelu auto (the default): the kernel measured faster here (tests/test_levers.py); data parallel: aot
    assert Backend.for_training(RunConfig(), "CPU").gelu in ("aot", "builtin")
    assert Backend.for_training(RunConfig(), "CPU", distributed=True).gelu == "aot"
    assert Backend.for_training(RunConfig(cpu_gelu="builtin", cpu_host_update=False), "CPU") == \
        Backend(gelu="builtin", heads="swap", layer_norm="aot", host_update=False)
    assert Backend.for_training(RunConfig(), "CPU", distributed=True).host_update is False  # the graph update
    assert Backend.for_training(RunConfig(), "GPU") == Backend()  # run.precision auto: float32 on GPU
    assert Backend.for_training(RunConfig(), "Ascend") == Backend(compute_dtype="float16")  # and float16 on Ascend
    assert isinstance(activation("gelu"), nn.GELU)  # export and evaluation: MindSpore's GeLU
    with pytest.raises(ValueError, match="Backend.heads: got 'fast'"):
        Backend(heads="fast")
    with pytest.raises(ValueError, match="Backend.layer_norm: got 'fused'"):
        Backend(layer_norm="fused")


def test_swap_axes12_kernel_and_its_gradient(kernel, mode):
    """SwapAxes12 (the attention-head split/merge of training on CPU): numpy's transpose(0, 2, 1, 3), odd sizes
    included (rows split over threads), and its gradient is the same swap of the upstream gradient."""
    op = gelu_aot.swap_axes12_op()
    assert op is not None
    rng = np.random.default_rng(3)
    for shape in [(2, 3, 4, 5), (1, 1, 1, 1), (3, 257, 12, 64)]:
        x = rng.standard_normal(shape).astype(np.float32)
        np.testing.assert_array_equal(op(Tensor(x)).asnumpy(), x.transpose(0, 2, 1, 3))
    x = rng.standard_normal((2, 7, 3, 5)).astype(np.float32)
    w = rng.standard_normal((2, 3, 7, 5)).astype(np.float32)

    class Weighted(nn.Cell):
        def __init__(self):
            super().__init__()
            self.op = op

        def construct(self, v, u):
            return (self.op(v) * u).sum()

    np.testing.assert_array_equal(ms.grad(Weighted())(Tensor(x), Tensor(w)).asnumpy(), w.transpose(0, 2, 1, 3))


@pytest.mark.slow
@pytest.mark.parametrize("use_kernel", [True, False])
def test_training_attention_kernels_give_the_same_bert(kernel, use_kernel):
    """BERT built for training on CPU (Backend heads "swap" and layer_norm "aot": the AOT kernels, or "views" and
    "builtin": what is used without them) gives the outputs and gradients of the BERT built for export (ops.transpose), in graph mode."""
    from src.config import BertConfig

    ms.set_context(mode=ms.GRAPH_MODE)
    config = BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=37, max_position_embeddings=64, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    ms.set_seed(4)
    plain = BertModel(config)
    fast = BertModel(config, Backend(heads="swap" if use_kernel else "views",
                                     layer_norm="aot" if use_kernel else "builtin"))
    attention = [cell for _, cell in fast.cells_and_names() if type(cell).__name__ == "BertSelfAttention"]
    assert attention and all(a.use_swap == use_kernel and a.use_views != use_kernel for a in attention)
    norms = [cell for _, cell in fast.cells_and_names() if type(cell).__name__ == "LayerNorm"]
    assert len(norms) == 5 and all(n.use_aot == use_kernel for n in norms)  # embeddings + 2 per layer
    assert [p.name for p in fast.get_parameters()] == [p.name for p in plain.get_parameters()]  # same checkpoints
    ms.load_param_into_net(fast, {p.name: ms.Parameter(p.data.copy(), p.name) for p in plain.get_parameters()})
    rng = np.random.default_rng(5)
    ids = Tensor(rng.integers(0, 99, (3, 11)).astype(np.int32))
    mask = np.ones((3, 11), np.int32)
    mask[1, 7:] = 0
    mask, types = Tensor(mask), Tensor(np.zeros((3, 11), np.int32))

    class Loss(nn.Cell):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def construct(self, a, b, c):
            out = self.net(a, b, c)
            return (out[0] ** 2).sum() + (out[3][1] * 1e-3).sum()

    for got, want in zip(fast(ids, types, mask)[2], plain(ids, types, mask)[2]):
        np.testing.assert_allclose(got.asnumpy(), want.asnumpy(), atol=1e-5)
    grads_fast = ms.grad(Loss(fast), grad_position=None, weights=fast.trainable_params())(ids, types, mask)
    grads_plain = ms.grad(Loss(plain), grad_position=None, weights=plain.trainable_params())(ids, types, mask)
    for p, a, b in zip(fast.trainable_params(), grads_fast, grads_plain):
        np.testing.assert_allclose(a.asnumpy(), b.asnumpy(), atol=1e-4, rtol=1e-4, err_msg=p.name)


def layer_norm_reference(x, gamma, beta, eps, dy):
    """LayerNorm over the last axis and its gradients, in float64."""
    x, gamma, beta, dy = (a.astype(np.float64) for a in (x, gamma, beta, dy))
    mean = x.mean(-1, keepdims=True)
    rstd = 1.0 / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + eps)
    xhat = (x - mean) * rstd
    g = dy * gamma
    dx = rstd * (g - g.mean(-1, keepdims=True) - xhat * (g * xhat).mean(-1, keepdims=True))
    rows = tuple(range(x.ndim - 1))
    return xhat * gamma + beta, dx, (dy * xhat).sum(rows), dy.sum(rows)


@pytest.mark.parametrize("shape", [(3, 5, 7), (2, 33), (8, 128, 312), (4, 64, 768)])
def test_layer_norm_kernel_and_its_gradients_match_float64(kernel, mode, shape):
    """LayerNormAotFwd/Bwd against float64: H not a multiple of the 16 accumulator lanes, and rows enough to be split
    over threads; gradients for x, gamma and beta through the Custom op's bprop."""
    op = gelu_aot.layer_norm_op()
    assert op is not None
    rng = np.random.default_rng(7)
    h = shape[-1]
    x = (rng.standard_normal(shape) * 3 + 1.5).astype(np.float32)
    gamma, beta = rng.standard_normal(h).astype(np.float32), rng.standard_normal(h).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    eps = 1e-12
    want_y, want_dx, want_dgamma, want_dbeta = layer_norm_reference(x, gamma, beta, eps, dy)
    eps_t = Tensor([eps], ms.float32)
    np.testing.assert_allclose(op(Tensor(x), Tensor(gamma), Tensor(beta), eps_t).asnumpy(), want_y, atol=2e-5, rtol=0)

    class Weighted(nn.Cell):
        def construct(self, v, g, b, u):
            return (op(v, g, b, eps_t) * u).sum()

    dx, dgamma, dbeta = ms.grad(Weighted(), grad_position=(0, 1, 2))(Tensor(x), Tensor(gamma), Tensor(beta),
                                                                      Tensor(dy))
    scale = np.sqrt(shape[0] * (shape[1] if len(shape) == 3 else 1))  # sums over rows grow like sqrt(rows)
    np.testing.assert_allclose(dx.asnumpy(), want_dx, atol=2e-5, rtol=0)
    np.testing.assert_allclose(dgamma.asnumpy(), want_dgamma, atol=2e-5 * scale, rtol=0)
    np.testing.assert_allclose(dbeta.asnumpy(), want_dbeta, atol=2e-5 * scale, rtol=0)


def test_layer_norm_kernel_is_the_same_on_one_thread_and_several(kernel, monkeypatch):
    """The backward's dgamma/dbeta sum per-thread partials; any thread count gives the same values to rounding."""
    op = gelu_aot.layer_norm_op()
    rng = np.random.default_rng(8)
    x, dy = rng.standard_normal((16, 128, 312)).astype(np.float32), rng.standard_normal((16, 128, 312))
    gamma, beta = Tensor(np.ones(312, np.float32)), Tensor(np.zeros(312, np.float32))
    eps_t = Tensor([1e-12], ms.float32)

    class Weighted(nn.Cell):
        def construct(self, v, g, b, u):
            return (op(v, g, b, eps_t) * u).sum()

    results = []
    for threads in ("1", "2", "5"):
        monkeypatch.setenv("GELU_AOT_NUM_THREADS", threads)
        results.append([t.asnumpy() for t in ms.grad(Weighted(), grad_position=(0, 1, 2))(
            Tensor(x), gamma, beta, Tensor(dy.astype(np.float32)))])
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_allclose(a, b, atol=1e-3, rtol=1e-5)
