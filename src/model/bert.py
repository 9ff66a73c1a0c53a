"""BERT for MindSpore 2.x: one model class for the teacher and the student, plus task heads.

Shapes: B = batch, S = sequence length (taken from the input at run time), H = hidden size,
N = attention heads, d = H / N, I = intermediate size, L = layers, C = labels, V = vocabulary.

Module and parameter names follow Hugging Face BERT (`embeddings.word_embeddings.weight`,
`encoder.layer.0.attention.self.query.weight`, `pooler.dense.weight`, ...), so checkpoints map to the
paper's boxes and to HF files one to one. Every initialiser and the LayerNorm epsilon are explicit,
so nothing changes when MindSpore changes a default.

Every Cell returns plain tuples. (A NamedTuple returned from `construct` goes through the graph-mode
Python fallback, which stops gradients; `BertModelOutput` and `HeadOutput` are the Python-side views.)
"""
from __future__ import annotations

from typing import NamedTuple, Tuple

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, mint, nn, ops
from mindspore.common.initializer import TruncatedNormal, initializer

from src.config import BertConfig
from src.infra.backend import Backend

PORTABLE = Backend()  # exports, evaluation and other devices: MindSpore's own ops

# Additive term for padded keys, as in Google BERT. TinyBERT's reference attention loss zeroes scores
# <= -100, which only works because masked scores sit near -10000.
ATTENTION_MASK_VALUE = -10000.0

# Positions in the tuple returned by BertModel.construct.
SEQUENCE_OUTPUT, POOLED_OUTPUT, HIDDEN_STATES, ATTENTION_SCORES = 0, 1, 2, 3


class BertModelOutput(NamedTuple):
    """Python-side view of BertModel's output tuple: `BertModelOutput(*model(ids, types, mask))`.

    sequence_output: [B, S, H] last layer.
    pooled_output: [B, H] tanh(dense(h_[CLS])).
    hidden_states: L+1 tensors [B, S, H]; index 0 is the embedding output, index k is layer k.
    attention_scores: L tensors [B, N, S, S]; scaled Q.K^T plus the additive mask, before softmax.
    """

    sequence_output: Tensor
    pooled_output: Tensor
    hidden_states: Tuple[Tensor, ...]
    attention_scores: Tuple[Tensor, ...]


def truncated_normal(sigma: float) -> TruncatedNormal:
    """Google BERT's initialiser: normal(0, sigma) cut at +-2 sigma. (MindSpore's bounds a, b are absolute
    values, default +-2.0, so TruncatedNormal(0.02) alone would not truncate at all.)"""
    return TruncatedNormal(sigma=sigma, mean=0.0, a=-2.0 * sigma, b=2.0 * sigma)


def _normal(config: BertConfig, shape: Tuple[int, ...]) -> Parameter:
    return Parameter(initializer(truncated_normal(config.initializer_range), shape, ms.float32))


class MixedDense(nn.Dense):
    """nn.Dense (same parameters, float32) whose matrix product runs in `compute_dtype` (float16 / bfloat16):
    input, weight and bias are cast down, the result back to float32, so everything around it (LayerNorm, the
    residual adds, softmax over the scores, the losses) stays float32 -- the model zoo BERT's compute_type."""

    def __init__(self, d_in: int, d_out: int, compute_dtype, **kwargs):
        super().__init__(d_in, d_out, **kwargs)
        self.compute_dtype = compute_dtype
        self.d_out = d_out
        self.product = ops.MatMul(transpose_b=True)

    def construct(self, x):
        shape = x.shape
        flat = ops.cast(x.reshape(-1, shape[-1]), self.compute_dtype)
        out = self.product(flat, ops.cast(self.weight, self.compute_dtype))
        out = ops.bias_add(out, ops.cast(self.bias, self.compute_dtype))
        return ops.cast(out, ms.float32).reshape(shape[:-1] + (self.d_out,))


