"""MindSpore Hub entry point: ``create_network(name, *args, **kwargs)``, as ``mindspore_hub.load`` calls it.

``mindspore_hub.load(uid, **kwargs)`` clones the repository named by the model card, puts it first on
``sys.path``, imports this file by path and calls ``create_network(card_model_name.lower(), **kwargs)``.
The same function works without the hub:

    import importlib.util
    spec = importlib.util.spec_from_file_location("mindspore_hub_conf", "path/to/repo/mindspore_hub_conf.py")
    hub = importlib.util.module_from_spec(spec); spec.loader.exec_module(hub)
    net = hub.create_network("tinybert_sst2", seq_length=64, is_training=False)
    logits, _, _ = net(input_ids, token_type_ids, attention_mask)  # int32 [B, S] each -> logits [B, 2]

Networks (every architecture comes from a src.config preset; nothing is declared here):

| name | network | preset | labels |
|---|---|---|---|
| tinybert | BertModel (general-distillation student backbone) | tinybert-4l-312 | - |
| tinybert_sst2 / _mnli / _qnli | BertForSequenceClassification (ReLU on pooled) | tinybert-4l-312 | 2 / 3 / 2 |
| tinybert_tnews | BertForSequenceClassification | tinybert-4l-312, vocab of bert-base-chinese | 15 |
| tinybert_cluener | BertForTokenClassification (BIOES tags of the 10 CLUENER types + O) | same | 41 |
| tinybert_enwiki128_sst2 / _mnli / _qnli | LogitsOnly(BertForSequenceClassification), the model zoo's names | ms-zoo-tinybert-4l-384, tanh GELU, eps 1e-7 | 2 / 3 / 2 |
| bert_base | BertModel | bert-base-uncased | - |
| bert_thor | BertModel (BERT-large of the bert_thor card: 24 layers, 1024, 16 heads) | bert-large-uncased | - |

Keyword arguments:
    seq_length: the sequence length you will feed (default 128; bert_thor 512). The networks take any length
        up to the config's max_position_embeddings (512); a larger value raises ValueError. It is stored as
        ``net.seq_length`` and does not change any shape.
    is_training: False (default) puts the network in inference mode (dropout off); True turns dropout on.
    batch_size: accepted because hub cards pass it (bert_thor: ``batch_size=12``); shapes are taken from the
        inputs at run time, so it is only checked (> 0) and stored as ``net.batch_size``.
    num_labels: override the number of labels of a task variant (a fresh classifier shape); backbones refuse it.
    vocab_file: the vocab.txt you will tokenize with; one whose size is not the network's vocab_size (the
        Chinese vocabulary for an English network, say) raises VocabMismatch (a ValueError) naming it. Its
        fingerprint is kept as ``net.vocab_fingerprint``, to compare with the ``"vocab"`` of a checkpoint's .json
        (src/data/vocab.py).

Every call builds a fresh config (frozen BertConfig), so no argument leaks into a later call (the model zoo's
hub file mutated one module-level config). Unknown names raise ValueError listing the valid names; unknown
keyword arguments and positional arguments raise TypeError listing the accepted ones.

Weights: ``mindspore_hub.load(..., pretrained=True)`` loads the card's asset with MindSpore's non-strict
``load_param_into_net``, which silently skips every name that does not match. The ``tinybert_enwiki128_*`` networks
are the model zoo's published 4-layer, 384-wide task checkpoints (cards ``mindspore/1.x/tinybert_enwiki128_sst2``,
``_mnli``, ``_qnli``): their parameters carry the zoo's names (``bert.bert.bert_encoder.layers.0...``,
``bert.dense_1.weight``), so the card's asset fills every one of them, and they return the logits [B, C] the card's
example prints (the zoo's network returned their log-softmax: same argmax). The other assets (the 2020 tinybert
card's teacher checkpoints, bert_thor) use the zoo's names for other networks, so convert them first
(``python scripts/convert_checkpoint.py zoo ...``), build with ``pretrained=False`` and load strictly with
``src.model.checkpoint.load_checkpoint(net, path)``, which raises on any missing, unexpected or mis-shaped tensor.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

_ROOT = os.path.dirname(os.path.abspath(__file__))


def _use_this_repository_src() -> None:
    """Make `import src` resolve to this repository's package (the hub loader also prepends the clone).

    Every model-zoo repository calls its package `src`, so after loading another hub model, `src` may already
    be a different package in sys.modules; importing from it would fail with a confusing ImportError.
    """
    if _ROOT not in sys.path:
        sys.path.insert(0, _ROOT)
    loaded = sys.modules.get("src")
    if loaded is None:
        return
    locations = [os.path.realpath(p) for p in getattr(loaded, "__path__", [])]
    if os.path.realpath(os.path.join(_ROOT, "src")) not in locations:
        raise ImportError(f"a different package named 'src' is already imported ({locations or loaded!r}); "
                          f"this hub entry needs {os.path.join(_ROOT, 'src')}. Load this network in a fresh "
                          f"Python process (model-zoo repositories all name their package 'src')")


_use_this_repository_src()

from src.config import MODEL_PRESETS, BertConfig, bert_preset  # noqa: E402
from src.model.convert import ZOO_MODEL_DEFAULTS, zoo_names  # noqa: E402
from src.model.heads import LogitsOnly, build_model  # noqa: E402
from src.data.task_data import MNLI_LABELS, QNLI_LABELS, SST2_LABELS, TAG_PREFIXES, TNEWS_LABEL_IDS  # noqa: E402

# The ten entity types of CLUENER2020 (github.com/CLUEbenchmark/CLUENER2020).
CLUENER_ENTITY_TYPES = ("address", "book", "company", "game", "government", "movie", "name", "organization",
                        "position", "scene")


def cluener_labels(tag_scheme: str = "bioes") -> List[str]:
    """Tag list of a CLUENER model in the order src.data.task_data gives it: "O", then every prefix of each type."""
    return ["O"] + [f"{p}-{t}" for t in sorted(CLUENER_ENTITY_TYPES) for p in TAG_PREFIXES[tag_scheme]]


class _Network(NamedTuple):
    """One hub name: preset, overrides, head and (for task variants) the label names."""

    preset: str
    head: str  # a key of src.model.heads.HEADS
    labels: Tuple[str, ...] = ()
    overrides: Tuple[Tuple[str, Any], ...] = ()
    default_seq_length: int = 128
    description: str = ""
    zoo_asset: bool = False  # parameters carry the model zoo's names, so the card's asset loads as the hub loads it


_CHINESE = (("vocab_size", MODEL_PRESETS["bert-base-chinese"]["vocab_size"]),)
_ZOO = tuple(ZOO_MODEL_DEFAULTS.items())  # what the zoo's cells compute
NETWORKS: Dict[str, _Network] = {
    "tinybert": _Network("tinybert-4l-312", "backbone",
                         description="TinyBERT-4 general-distillation student (BertModel backbone)"),
    "tinybert_sst2": _Network("tinybert-4l-312", "sequence_classification", tuple(SST2_LABELS),
                              description="TinyBERT-4 SST-2 classifier"),
    "tinybert_mnli": _Network("tinybert-4l-312", "sequence_classification", tuple(MNLI_LABELS),
                              description="TinyBERT-4 MNLI classifier"),
    "tinybert_qnli": _Network("tinybert-4l-312", "sequence_classification", tuple(QNLI_LABELS),
                              description="TinyBERT-4 QNLI classifier"),
    "tinybert_tnews": _Network("tinybert-4l-312", "sequence_classification", tuple(str(i) for i in TNEWS_LABEL_IDS),
                               _CHINESE, description="TinyBERT-4 TNEWS classifier (Chinese vocabulary)"),
    "tinybert_cluener": _Network("tinybert-4l-312", "token_classification", tuple(cluener_labels()), _CHINESE,
                                 description="TinyBERT-4 CLUENER tagger (Chinese vocabulary, BIOES)"),
    # The model zoo's published TD checkpoints (hub cards mindspore/1.x/tinybert_enwiki128_*: 4 layers, hidden 384,
    # FFN 1536, tanh GELU, LayerNorm epsilon 1e-7, classifier on ReLU(pooled)), built as the zoo's assets name them.
    **{f"tinybert_enwiki128_{task}": _Network(
        "ms-zoo-tinybert-4l-384", "sequence_classification", tuple(labels), _ZOO, seq,
        f"model-zoo TinyBERT {task.upper()} asset ({accuracy}); returns logits [B, {len(labels)}]", zoo_asset=True)
       for task, labels, seq, accuracy in (("sst2", SST2_LABELS, 64, "acc 90.28"), ("mnli", MNLI_LABELS, 128,
                                                                                   "acc 81.31"),
                                           ("qnli", QNLI_LABELS, 128, "acc 88.86"))},
    "bert_base": _Network("bert-base-uncased", "backbone", description="BERT-base uncased (BertModel)"),
    "bert_thor": _Network("bert-large-uncased", "backbone", default_seq_length=512,
                          description="BERT-large as the bert_thor hub card (BertModel, seq 512)"),
}
ACCEPTED_KWARGS = ("seq_length", "is_training", "batch_size", "num_labels", "vocab_file")


def network_config(name: str) -> BertConfig:
    """A new BertConfig for hub name `name` (raises ValueError for an unknown name)."""
    return bert_preset(_lookup(name).preset, **dict(_lookup(name).overrides))


def _lookup(name: Any) -> _Network:
    if not isinstance(name, str):
        raise TypeError(f"create_network: name must be a string; got {type(name).__name__}")
    key = name.lower()
    if key not in NETWORKS:
        raise ValueError(f"create_network: unknown network {name!r}; valid names: {', '.join(NETWORKS)}")
    return NETWORKS[key]


def _positive_int(kwargs: Dict[str, Any], key: str, default: Optional[int]) -> Optional[int]:
    value = kwargs.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"create_network: {key} must be a positive integer; got {value!r}")
    return value


def _as_zoo_asset(head) -> "LogitsOnly":
    """`head` behind LogitsOnly (the card's code reads the output as logits), each parameter renamed to the zoo's
    name for it (`bert.bert.bert_encoder.layers.0...`, `bert.dense_1.weight`): mindspore_hub.load's non-strict
    load_param_into_net then fills every parameter from the card's asset, where our names would match none and
    leave the network random without a word. Saving with src.model.checkpoint still writes our names."""
    wrapper = LogitsOnly(head)
    wrapper.config = head.config
    renames = zoo_names([name for name, _ in head.parameters_and_names()])
    for name, param in head.parameters_and_names():
        param.name = renames[name]
    return wrapper


def create_network(name: str, *args: Any, **kwargs: Any):
    """Build the network registered under `name` (see the module docstring for names and keyword arguments).

    Returns a mindspore.nn.Cell taking (input_ids, token_type_ids, attention_mask), int32 [B, S] each:
    a BertModel returns (sequence_output [B, S, H], pooled_output [B, H], hidden_states, attention_scores);
    a task variant returns (logits [B, C] or [B, S, C], hidden_states, attention_scores).

    Raises:
        ValueError: unknown name, or a bad keyword value (seq_length too long, num_labels on a backbone, ...).
        TypeError: positional arguments or unknown keyword arguments.
    """
    spec = _lookup(name)
    if args:
        raise TypeError(f"create_network({name!r}): positional arguments {args!r} are not accepted; use keyword "
                        f"arguments, one of {list(ACCEPTED_KWARGS)}")
    unknown = sorted(set(kwargs) - set(ACCEPTED_KWARGS))
    if unknown:
        raise TypeError(f"create_network({name!r}): unknown keyword argument(s) {unknown}; accepted: "
                        f"{list(ACCEPTED_KWARGS)}")
    config = network_config(name)
    seq_length = _positive_int(kwargs, "seq_length", spec.default_seq_length)
    if seq_length > config.max_position_embeddings:
        raise ValueError(f"create_network({name!r}): seq_length {seq_length} is longer than the model's "
                         f"max_position_embeddings ({config.max_position_embeddings})")
    vocab_fingerprint = None
    if kwargs.get("vocab_file") is not None:  # the vocab.txt the caller will tokenize with: checked here
        from src.data import vocab  # pylint: disable=import-outside-toplevel

        vocab_fingerprint = vocab.fingerprint(str(kwargs["vocab_file"]))
        vocab.check_size(vocab_fingerprint, f"vocab_file {kwargs['vocab_file']}", config.vocab_size,
                         f"the vocab_size of {name}")
    batch_size = _positive_int(kwargs, "batch_size", None)
    is_training = kwargs.get("is_training", False)
    if not isinstance(is_training, bool):
        raise ValueError(f"create_network({name!r}): is_training must be True or False; got {is_training!r}")
    num_labels = _positive_int(kwargs, "num_labels", None)
    if spec.head == "backbone":
        if num_labels is not None:
            raise ValueError(f"create_network({name!r}): num_labels applies to task variants only "
                             f"({', '.join(n for n, s in NETWORKS.items() if s.head != 'backbone')}); "
                             f"{name} is a backbone without a classifier")
        net = build_model(config, "backbone")
        label_names: Tuple[str, ...] = ()
    else:
        labels = spec.labels if num_labels in (None, len(spec.labels)) else ()
        net = build_model(config, spec.head, num_labels=num_labels or len(spec.labels))
        label_names = labels
    if spec.zoo_asset:
        net = _as_zoo_asset(net)
    net.set_train(is_training)
    # Plain attributes for callers (not parameters, so checkpoints are unaffected).
    net.hub_name = name.lower()
    net.seq_length = seq_length
    net.batch_size = batch_size
    net.label_names = list(label_names)
    net.vocab_fingerprint = vocab_fingerprint  # src/data/vocab.py; compare with a checkpoint's .json "vocab"
    return net
