"""Task heads on the BERT encoder of src/model/bert.py: sequence and token classification, masked LM, and the
logits-only view used for inference and export.

Every head takes the encoder's inputs in the same order, (input_ids, token_type_ids, attention_mask), and returns
the tuple (logits, hidden_states, attention_scores) (`HeadOutput` is its Python-side view): distillation needs the
last two, inference only the first (`LogitsOnly`).
"""
from __future__ import annotations

from typing import Any, Dict, NamedTuple, Tuple

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import initializer

from src.config import BertConfig
from src.infra.backend import Backend
from src.model.bert import (HIDDEN_STATES, ATTENTION_SCORES, POOLED_OUTPUT, PORTABLE, SEQUENCE_OUTPUT, BertModel,
                            LayerNorm, activation, dense_layer)

# Positions in the tuple returned by the task heads.
LOGITS, HEAD_HIDDEN_STATES, HEAD_ATTENTION_SCORES = 0, 1, 2


class HeadOutput(NamedTuple):
    """Python-side view of a task head's output tuple: logits plus what distillation needs."""

    logits: Tensor
    hidden_states: Tuple[Tensor, ...]
    attention_scores: Tuple[Tensor, ...]




class BertForSequenceClassification(nn.Cell):
    """Sentence (or sentence-pair) classifier on the pooled output: logits [B, C].

    `pooled_activation="relu"` reproduces TinyBERT (classifier(ReLU(pooled))); "none" reproduces
    Google/HF BERT (classifier(dropout(pooled))). Use the same choice for teacher and student, and the
    one the teacher was fine-tuned with. Returns (logits, hidden_states, attention_scores).
    """

    def __init__(self, config: BertConfig, num_labels: int, pooled_activation: str = "relu",
                 backend: Backend = PORTABLE):
        super().__init__()
        if pooled_activation not in ("relu", "none"):
            raise ValueError(f"pooled_activation: got {pooled_activation!r}; expected 'relu' or 'none'")
        self.config = config
        self.num_labels = num_labels
        self.pooled_activation = pooled_activation
        self.bert = BertModel(config, backend)
        self.dropout = nn.Dropout(p=config.hidden_dropout_prob)
        self.classifier = dense_layer(config, config.hidden_size, num_labels)
        self.use_relu = pooled_activation == "relu"

    def construct(self, input_ids, token_type_ids, attention_mask):
        outputs = self.bert(input_ids, token_type_ids, attention_mask)
        pooled = outputs[POOLED_OUTPUT]
        pooled = ops.relu(pooled) if self.use_relu else self.dropout(pooled)
        return self.classifier(pooled), outputs[HIDDEN_STATES], outputs[ATTENTION_SCORES]


class BertForTokenClassification(nn.Cell):
    """Per-token classifier (NER): logits [B, S, C]. Returns (logits, hidden_states, attention_scores)."""

    def __init__(self, config: BertConfig, num_labels: int, backend: Backend = PORTABLE):
        super().__init__()
        self.config = config
        self.num_labels = num_labels
        self.bert = BertModel(config, backend)
        self.dropout = nn.Dropout(p=config.hidden_dropout_prob)
        self.classifier = dense_layer(config, config.hidden_size, num_labels)

    def construct(self, input_ids, token_type_ids, attention_mask):
        outputs = self.bert(input_ids, token_type_ids, attention_mask)
        logits = self.classifier(self.dropout(outputs[SEQUENCE_OUTPUT]))
        return logits, outputs[HIDDEN_STATES], outputs[ATTENTION_SCORES]


class BertPredictionHeadTransform(nn.Cell):
    """Dense, activation and LayerNorm before the masked-LM decoder."""

    def __init__(self, config: BertConfig, backend: Backend = PORTABLE):
        super().__init__()
        self.dense = dense_layer(config, config.hidden_size, config.hidden_size)
        self.act = activation(config.hidden_act, backend)
        self.LayerNorm = LayerNorm(config.hidden_size, config.layer_norm_eps, backend)  # pylint: disable=invalid-name

    def construct(self, hidden):
        return self.LayerNorm(self.act(self.dense(hidden)))