def dense_layer(config: BertConfig, d_in: int, d_out: int, backend: Backend = PORTABLE) -> nn.Dense:
    """Linear layer with BERT's initialisation (weight [out, in] ~ truncated normal, bias 0), computing in
    backend.compute_dtype (float32 unless a device trains in mixed precision, see MixedDense)."""
    init = dict(weight_init=truncated_normal(config.initializer_range), bias_init="zeros")
    if backend.compute_dtype == "float32":
        return nn.Dense(d_in, d_out, **init)
    return MixedDense(d_in, d_out, getattr(ms, backend.compute_dtype), **init)


class Embedding(nn.Cell):
    """Lookup table; parameter `weight` [V, H] as in HF (nn.Embedding would name it embedding_table)."""

    def __init__(self, config: BertConfig, num: int, dim: int):
        super().__init__()
        self.weight = _normal(config, (num, dim))

    def construct(self, ids):
        return ops.gather(self.weight, ids, 0)


class LayerNorm(nn.Cell):
    """LayerNorm over the last axis with parameters `weight`/`bias` and an explicit epsilon; the AOT kernels for
    float32 when backend.layer_norm is "aot" (CPU training), MindSpore's LayerNorm otherwise."""

    def __init__(self, dim: int, eps: float, backend: Backend = PORTABLE):
        super().__init__()
        self.weight = Parameter(initializer("ones", (dim,), ms.float32))
        self.bias = Parameter(initializer("zeros", (dim,), ms.float32))
        # ops.layer_norm has no CPU kernel in MindSpore 2.10; the LayerNorm primitive does.
        self.norm = ops.LayerNorm(begin_norm_axis=-1, begin_params_axis=-1, epsilon=eps)
        self.kernel = None
        if backend.layer_norm == "aot":
            from src.infra.aot import layer_norm_op  # pylint: disable=import-outside-toplevel

            self.kernel = layer_norm_op()  # None (a warning said why) when the kernels cannot be built
        self.use_aot = self.kernel is not None
        self.eps = ms.Tensor([eps], ms.float32)  # a constant input of the kernel, not a parameter

    def construct(self, x):
        if self.use_aot and x.dtype == ms.float32:
            return self.kernel(x, self.weight, self.bias, self.eps)
        return self.norm(x, self.weight, self.bias)[0]


def activation(name: str, backend: Backend = PORTABLE):
    """The feed-forward activation named in BertConfig.hidden_act, as `backend` computes it."""
    if name == "gelu":
        if backend.gelu == "aot":
            from src.infra.aot import GeluAOT  # pylint: disable=import-outside-toplevel

            return GeluAOT()  # falls back to the builtin kernel when it cannot be compiled
        return nn.GELU(approximate=False)  # exact erf form, as Google and HF BERT
    if name == "gelu_tanh":
        return nn.GELU(approximate=True)
    if name == "relu":
        return nn.ReLU()
    raise ValueError(f"hidden_act: got {name!r}; expected 'gelu', 'gelu_tanh' or 'relu'")


