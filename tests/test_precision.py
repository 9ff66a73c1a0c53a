"""run.precision: mixed precision for Ascend / GPU (model.bert.MixedDense) is built and checked on CPU as far as
it runs here (float16 kernels exist on CPU; bfloat16 ones do not), and the config refuses what cannot train."""
import numpy as np
import pytest

import mindspore as ms

from src.config import BertConfig, ConfigError, load_config, resolve_precision
from src.infra.backend import Backend
from src.model.bert import BertModel, MixedDense

TINY = dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
            max_position_embeddings=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


@pytest.mark.parametrize("precision,device,expected", [
    ("auto", "Ascend", "float16"), ("auto", "GPU", "float32"), ("auto", "CPU", "float32"),
    ("fp16", "Ascend", "float16"), ("fp16", "GPU", "float16"), ("bf16", "GPU", "bfloat16"), ("fp32", "Ascend", "float32"),
])
def test_precision_per_device(precision, device, expected):
    assert resolve_precision(precision, device) == expected


@pytest.mark.parametrize("precision,device,words", [("fp16", "CPU", "does not train on CPU"),
                                                    ("bf16", "CPU", "does not train on CPU"),
                                                    ("bf16", "Ascend", "Ascend 910 computes float16")])
def test_config_refuses_a_precision_the_device_cannot_train(tmp_path, precision, device, words):
    config = tmp_path / "gd.yaml"
    config.write_text("gd:\n  batch_size: 8\n")
    with pytest.raises(ConfigError) as err:
        load_config(str(config), [f"--run.precision={precision}", f"--run.device_target={device}"], kind="gd")
    assert "run.precision" in str(err.value) and words in str(err.value)


def test_data_sink_is_accepted_everywhere_and_needs_one_batch_shape_on_devices(tmp_path):
    config = tmp_path / "gd.yaml"
    config.write_text("gd:\n  batch_size: 8\n")
    assert load_config(str(config), ["--run.data_sink=true", "--run.device_target=GPU"], kind="gd").run.data_sink
    with pytest.raises(ConfigError, match="needs one batch shape"):
        load_config(str(config), ["--run.data_sink=true", "--run.device_target=Ascend",
                                  "--data.bucket_boundaries=[32]"], kind="gd")
    assert load_config(str(config), ["--run.data_sink=true"], kind="gd").run.data_sink is True  # CPU: a warning


def test_ascend_backend_builds_float16_products_with_float32_parameters_and_outputs():
    from src.config import RunConfig

    backend = Backend.for_training(RunConfig(device_target="Ascend"), "Ascend")
    assert backend == Backend(compute_dtype="float16")
    model = BertModel(BertConfig(**TINY), backend)
    dense = [cell for _, cell in model.cells_and_names() if isinstance(cell, ms.nn.Dense)]
    mixed = [cell for cell in dense if isinstance(cell, MixedDense)]
    assert len(mixed) == 2 * 6  # q, k, v, attention output, FFN in and out per layer; the pooler stays float32
    assert all(p.dtype == ms.float32 for p in model.get_parameters())


def test_float16_products_compute_close_to_float32_and_train():
    """Same weights, float32 vs float16 products (PYNATIVE on CPU): outputs float32 and within fp16 rounding;
    gradients reach every parameter, finite and float32."""
    mode = ms.get_context("mode")
    ms.set_context(mode=ms.PYNATIVE_MODE)
    try:
        _compare_and_train()
    finally:
        ms.set_context(mode=mode)


def _compare_and_train():
    ms.set_seed(3)
    full = BertModel(BertConfig(**TINY))
    mixed = BertModel(BertConfig(**TINY), Backend(compute_dtype="float16"))
    ms.load_param_into_net(mixed, {p.name: ms.Parameter(p.data.copy(), p.name) for p in full.get_parameters()},
                           strict_load=True)
    rng = np.random.default_rng(0)
    ids = ms.Tensor(rng.integers(1, 120, (2, 16)).astype(np.int32))
    segments = ms.Tensor(np.zeros((2, 16), np.int32))
    mask = ms.Tensor(np.concatenate([np.ones((2, 12)), np.zeros((2, 4))], 1).astype(np.int32))
    a, b = full(ids, segments, mask), mixed(ids, segments, mask)
    for x, y in zip(a[2] + a[3], b[2] + b[3]):
        assert y.dtype == ms.float32
    np.testing.assert_allclose(b[0].asnumpy(), a[0].asnumpy(), atol=2e-2)
    assert np.abs(b[0].asnumpy() - a[0].asnumpy()).max() > 0  # the products did run in float16

    params = mixed.trainable_params()
    grads = ms.grad(lambda i, s, m: mixed(i, s, m)[0].sum(), grad_position=None, weights=params)(ids, segments, mask)
    assert len(grads) == len(params)
    for param, grad in zip(params, grads):
        assert grad.dtype == ms.float32 and grad.shape == param.shape and np.isfinite(grad.asnumpy()).all(), param.name
