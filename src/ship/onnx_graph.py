"""An ONNX graph written from a checkpoint's weights with `onnx.helper`: dynamic batch and sequence length, in
Hugging Face's ONNX convention (optimum's BERT export).

    inputs   input_ids, attention_mask, token_type_ids   int64 ["batch_size", "sequence_length"]
    output   logits  float32 ["batch_size", C] (sequence classification)
                     or ["batch_size", "sequence_length", C] (token classification; V for masked LM)

Why not MindSpore's ONNX exporter: it traces one shape and writes B and S into constants (position ids, every
head-splitting Reshape, the mask broadcast), it refuses dynamic inputs ("Can not find key Shape in convert map")
and cannot write Erf. This graph holds no shape constant: positions are Range(0, S), every Reshape copies
batch and sequence dims with 0, MatMul broadcasts over [B, S]. The same math as src/model/bert.py, with what can
differ taken from the checkpoint (layer_norm_eps, hidden_act, the head's pooled_activation, the additive mask
value); export.py checks the file against the MindSpore network at several shapes before keeping it.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List

import numpy as np

from src.config import BertConfig
from src.model.bert import ATTENTION_MASK_VALUE
from src.ship.format import ExportError

HF_INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")  # optimum's order (the forward signature)
BATCH, SEQUENCE = "batch_size", "sequence_length"
OPSET = 17  # LayerNormalization is an ONNX op from 17 (onnxruntime >= 1.14)
GRAPH_HEADS = ("sequence_classification", "token_classification", "masked_lm")


class _Graph:
    """Collects nodes and initializers; every name is unique."""

    def __init__(self, onnx_module):
        self.onnx = onnx_module
        self.helper = onnx_module.helper
        self.nodes: List[Any] = []
        self.initializers: List[Any] = []
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, hint: str, value: np.ndarray) -> str:
        name = self.name(hint)
        # np.array, not np.ascontiguousarray: that one turns a scalar into shape [1] (Range needs scalars)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.array(value, order="C"), name))
        return name

    def weight(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(value, np.float32), name))
        return name

    def op(self, op_type: str, inputs: List[str], hint: str = "", **attrs: Any) -> str:
        out = self.name(hint or op_type.lower())
        self.nodes.append(self.helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out


def _dense(g: _Graph, x: str, params: Dict[str, np.ndarray], prefix: str) -> str:
    """x @ W^T + b for a dense layer stored as weight [out, in] (kept pre-transposed: [in, out])."""
    w = g.weight(prefix + ".weight.T", params[prefix + ".weight"].T)
    return g.op("Add", [g.op("MatMul", [x, w]), g.weight(prefix + ".bias", params[prefix + ".bias"])])


def _layer_norm(g: _Graph, x: str, params: Dict[str, np.ndarray], prefix: str, eps: float) -> str:
    return g.op("LayerNormalization", [x, g.weight(prefix + ".weight", params[prefix + ".weight"]),
                                       g.weight(prefix + ".bias", params[prefix + ".bias"])],
                axis=-1, epsilon=float(eps))


def _activation(g: _Graph, x: str, name: str) -> str:
    if name == "relu":
        return g.op("Relu", [x])
    half, one = g.const("half", np.array(0.5, np.float32)), g.const("one", np.array(1.0, np.float32))
    if name == "gelu":  # exact: 0.5 x (1 + erf(x / sqrt 2))
        inner = g.op("Erf", [g.op("Mul", [x, g.const("inv_sqrt2", np.array(1 / math.sqrt(2), np.float32))])])
    elif name == "gelu_tanh":  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        cube = g.op("Mul", [g.op("Mul", [x, x]), x])
        poly = g.op("Add", [x, g.op("Mul", [cube, g.const("c", np.array(0.044715, np.float32))])])
        inner = g.op("Tanh", [g.op("Mul", [poly, g.const("k", np.array(math.sqrt(2 / math.pi), np.float32))])])
    else:
        raise ExportError(f"hidden_act {name!r}: no ONNX form; expected gelu, gelu_tanh or relu")
    return g.op("Mul", [g.op("Mul", [x, half]), g.op("Add", [inner, one])])


def _split_heads(g: _Graph, x: str, heads: int, size: int, perm: List[int]) -> str:
    shape = g.const("heads_shape", np.array([0, 0, heads, size], np.int64))
    return g.op("Transpose", [g.op("Reshape", [x, shape])], perm=perm)


def build_onnx(params: Dict[str, np.ndarray], config: BertConfig, head: Dict[str, Any], opset: int = OPSET):
    """The onnx.ModelProto of head `head` with weights `params` (our names, numpy float32)."""
    import onnx  # pylint: disable=import-outside-toplevel

    kind = head["type"]
    if kind not in GRAPH_HEADS:
        raise ExportError(f"a {kind} network has no logits to export; expected one of {', '.join(GRAPH_HEADS)}")
    if opset < OPSET:
        raise ExportError(f"onnx opset {opset}: this graph needs >= {OPSET} (LayerNormalization)")
    g = _Graph(onnx)
    h, n, eps = config.hidden_size, config.num_attention_heads, config.layer_norm_eps
    d = h // n
    ids, mask, types = HF_INPUT_NAMES

    # Embeddings: word + position (Range(0, S)) + token type, LayerNorm.
    seq = g.op("Squeeze", [g.op("Gather", [g.op("Shape", [ids]), g.const("one_index", np.array([1], np.int64))],
                                axis=0)], hint="seq_len")
    positions = g.op("Range", [g.const("zero", np.array(0, np.int64)), seq, g.const("step", np.array(1, np.int64))])
    emb = "bert.embeddings."
    x = g.op("Add", [g.op("Gather", [g.weight(emb + "word_embeddings.weight", params[emb + "word_embeddings.weight"]),
                                     ids]),
                     g.op("Gather", [g.weight(emb + "position_embeddings.weight",
                                              params[emb + "position_embeddings.weight"]), positions])])
    x = g.op("Add", [x, g.op("Gather", [g.weight(emb + "token_type_embeddings.weight",
                                                 params[emb + "token_type_embeddings.weight"]), types])])
    x = _layer_norm(g, x, params, emb + "LayerNorm", eps)

    # Additive mask [B, 1, 1, S]: (1 - mask) * ATTENTION_MASK_VALUE, broadcast against the scores [B, N, S, S].
    m = g.op("Unsqueeze", [g.op("Cast", [mask], to=onnx.TensorProto.FLOAT), g.const("axes", np.array([1, 2],
                                                                                                     np.int64))])
    mask_add = g.op("Mul", [g.op("Sub", [g.const("one", np.array(1.0, np.float32)), m]),
                            g.const("mask_value", np.array(ATTENTION_MASK_VALUE, np.float32))], hint="mask_add")
    scale = g.const("scale", np.array(1.0 / math.sqrt(d), np.float32))
    merge = g.const("merge_shape", np.array([0, 0, h], np.int64))
    for layer in range(config.num_hidden_layers):
        p = f"bert.encoder.layer.{layer}."
        q = _split_heads(g, _dense(g, x, params, p + "attention.self.query"), n, d, [0, 2, 1, 3])
        k_t = _split_heads(g, _dense(g, x, params, p + "attention.self.key"), n, d, [0, 2, 3, 1])
        v = _split_heads(g, _dense(g, x, params, p + "attention.self.value"), n, d, [0, 2, 1, 3])
        scores = g.op("Add", [g.op("Mul", [g.op("MatMul", [q, k_t]), scale]), mask_add], hint=f"scores{layer}")
        context = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])
        context = g.op("Reshape", [g.op("Transpose", [context], perm=[0, 2, 1, 3]), merge])
        attended = _layer_norm(g, g.op("Add", [_dense(g, context, params, p + "attention.output.dense"), x]), params,
                               p + "attention.output.LayerNorm", eps)
        inner = _activation(g, _dense(g, attended, params, p + "intermediate.dense"), config.hidden_act)
        x = _layer_norm(g, g.op("Add", [_dense(g, inner, params, p + "output.dense"), attended]), params,
                        p + "output.LayerNorm", eps)

    if kind == "sequence_classification":
        first = g.op("Gather", [x, g.const("cls_index", np.array(0, np.int64))], axis=1)  # [B, H]
        pooled = g.op("Tanh", [_dense(g, first, params, "bert.pooler.dense")], hint="pooled")
        if head.get("pooled_activation", "relu") == "relu":  # TinyBERT's classifier(ReLU(pooled))
            pooled = g.op("Relu", [pooled])
        logits, dims = _dense(g, pooled, params, "classifier"), [BATCH, int(head["num_labels"])]
    elif kind == "token_classification":
        logits, dims = _dense(g, x, params, "classifier"), [BATCH, SEQUENCE, int(head["num_labels"])]
    else:  # masked LM: transform, then the word-embedding table (tied decoder) and the bias
        t = _activation(g, _dense(g, x, params, "cls.predictions.transform.dense"), config.hidden_act)
        t = _layer_norm(g, t, params, "cls.predictions.transform.LayerNorm", eps)
        # the table already stored for the embeddings, transposed once when onnxruntime folds constants
        table = g.op("Transpose", [emb + "word_embeddings.weight"], perm=[1, 0], hint="decoder")
        logits = g.op("Add", [g.op("MatMul", [t, table]),
                              g.weight("cls.predictions.bias", params["cls.predictions.bias"])])
        dims = [BATCH, SEQUENCE, config.vocab_size]
    g.nodes.append(g.helper.make_node("Identity", [logits], ["logits"], name="logits"))

    inputs = [g.helper.make_tensor_value_info(name, onnx.TensorProto.INT64, [BATCH, SEQUENCE])
              for name in HF_INPUT_NAMES]
    outputs = [g.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, dims)]
    graph = g.helper.make_graph(g.nodes, "tinybert", inputs, outputs, initializer=g.initializers)
    model = g.helper.make_model(graph, opset_imports=[g.helper.make_opsetid("", opset)],
                                producer_name="tinybert-mindspore")
    model.ir_version = min(model.ir_version, 8)  # IR 8 is what onnxruntime >= 1.14 reads
    return model