class BertEmbeddings(nn.Cell):
    """Word + position + token-type embeddings, then LayerNorm and dropout: [B, S] ids -> [B, S, H]."""

    def __init__(self, config: BertConfig, backend: Backend = PORTABLE):
        super().__init__()
        h = config.hidden_size
        self.word_embeddings = Embedding(config, config.vocab_size, h)
        self.position_embeddings = Embedding(config, config.max_position_embeddings, h)
        self.token_type_embeddings = Embedding(config, config.type_vocab_size, h)
        self.LayerNorm = LayerNorm(h, config.layer_norm_eps, backend)  # pylint: disable=invalid-name
        self.dropout = nn.Dropout(p=config.hidden_dropout_prob)

    def construct(self, input_ids, token_type_ids):
        seq_len = input_ids.shape[1]
        positions = ops.arange(seq_len).reshape(1, seq_len)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Cell):
    """Multi-head self-attention returning the context [B, S, H] and the scores [B, N, S, S]."""

    def __init__(self, config: BertConfig, backend: Backend = PORTABLE):
        super().__init__()
        h = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_size = config.head_size
        self.scale = 1.0 / float(np.sqrt(self.head_size))
        self.query = dense_layer(config, h, h, backend)
        self.key = dense_layer(config, h, h, backend)
        self.value = dense_layer(config, h, h, backend)
        self.dropout = nn.Dropout(p=config.attention_probs_dropout_prob)
        # MindSpore 2.10's CPU graph runtime never reuses the memory of Transpose outputs (nor of a broadcasting
        # Add, see BertEncoder): ~130 MB per BERT-base layer at batch 32. CPU training (backend.heads "swap") splits
        # and merges heads with the AOT SwapAxes12 kernel (src/infra/kernels/gelu_aot.cc: reused buffers, a plain copy)
        # and takes Q.K^T with BatchMatMul(transpose_b); "views" does it with mint's permute/transpose, which are
        # views there (reused too, but ~15% slower). Exports keep ops.transpose (no exporter knows those ops), and
        # so do other devices. README "Performance" has the figures.
        self.layout = backend.heads
        self.swap = None
        if self.layout == "swap":
            from src.infra.aot import swap_axes12_op  # pylint: disable=import-outside-toplevel

            self.swap = swap_axes12_op()
            if self.swap is None:
                raise RuntimeError("Backend.heads='swap' needs the AOT kernel library, which cannot be built here "
                                   "(see the warning above); use Backend.for_training, which falls back to 'views'")
        self.use_swap = self.layout == "swap"
        self.use_views = self.layout == "views"
        self.scores_tb = ops.BatchMatMul(transpose_b=True)

    def _split_heads(self, x):
        b, s, _ = x.shape
        x = x.reshape(b, s, self.num_heads, self.head_size)
        if self.use_swap:
            return self.swap(x)
        return mint.permute(x, (0, 2, 1, 3)) if self.use_views else x.transpose(0, 2, 1, 3)  # [B, N, S, d]

    def construct(self, hidden, mask_add):
        """mask_add: additive mask broadcastable to [B, N, S, S]; BertEncoder passes it already [B, N, S, S]."""
        q = self._split_heads(self.query(hidden))
        k = self._split_heads(self.key(hidden))
        v = self._split_heads(self.value(hidden))
        if self.use_swap:
            scores = self.scores_tb(q, k) * self.scale + mask_add  # [B, N, S, S]
            context = self.swap(ops.matmul(self.dropout(ops.softmax(scores, -1)), v))
        elif self.use_views:
            scores = mint.matmul(q, mint.transpose(k, -1, -2)) * self.scale + mask_add
            context = mint.permute(mint.matmul(self.dropout(ops.softmax(scores, -1)), v), (0, 2, 1, 3))
        else:
            scores = ops.matmul(q, k.swapaxes(-1, -2)) * self.scale + mask_add
            context = ops.matmul(self.dropout(ops.softmax(scores, -1)), v).transpose(0, 2, 1, 3)  # [B, S, N, d]
        b, s = context.shape[0], context.shape[1]
        return context.reshape(b, s, self.num_heads * self.head_size), scores


class _DenseResidualNorm(nn.Cell):
    """Dense to H, dropout, residual add and LayerNorm: the block after attention and after the FFN."""

    def __init__(self, config: BertConfig, d_in: int, backend: Backend = PORTABLE):
        super().__init__()
        self.dense = dense_layer(config, d_in, config.hidden_size, backend)
        self.LayerNorm = LayerNorm(config.hidden_size, config.layer_norm_eps, backend)  # pylint: disable=invalid-name
        self.dropout = nn.Dropout(p=config.hidden_dropout_prob)

    def construct(self, hidden, residual):
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


class BertSelfOutput(_DenseResidualNorm):
    """Projection after attention (H -> H), dropout, residual add and LayerNorm."""

    def __init__(self, config: BertConfig, backend: Backend = PORTABLE):
        super().__init__(config, config.hidden_size, backend)


class BertAttention(nn.Cell):
    """Self-attention plus its output block (HF `attention.self` and `attention.output`)."""

    def __init__(self, config: BertConfig, backend: Backend = PORTABLE):
        super().__init__()
        setattr(self, "self", BertSelfAttention(config, backend))  # HF's parameter names: attention.self.query
        self.output = BertSelfOutput(config, backend)

    def construct(self, hidden, mask_add):
        context, scores = self.self(hidden, mask_add)
        return self.output(context, hidden), scores