class BertLMPredictionHead(nn.Cell):
    """Masked-LM scores [B, S, V]; the decoder is tied to the word-embedding table, plus a bias [V]."""

    def __init__(self, config: BertConfig, backend: Backend = PORTABLE):
        super().__init__()
        self.transform = BertPredictionHeadTransform(config, backend)
        self.bias = Parameter(initializer("zeros", (config.vocab_size,), ms.float32))

    def construct(self, hidden, embedding_table):
        return ops.matmul(self.transform(hidden), embedding_table.T) + self.bias


class BertMLMHead(nn.Cell):
    """Container named `cls` in checkpoints, as in Google and HF BERT (`cls.predictions.*`)."""

    def __init__(self, config: BertConfig, backend: Backend = PORTABLE):
        super().__init__()
        self.predictions = BertLMPredictionHead(config, backend)

    def construct(self, hidden, embedding_table):
        return self.predictions(hidden, embedding_table)


class BertForMaskedLM(nn.Cell):
    """BERT with its masked-LM head (used for data augmentation). Returns (mlm_logits [B, S, V],
    hidden_states, attention_scores)."""

    def __init__(self, config: BertConfig, backend: Backend = PORTABLE):
        super().__init__()
        self.config = config
        self.bert = BertModel(config, backend)
        self.cls = BertMLMHead(config, backend)

    def construct(self, input_ids, token_type_ids, attention_mask):
        outputs = self.bert(input_ids, token_type_ids, attention_mask)
        table = self.bert.embeddings.word_embeddings.weight
        return self.cls(outputs[SEQUENCE_OUTPUT], table), outputs[HIDDEN_STATES], outputs[ATTENTION_SCORES]


HEADS = {
    "backbone": BertModel,
    "sequence_classification": BertForSequenceClassification,
    "token_classification": BertForTokenClassification,
    "masked_lm": BertForMaskedLM,
}


def build_model(config: BertConfig, head: str = "backbone", backend: Backend = PORTABLE, **head_kwargs) -> nn.Cell:
    """Build BertModel or a task head by name (see HEADS); head_kwargs go to the head (num_labels, ...).
    `backend` chooses how the cells compute (src/infra/backend.py); the default is MindSpore's own ops."""
    if head not in HEADS:
        raise ValueError(f"head: got {head!r}; expected one of {sorted(HEADS)}")
    return HEADS[head](config, backend=backend, **head_kwargs)


def count_parameters(net: nn.Cell) -> int:
    """Number of scalar parameters in a Cell."""
    return int(sum(np.prod(p.shape) for p in net.get_parameters()))


def head_spec(net: nn.Cell) -> Dict[str, Any]:
    """The head description saved beside a checkpoint of `net`: its type (a HEADS key) and constructor arguments."""
    for name, cls in HEADS.items():
        if type(net) is cls:  # pylint: disable=unidiomatic-typecheck
            spec: Dict[str, Any] = {"type": name}
            if hasattr(net, "num_labels"):
                spec["num_labels"] = int(net.num_labels)
            if hasattr(net, "pooled_activation"):
                spec["pooled_activation"] = net.pooled_activation
            return spec
    raise ValueError(f"cannot describe a {type(net).__name__}; expected one of the heads in src.model.heads.HEADS")


class LogitsOnly(nn.Cell):
    """Inference wrapper of a task head: `(input_ids, token_type_ids, attention_mask) -> logits`.

    Puts the head in eval mode (dropout off). The head's hidden states and attention scores, which only
    distillation needs, are not outputs (nor of an exported graph).
    """

    def __init__(self, head: nn.Cell):
        super().__init__(auto_prefix=False)  # with the prefix, wrapping would rename the head's parameters
        self.head = head
        self.set_train(False)

    def construct(self, input_ids, token_type_ids, attention_mask):
        return self.head(input_ids, token_type_ids, attention_mask)[LOGITS]
