"""Real pretrained weights: all-MiniLM-L6-v2 through the HF converter, against an independent numpy BERT."""
import json
import math
import os

import numpy as np
import mindspore as ms
import pytest
from mindspore import Tensor

from src.model.checkpoint import load_model, read_metadata
from src.model.convert import convert_hf
from src.model.bert import BertModelOutput
from src.data.tokenization import BertTokenizer

SENTENCES = [
    ("A man is playing a guitar.", "Someone is playing an instrument."),
    ("The new movie is awesome.", "The new film is great."),
    ("A cat sleeps on the sofa.", "Stock markets fell sharply on Monday."),
]


@pytest.fixture(scope="module")
def converted(minilm_dir, tmp_path_factory):
    return convert_hf(minilm_dir, str(tmp_path_factory.mktemp("minilm") / "minilm.ckpt"))


@pytest.fixture(scope="module")
def encoded(minilm_dir):
    tok = BertTokenizer(os.path.join(minilm_dir, "vocab.txt"))
    rows = [tok.encode(s, max_seq_length=16) for pair in SENTENCES for s in pair]
    return tuple(np.array([getattr(r, f) for r in rows], np.int32)
                 for f in ("input_ids", "token_type_ids", "attention_mask"))


# ---- an independent BERT forward in numpy, reading the HF file directly ---------------------------
def _layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


_erf = np.vectorize(math.erf)


def numpy_bert(weights, cfg, ids, types, mask):
    """Last hidden state [B, S, H] of HF BertModel, float64, straight from the paper's equations."""
    w = {k: v.astype(np.float64) for k, v in weights.items()}
    eps, n = cfg["layer_norm_eps"], cfg["num_attention_heads"]
    s = ids.shape[1]
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][np.arange(s)] \
        + w["embeddings.token_type_embeddings.weight"][types]
    x = _layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
    bias = (1.0 - mask[:, None, None, :]) * -1e4
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        lin = lambda t, name: t @ w[p + name + ".weight"].T + w[p + name + ".bias"]  # noqa: E731
        split = lambda t: t.reshape(t.shape[0], s, n, -1).transpose(0, 2, 1, 3)  # noqa: E731
        q, k, v = (split(lin(x, f"attention.self.{m}")) for m in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(q.shape[-1]) + bias
        probs = np.exp(scores - scores.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(x.shape)
        x = _layer_norm(lin(ctx, "attention.output.dense") + x, w[p + "attention.output.LayerNorm.weight"],
                        w[p + "attention.output.LayerNorm.bias"], eps)
        h = lin(x, "intermediate.dense")
        h = 0.5 * h * (1.0 + _erf(h / math.sqrt(2.0)))
        x = _layer_norm(lin(h, "output.dense") + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"],
                        eps)
    return x


@pytest.mark.slow
def test_converted_minilm_matches_numpy_bert(minilm_dir, converted, encoded, mode):
    from safetensors.numpy import load_file
    weights = load_file(os.path.join(minilm_dir, "model.safetensors"))
    with open(os.path.join(minilm_dir, "config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    expected = numpy_bert(weights, cfg, *encoded)
    net = load_model(converted)
    net.set_train(False)
    out = BertModelOutput(*net(*(Tensor(a, ms.int32) for a in encoded)))
    mask = encoded[2].astype(bool)
    diff = np.abs(out.sequence_output.asnumpy() - expected)[mask].max()
    print(f"{mode}: max |MindSpore - numpy| on the last hidden state = {diff:.2e}")
    assert diff <= 1e-4
    assert len(out.hidden_states) == 7 and out.attention_scores[0].shape == (6, 12, 16, 16)


def test_minilm_checkpoint_records_its_source(converted):
    meta = read_metadata(converted)
    assert meta["model"]["num_hidden_layers"] == 6 and meta["model"]["hidden_act"] == "gelu"
    assert meta["num_parameters"] == 22_713_216
    assert meta["not_converted"] == {"embeddings.position_ids": "buffer (0..max_position-1), recomputed at run time"}


def test_minilm_embeddings_are_semantic(converted, encoded):
    net = load_model(converted)
    net.set_train(False)
    hidden = net(*(Tensor(a, ms.int32) for a in encoded))[0].asnumpy()
    mask = encoded[2][..., None].astype(np.float32)
    emb = (hidden * mask).sum(1) / mask.sum(1)  # mean pooling, as sentence-transformers
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    cos = [float(emb[2 * i] @ emb[2 * i + 1]) for i in range(len(SENTENCES))]
    print("cosine (paraphrase, paraphrase, unrelated):", [round(c, 3) for c in cos])
    assert min(cos[0], cos[1]) > 0.5
    assert cos[2] < 0.2
    assert min(cos[0], cos[1]) - cos[2] > 0.4