class BertIntermediate(nn.Cell):
    """Feed-forward expansion H -> I with the configured activation."""

    def __init__(self, config: BertConfig, backend: Backend = PORTABLE):
        super().__init__()
        self.dense = dense_layer(config, config.hidden_size, config.intermediate_size, backend)
        self.act = activation(config.hidden_act, backend)

    def construct(self, hidden):
        return self.act(self.dense(hidden))


class BertOutput(_DenseResidualNorm):
    """Feed-forward contraction I -> H, dropout, residual add and LayerNorm."""

    def __init__(self, config: BertConfig, backend: Backend = PORTABLE):
        super().__init__(config, config.intermediate_size, backend)


class BertLayer(nn.Cell):
    """One transformer layer: attention, then the feed-forward block. Returns (hidden, scores)."""

    def __init__(self, config: BertConfig, backend: Backend = PORTABLE):
        super().__init__()
        self.attention = BertAttention(config, backend)
        self.intermediate = BertIntermediate(config, backend)
        self.output = BertOutput(config, backend)

    def construct(self, hidden, mask_add):
        attended, scores = self.attention(hidden, mask_add)
        return self.output(self.intermediate(attended), attended), scores


class BertEncoder(nn.Cell):
    """L layers; returns all L+1 hidden states (input first) and L attention score tensors."""

    def __init__(self, config: BertConfig, backend: Backend = PORTABLE):
        super().__init__()
        self.layer = nn.CellList([BertLayer(config, backend) for _ in range(config.num_hidden_layers)])
        self.num_heads = config.num_attention_heads

    def construct(self, hidden, mask_add):
        # One explicit [B, 1, 1, S] -> [B, N, S, S] broadcast for all layers: a broadcasting Add in every layer
        # holds a full-size buffer per layer on MindSpore's CPU runtime (~100 MB per BERT-base layer at batch 32).
        b, s = hidden.shape[0], hidden.shape[1]
        mask_add = ops.broadcast_to(mask_add, (b, self.num_heads, s, s))
        hidden_states = (hidden,)
        attention_scores = ()
        for layer in self.layer:
            hidden, scores = layer(hidden, mask_add)
            hidden_states = hidden_states + (hidden,)
            attention_scores = attention_scores + (scores,)
        return hidden_states, attention_scores


class BertPooler(nn.Cell):
    """tanh(dense(h_[CLS])): [B, S, H] -> [B, H]."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = dense_layer(config, config.hidden_size, config.hidden_size)

    def construct(self, sequence_output):
        return ops.tanh(self.dense(sequence_output[:, 0]))


def extended_attention_mask(attention_mask):
    """[B, S] 1/0 mask -> additive [B, 1, 1, S] term: 0 for real keys, ATTENTION_MASK_VALUE for padding."""
    mask = attention_mask.astype(ms.float32)
    return (1.0 - mask.expand_dims(1).expand_dims(1)) * ATTENTION_MASK_VALUE


class BertModel(nn.Cell):
    """BERT encoder used for both teacher and student.

    construct(input_ids [B, S] int, token_type_ids [B, S] int, attention_mask [B, S] 1/0) returns the tuple
    (sequence_output [B, S, H], pooled_output [B, H], hidden_states (L+1 x [B, S, H], embeddings first),
    attention_scores (L x [B, N, S, S], pre-softmax, mask applied)); see BertModelOutput.
    Only keys are masked: padded query rows are computed (and ignored by the losses).
    """

    def __init__(self, config: BertConfig, backend: Backend = PORTABLE):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config, backend)
        self.encoder = BertEncoder(config, backend)
        self.pooler = BertPooler(config)

    def construct(self, input_ids, token_type_ids, attention_mask):
        embedded = self.embeddings(input_ids, token_type_ids)
        hidden_states, attention_scores = self.encoder(embedded, extended_attention_mask(attention_mask))
        sequence_output = hidden_states[-1]
        return sequence_output, self.pooler(sequence_output), hidden_states, attention_scores
