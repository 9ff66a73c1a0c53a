"""src/ship/onnx_graph.py: the ONNX graph written from the weights gives the MindSpore network's logits for every
head and activation at any batch and sequence length (one row of one token included), in Hugging Face's input
convention, and holds no constant that pins a batch or sequence size."""
import numpy as np
import pytest

import mindspore as ms
import onnx
import onnxruntime as ort

from src.config import BertConfig
from src.model.checkpoint import named_parameters
from src.model.heads import LogitsOnly, build_model
from src.ship.export import example_inputs
from src.ship.format import ExportError
from src.ship.onnx_graph import HF_INPUT_NAMES, build_onnx

SHAPES = ((3, 5), (1, 1), (4, 13), (2, 64))
HEADS = [("sequence_classification", {"num_labels": 3, "pooled_activation": "relu"}),
         ("sequence_classification", {"num_labels": 3, "pooled_activation": "none"}),
         ("token_classification", {"num_labels": 5}), ("masked_lm", {})]


def config(act):
    # initializer_range 0.3: logits of order 1, so 1e-5 means something; sizes unlike any B or S used
    return BertConfig(vocab_size=99, hidden_size=24, num_hidden_layers=2, num_attention_heads=3,
                      intermediate_size=40, max_position_embeddings=64, type_vocab_size=2, hidden_act=act,
                      initializer_range=0.3, layer_norm_eps=1e-7)


@pytest.mark.parametrize("act", ["gelu", "gelu_tanh", "relu"])
@pytest.mark.parametrize("head,kwargs", HEADS, ids=["cls_relu", "cls_none", "token", "mlm"])
def test_graph_gives_the_networks_logits_at_every_shape(act, head, kwargs):
    ms.set_seed(1)
    cfg = config(act)
    net = build_model(cfg, head, **kwargs)
    net.set_train(False)
    model = build_onnx({n: p.asnumpy() for n, p in named_parameters(net)}, cfg, dict(type=head, **kwargs))
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == list(HF_INPUT_NAMES)
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.INT64 for i in model.graph.input)
    assert [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim] == ["batch_size",
                                                                                      "sequence_length"]
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Erf") == (2 if act == "gelu" else 0) + (1 if act == "gelu" and head == "masked_lm" else 0)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    wrapper = LogitsOnly(net)
    scale = 0.0
    for batch, seq in SHAPES:
        ids, types, mask = example_inputs(cfg, batch, seq, seed=batch)
        ref = wrapper(ms.Tensor(ids), ms.Tensor(types), ms.Tensor(mask)).asnumpy()
        got = session.run(["logits"], {"input_ids": ids.astype(np.int64), "attention_mask": mask.astype(np.int64),
                                       "token_type_ids": types.astype(np.int64)})[0]
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() <= 1e-4, (batch, seq)  # optimum's ATOL_FOR_VALIDATION for BERT
        scale = max(scale, float(np.abs(ref).max()))
    assert scale > 0.3  # large enough logits for the bound to mean something


def test_no_constant_pins_a_batch_or_sequence_size():
    cfg = config("gelu")
    net = build_model(cfg, "token_classification", num_labels=5)
    model = build_onnx({n: p.asnumpy() for n, p in named_parameters(net)}, cfg,
                       {"type": "token_classification", "num_labels": 5})
    consts = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    shapes = [consts[n.input[1]].tolist() for n in model.graph.node if n.op_type == "Reshape"]
    assert shapes and all(s in ([0, 0, 3, 8], [0, 0, 24]) for s in shapes)  # copy B and S, split/merge heads
    assert not [n for n in model.graph.node if n.op_type in ("Expand", "ConstantOfShape", "Tile")]


def test_heads_without_logits_and_old_opsets_are_refused():
    cfg = config("gelu")
    params = {n: p.asnumpy() for n, p in named_parameters(build_model(cfg, "backbone"))}
    with pytest.raises(ExportError, match="a backbone network has no logits to export"):
        build_onnx(params, cfg, {"type": "backbone"})
    with pytest.raises(ExportError, match="onnx opset 13: this graph needs >= 17"):
        build_onnx(params, cfg, {"type": "masked_lm"}, opset=13)
