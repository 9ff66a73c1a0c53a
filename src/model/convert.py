"""Convert BERT checkpoints from Hugging Face, Google TF and the MindSpore model zoo to ours.

Every converter maps names through a data table, checks the result against the network built from the
config (names and shapes, strictly), and writes an atomic checkpoint with the config beside it
(src.model.checkpoint). Source tensors that have no place in our model are never dropped silently: only the
ones listed in DROPPED (optimizer state, tied copies, the NSP head) are left out, and they are logged and
recorded in the JSON beside the checkpoint.

Our names are Hugging Face's: `bert.embeddings.word_embeddings.weight`, `bert.encoder.layer.0...`,
`cls.predictions.*` (masked-LM head), `classifier.*` (task head).
"""
from __future__ import annotations

import fnmatch
import logging
import os
import re
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from src.data import vocab
from src.model.checkpoint import CheckpointError, check_names, save_checkpoint
from src.config import BertConfig, ConfigError, bert_config_from_dict, read_mapping

logger = logging.getLogger(__name__)

# Source tensors that are deliberately not converted, with the reason recorded in the sidecar JSON.
DROPPED: Sequence[Tuple[str, str]] = (
    ("embeddings.position_ids", "buffer (0..max_position-1), recomputed at run time"),
    ("cls.seq_relationship.*", "next-sentence-prediction head, not used by TinyBERT"),
    ("global_step", "optimizer step counter"),
    ("*adam_m", "optimizer state"),
    ("*adam_v", "optimizer state"),
    ("*/Adam*", "optimizer state"),
    ("*moments.*", "optimizer state"),
    ("*beta1_power", "optimizer state"),
    ("*beta2_power", "optimizer state"),
    ("learning_rate", "optimizer state"),
    ("global_step*", "optimizer state"),
    ("current_iterator_step", "dataset position"),
    ("epoch_num", "training counter"),
    ("step_num", "training counter"),
    ("scale_sense", "loss-scale state"),
    ("loss_scale", "loss-scale state"),
    ("good_steps", "loss-scale state"),
    ("bad_steps", "loss-scale state"),
)

_HF_ACT = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh",
           "relu": "relu"}
_CONFIG_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "hidden_dropout_prob", "attention_probs_dropout_prob", "max_position_embeddings",
                "type_vocab_size", "initializer_range", "layer_norm_eps")


def _drop_reason(name: str) -> Optional[str]:
    for pattern, reason in DROPPED:
        if fnmatch.fnmatchcase(name, pattern):
            return reason
    return None


def bert_config_from_json(data: Mapping[str, Any], source: str, gelu: str = "gelu") -> BertConfig:
    """BertConfig from an HF `config.json` or a Google `bert_config.json` (extra keys are ignored).

    `gelu` is what the source's "gelu" means: exact erf for HF, the tanh approximation for Google TF BERT.
    """
    kind = data.get("position_embedding_type", "absolute")
    if kind != "absolute":
        raise ConfigError(f"{source}: position_embedding_type is {kind!r}; only 'absolute' BERT is supported")
    act = data.get("hidden_act", "gelu")
    if act not in _HF_ACT:
        raise ConfigError(f"{source}: hidden_act: got {act!r}; expected one of {sorted(_HF_ACT)}")
    fields = {k: data[k] for k in _CONFIG_KEYS if k in data}
    fields["hidden_act"] = gelu if act == "gelu" else _HF_ACT[act]
    missing = [k for k in _CONFIG_KEYS[:5] if k not in data]
    if missing:
        raise ConfigError(f"{source}: missing keys {missing}; is this a BERT config.json?")
    return bert_config_from_dict(fields, source)


# --------------------------------------------------------------------------------------------------
# Hugging Face
# --------------------------------------------------------------------------------------------------
def read_hf_weights(path: str) -> Tuple[Dict[str, np.ndarray], str]:
    """Tensors of an HF model folder or file (model.safetensors preferred, else pytorch_model.bin).

    pytorch_model.bin is read by src.model.torch_bin, which refuses any pickled code. Returns (tensors, file).
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        for name in ("model.safetensors", "pytorch_model.bin"):
            if os.path.isfile(os.path.join(path, name)):
                path = os.path.join(path, name)
                break
        else:
            raise FileNotFoundError(f"{path}: neither model.safetensors nor pytorch_model.bin found")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
        try:
            return dict(load_file(path)), path
        except Exception as err:  # safetensors raises its own error types
            raise CheckpointError(f"{path}: not a readable safetensors file: {err}") from None
    from src.model.torch_bin import load_torch_state_dict  # pylint: disable=import-outside-toplevel
    return load_torch_state_dict(path), path


def _hf_name(name: str) -> str:
    """HF (or HF-like dotted) tensor name -> ours, before prefixing."""
    name = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", name)
    return re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", name)


def hf_to_params(state: Mapping[str, np.ndarray], source: str) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """Rename HF BERT tensors to ours. Returns (params, {dropped source name: reason}).

    Accepts bare BertModel files (`embeddings.*`) and BertFor* files (`bert.*`, `cls.*`, `classifier.*`).
    Tied decoder copies are dropped only after checking they equal what they are tied to.
    """
    params: Dict[str, np.ndarray] = {}
    dropped: Dict[str, str] = {}
    for raw, value in state.items():
        name = _hf_name(raw)
        bare = name[len("bert."):] if name.startswith("bert.") else name
        reason = _drop_reason(bare)
        if reason:
            dropped[raw] = reason
        elif bare.split(".")[0] in ("embeddings", "encoder", "pooler"):
            params["bert." + bare] = np.asarray(value)
        elif name.startswith(("cls.predictions.", "classifier.")):
            params[name] = np.asarray(value)
        else:
            params[raw] = np.asarray(value)  # unknown: kept, so the strict check below reports it
    _drop_tied(params, dropped, source)
    return params, dropped


def _drop_tied(params: Dict[str, np.ndarray], dropped: Dict[str, str], source: str) -> None:
    ties = (("cls.predictions.decoder.weight", "bert.embeddings.word_embeddings.weight"),
            ("cls.predictions.decoder.bias", "cls.predictions.bias"))
    for copy, original in ties:
        if copy not in params:
            continue
        if original not in params or not np.array_equal(params[copy], params[original]):
            raise CheckpointError(f"{source}: {copy} is not tied to {original}; untied masked-LM decoders "
                                  f"are not supported")
        params.pop(copy)
        dropped[copy] = f"tied copy of {original}"


def infer_head(params: Mapping[str, np.ndarray], architectures: Sequence[str] = ()) -> Dict[str, Any]:
    """Head description from the tensors present (and HF `architectures` when given)."""
    has_mlm = any(n.startswith("cls.predictions.") for n in params)
    has_cls = "classifier.weight" in params
    if has_mlm and has_cls:
        raise CheckpointError("checkpoint has both a masked-LM head and a classifier; pass --head to choose")
    if has_cls:
        kind = "token_classification" if any("TokenClassification" in a for a in architectures) \
            else "sequence_classification"
        head: Dict[str, Any] = {"type": kind, "num_labels": int(params["classifier.weight"].shape[0])}
        if kind == "sequence_classification":
            head["pooled_activation"] = "none"  # HF/Google heads: dropout(pooled), no ReLU
        return head
    return {"type": "masked_lm"} if has_mlm else {"type": "backbone"}


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------
def _head_kwargs(head: Mapping[str, Any]) -> Dict[str, Any]:
    return {k: v for k, v in head.items() if k != "type"}


def _vocab_beside(path: str) -> Optional[str]:
    """The vocab.txt in the folder of a released model's weights or config, if there is one."""
    candidate = os.path.join(os.path.dirname(os.path.abspath(path)), "vocab.txt")
    return candidate if os.path.isfile(candidate) else None


# The general-distillation projection student hidden -> teacher hidden that released General TinyBERT checkpoints
# carry beside the student: `fit_dense.*` in the original (PyTorch TinyBertForPreTraining, one shared nn.Linear) and
# in a model-zoo GD train cell; `fit_denses.{k}.*` where one projection per layer was trained.
_FIT_DENSE = re.compile(r"^fit_dense\.(weight|bias)$|^fit_denses\.(\d+)\.(weight|bias)$")
FIT_DENSE_SUFFIX = ".fit_dense.ckpt"


def fit_dense_path(output: str) -> str:
    """Where a converter writes the projection of checkpoint `output`: `<stem>.fit_dense.ckpt` beside it."""
    return output[:-len(".ckpt")] + FIT_DENSE_SUFFIX if output.endswith(".ckpt") else output + FIT_DENSE_SUFFIX


def take_fit_dense(params: Dict[str, np.ndarray], config: BertConfig,
                   source: str) -> Tuple[Dict[str, np.ndarray], Dict[str, Any]]:
    """Remove the GD projection tensors from `params`; returns them under src.distill.loss.FitDense's names
    (`layers.{k}.weight/bias`) and their description ({} when there are none).

    Raises CheckpointError when a projection does not start at the student's hidden size or lacks a half.
    """
    found: Dict[int, Dict[str, np.ndarray]] = {}
    for name in [n for n in params if _FIT_DENSE.match(n)]:
        match = _FIT_DENSE.match(name)
        index, kind = (0, match.group(1)) if match.group(1) else (int(match.group(2)), match.group(3))
        found.setdefault(index, {})[kind] = np.asarray(params.pop(name), np.float32)
    if not found:
        return {}, {}
    if sorted(found) != list(range(len(found))):
        raise CheckpointError(f"{source}: fit_dense projections {sorted(found)}; expected 0..{len(found) - 1}")
    out: Dict[str, np.ndarray] = {}
    teacher_hidden = None
    for index, parts in sorted(found.items()):
        weight, bias = parts.get("weight"), parts.get("bias")
        if weight is None or bias is None:
            raise CheckpointError(f"{source}: fit_dense projection {index} has no "
                                  f"{'weight' if weight is None else 'bias'}")
        if weight.ndim != 2 or weight.shape[1] != config.hidden_size or bias.shape != (weight.shape[0],):
            raise CheckpointError(f"{source}: fit_dense projection {index} has weight {list(weight.shape)} and bias "
                                  f"{list(bias.shape)}; expected [teacher_hidden, {config.hidden_size}] and "
                                  f"[teacher_hidden] (from the student's hidden_size {config.hidden_size})")
        if teacher_hidden not in (None, weight.shape[0]):
            raise CheckpointError(f"{source}: fit_dense projections map to different sizes")
        teacher_hidden = int(weight.shape[0])
        out[f"layers.{index}.weight"], out[f"layers.{index}.bias"] = weight, bias
    return out, {"count": len(found), "student_hidden": int(config.hidden_size), "teacher_hidden": teacher_hidden}


def finish(params: Dict[str, np.ndarray], config: BertConfig, head: Dict[str, Any], output: str,
           source: str, dropped: Mapping[str, str], allow_missing: Sequence[str] = (),
           vocab_file: Optional[str] = None) -> str:
    """Check `params` against the network for (config, head), fill explicitly allowed gaps, save. With
    `vocab_file` (the model's vocab.txt) its fingerprint goes into the sidecar, after a size check.

    A general-distillation projection in `params` (take_fit_dense) is written to `fit_dense_path(output)` with the
    head {"type": "fit_dense", ...} that training saves, and named in the sidecar ("fit_dense"): general and task
    distillation starting from this checkpoint continue with it instead of a fresh projection.
    """
    from src.model.heads import build_model  # pylint: disable=import-outside-toplevel

    projection, projection_info = take_fit_dense(params, config, source)
    recorded: Dict[str, Any] = {}
    if vocab_file:
        recorded["vocab"] = vocab.fingerprint(vocab_file)
        vocab.check_size(recorded["vocab"], f"vocab file {vocab_file}", config.vocab_size,
                         f"the vocab_size of {source}")
        logger.info("vocabulary: %s (%d tokens)", vocab_file, recorded["vocab"]["size"])

    if head["type"] == "backbone":  # a bare BertModel: its names carry no "bert." prefix
        params = {n[len("bert."):] if n.startswith("bert.") else n: v for n, v in params.items()}
        allow_missing = [p[len("bert."):] if p.startswith("bert.") else p for p in allow_missing]
    net = build_model(config, head["type"], **_head_kwargs(head))
    expected = {p.name: tuple(p.shape) for p in net.get_parameters()}
    found = {n: tuple(v.shape) for n, v in params.items()}
    filled, _ = check_names(expected, found, source, allow_missing=allow_missing)
    for p in net.get_parameters():
        if p.name in filled:
            params[p.name] = p.asnumpy()  # fresh initialisation, recorded below
    for name, reason in sorted(dropped.items()):
        logger.info("not converted: %s (%s)", name, reason)
    if filled:
        logger.warning("initialised, not converted (allowed by --allow_missing): %s", ", ".join(filled))
    ordered = {name: params[name].astype(np.float32) for name in expected}
    extra = {"converted_from": os.path.abspath(source), "not_converted": dict(sorted(dropped.items())),
             "initialised_not_converted": filled, **recorded}
    if projection:  # written first: the student's sidecar never names a file that is not there
        path = save_checkpoint(projection, fit_dense_path(output),
                               head={"type": "fit_dense", **projection_info},
                               extra={"converted_from": os.path.abspath(source), "student": os.path.basename(output)})
        extra["fit_dense"] = {"file": os.path.basename(path), **projection_info}
        logger.info("fit_dense: %d projection(s) %d -> %d written to %s", projection_info["count"],
                    projection_info["student_hidden"], projection_info["teacher_hidden"], path)
    return save_checkpoint(ordered, output, config, head, extra)


def convert_hf(path: str, output: str, head: Optional[str] = None, num_labels: Optional[int] = None,
               pooled_activation: Optional[str] = None, config_file: Optional[str] = None,
               allow_missing: Sequence[str] = (), vocab_file: Optional[str] = None) -> str:
    """Hugging Face BERT folder or weights file -> our checkpoint. Returns the output path."""
    weights, weights_file = read_hf_weights(path)
    config_path = config_file or os.path.join(os.path.dirname(weights_file), "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"{config_path}: no config.json next to {weights_file}; pass --config")
    hf_config = read_mapping(config_path, "a JSON object of BERT config fields")
    config = bert_config_from_json(hf_config, config_path, gelu="gelu")
    params, dropped = hf_to_params(weights, weights_file)
    spec = _choose_head(params, head, num_labels, pooled_activation, hf_config.get("architectures") or ())
    return finish(params, config, spec, output, weights_file, dropped, allow_missing,
                  vocab_file or _vocab_beside(weights_file))


def _choose_head(params: Dict[str, np.ndarray], head: Optional[str], num_labels: Optional[int],
                 pooled_activation: Optional[str], architectures: Sequence[str] = ()) -> Dict[str, Any]:
    """The inferred head, or the one asked for (tensors of other heads are then reported as unexpected).

    Raises CheckpointError when a flag does not apply to the chosen head, instead of ignoring it.
    """
    spec = infer_head(params, architectures)
    if head is not None and head != spec["type"]:
        spec = {"type": head}
        if head in ("sequence_classification", "token_classification"):
            if "classifier.weight" in params:
                spec["num_labels"] = int(params["classifier.weight"].shape[0])
            elif num_labels is None:
                raise CheckpointError(f"--head {head} needs --num_labels (the checkpoint has no classifier)")
            else:
                spec["num_labels"] = num_labels
    if num_labels is not None:
        if "num_labels" not in spec:
            raise CheckpointError(f"--num_labels does not apply to a {spec['type']} head")
        if spec["num_labels"] != num_labels:
            raise CheckpointError(f"--num_labels {num_labels} but the checkpoint's classifier has "
                                  f"{spec['num_labels']} outputs")
    if spec["type"] == "sequence_classification":
        spec["pooled_activation"] = pooled_activation or spec.get("pooled_activation", "none")
    elif pooled_activation is not None:
        raise CheckpointError(f"--pooled_activation applies to sequence_classification, not to {spec['type']}")
    return spec


# --------------------------------------------------------------------------------------------------
# Google TF BERT
# --------------------------------------------------------------------------------------------------
def tf_name(name: str) -> Tuple[str, bool]:
    """Google TF BERT variable name -> (HF-style dotted name, transpose?). Kernels are [in, out] in TF."""
    dotted = re.sub(r"layer_(\d+)", r"layer.\1", name.replace("/", "."))
    if dotted == "output_weights":  # run_classifier.py head, already [num_labels, hidden]
        return "classifier.weight", False
    if dotted == "output_bias":
        return "classifier.bias", False
    if dotted == "cls.predictions.output_bias":
        return "cls.predictions.bias", False
    if dotted.endswith(".kernel"):
        return dotted[:-len(".kernel")] + ".weight", True
    if re.fullmatch(r"bert\.embeddings\.(word|position|token_type)_embeddings", dotted):
        return dotted + ".weight", False  # Google's embedding tables are bare variables
    return _hf_name(dotted), False


def read_tf_checkpoint(prefix: str) -> Dict[str, np.ndarray]:
    """Variables of a TF checkpoint (`model.ckpt-1000` prefix or its folder). Needs the TensorFlow extra."""
    try:
        import tensorflow as tf  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ImportError("reading Google TF BERT checkpoints needs TensorFlow, an optional extra: "
                          "pip install -r requirements-tf.txt (or scripts/setup.sh --with-tf)") from None
    try:
        reader = tf.train.load_checkpoint(prefix)
    except (ValueError, tf.errors.OpError) as err:
        raise CheckpointError(f"{prefix}: not a readable TF checkpoint (give the prefix, e.g. "
                              f"bert_model.ckpt, or its folder): {err}") from None
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def tf_to_state(variables: Mapping[str, np.ndarray]) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """Rename TF variables to HF-style names (transposing kernels); optimizer state is dropped."""
    state: Dict[str, np.ndarray] = {}
    dropped: Dict[str, str] = {}
    for name, value in variables.items():
        reason = _drop_reason(name) or _drop_reason(name.replace("/", "."))
        if reason:
            dropped[name] = reason
            continue
        new, transpose = tf_name(name)
        state[new] = np.ascontiguousarray(np.asarray(value).T) if transpose else np.asarray(value)
    return state, dropped


def convert_tf(prefix: str, bert_config: str, output: str, head: Optional[str] = None,
               num_labels: Optional[int] = None, pooled_activation: Optional[str] = None,
               allow_missing: Sequence[str] = (), vocab_file: Optional[str] = None) -> str:
    """Google TF BERT checkpoint + bert_config.json -> our checkpoint.

    Google's `gelu` is the tanh approximation, so the converted config says `gelu_tanh`: the converted
    model computes exactly the function the checkpoint was trained with.
    """
    config = bert_config_from_json(read_mapping(bert_config, "a JSON object of BERT config fields"), bert_config, gelu="gelu_tanh")
    state, dropped = tf_to_state(read_tf_checkpoint(prefix))
    params, more = hf_to_params(state, prefix)
    dropped.update(more)
    spec = _choose_head(params, head, num_labels, pooled_activation)
    return finish(params, config, spec, output, prefix, dropped, allow_missing,
                  vocab_file or _vocab_beside(bert_config))


# --------------------------------------------------------------------------------------------------
# MindSpore model zoo (official/nlp/Bert, research/nlp/tinybert, hub assets)
# --------------------------------------------------------------------------------------------------
# Training state the zoo saves with the whole train cell. Anchored on prefixes: optimizer copies such as
# adam_m.bert.bert... end with the same names as real weights.
_ZOO_STATE_PREFIXES = ("adam_m.", "adam_v.", "lamb_m.", "lamb_v.", "moments.", "moment1.", "moment2.",
                       "accu_grads.")
_ZOO_STATE_NAMES = ("global_step", "scale_sense", "loss_scale", "current_iterator_step",
                    "last_overflow_iterator_step", "local_step", "accu_overflow", "accu_loss", "momentum",
                    "learning_rate", "beta1_power", "beta2_power", "epoch_num", "step_num")

# Names inside a zoo BertModel / TinyBertModel (after its `bert_` or `tinybert_` attribute prefix) -> HF.
_ZOO_BACKBONE = (
    (r"embedding_lookup\.embedding_table", "embeddings.word_embeddings.weight"),
    (r"embedding_postprocessor\.(token_type_embedding\.)?embedding_table", "embeddings.token_type_embeddings.weight"),
    (r"embedding_postprocessor\.full_position_embedding\.embedding_table", "embeddings.position_embeddings.weight"),
    (r"embedding_postprocessor\.full_position_embeddings", "embeddings.position_embeddings.weight"),
    (r"embedding_postprocessor\.layernorm\.(gamma|beta)", r"embeddings.LayerNorm.\1"),
    (r"encoder\.layers\.(\d+)\.attention\.attention\.(query|key|value)_layer\.(weight|bias)",
     r"encoder.layer.\1.attention.self.\2.\3"),
    (r"encoder\.layers\.(\d+)\.attention\.output\.dense\.(weight|bias)", r"encoder.layer.\1.attention.output.dense.\2"),
    (r"encoder\.layers\.(\d+)\.attention\.output\.layernorm\.(gamma|beta)",
     r"encoder.layer.\1.attention.output.LayerNorm.\2"),
    (r"encoder\.layers\.(\d+)\.intermediate\.(weight|bias)", r"encoder.layer.\1.intermediate.dense.\2"),
    (r"encoder\.layers\.(\d+)\.output\.dense\.(weight|bias)", r"encoder.layer.\1.output.dense.\2"),
    (r"encoder\.layers\.(\d+)\.output\.layernorm\.(gamma|beta)", r"encoder.layer.\1.output.LayerNorm.\2"),
)
# Names next to the BertModel inside BertCLS / BertPreTraining / BertModelCLS -> HF.
_ZOO_HEADS = (
    (r"dense_1\.(weight|bias)", r"classifier.\1"),
    (r"cls1\.dense\.(weight|bias)", r"cls.predictions.transform.dense.\1"),
    (r"cls1\.layernorm\.(gamma|beta)", r"cls.predictions.transform.LayerNorm.\1"),
    (r"cls1\.output_bias", "cls.predictions.bias"),
    (r"cls2\.dense\.(weight|bias)", r"cls.seq_relationship.\1"),
    (r"dense\.(weight|bias)", r"classifier.\1"),  # legacy TinyBERT teacher head (phase_type="teacher")
    (r"fit_dense\.(weight|bias)", r"fit_dense.\1"),  # GD projection of a saved train cell (take_fit_dense)
)
# A GD or TD train cell saved whole also holds its teacher: not part of the student.
_ZOO_TEACHER = "teacher."


def _zoo_root(names: Sequence[str], source: str) -> Tuple[str, str]:
    """Find where the BertModel sits: returns (prefix before `bert_`/`tinybert_`, that attribute prefix)."""
    # the student's, not the teacher's a whole train cell also holds
    for name in sorted(names, key=lambda n: _ZOO_TEACHER in n):
        match = re.match(r"^(.*?)(tinybert_|bert_)embedding_lookup\.embedding_table$", name)
        if match:
            return match.group(1), match.group(2)
    raise CheckpointError(f"{source}: no '*bert_embedding_lookup.embedding_table' tensor; this is not a "
                          f"MindSpore model-zoo BERT/TinyBERT checkpoint (first names: {', '.join(sorted(names)[:5])})")


def zoo_to_state(params: Mapping[str, np.ndarray], source: str) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """Rename zoo tensors to HF-style names; training state is dropped, anything unknown is kept as is
    (so the strict check reports it)."""
    root, attr = _zoo_root(list(params), source)
    parent = root[:-len("bert.")] if root.endswith("bert.") else None
    state: Dict[str, np.ndarray] = {}
    dropped: Dict[str, str] = {}
    for name, value in params.items():
        if name.startswith(_ZOO_STATE_PREFIXES) or name in _ZOO_STATE_NAMES:
            dropped[name] = "training state (optimizer, loss scale or counters)"
            continue
        if parent is not None and name.startswith(parent + _ZOO_TEACHER):
            dropped[name] = "the distillation teacher saved with the train cell (convert the teacher on its own)"
            continue
        state[_zoo_name(name, root, attr, parent)] = np.asarray(value)
    return state, dropped


def _zoo_name(name: str, root: str, attr: str, parent: Optional[str]) -> str:
    if name.startswith(root + attr):
        inner = name[len(root + attr):]
        for pattern, target in _ZOO_BACKBONE:
            if re.fullmatch(pattern, inner):
                return "bert." + re.sub(pattern, target, inner)
    if name.startswith(root) and re.fullmatch(r"dense\.(weight|bias)", name[len(root):]):
        return "bert.pooler." + name[len(root):]
    if parent is not None and name.startswith(parent):
        inner = name[len(parent):]
        for pattern, target in _ZOO_HEADS:
            if re.fullmatch(pattern, inner):
                return re.sub(pattern, target, inner)
    return name


# Ours -> the model zoo's names, as its TinyBERT code (the 2020 BERT cells the hub assets were saved from) writes
# them; the inverse of _ZOO_BACKBONE / _ZOO_HEADS (tests/test_hub.py checks the round trip). {R}: where the
# BertModel sits plus its attribute prefix (`bert.bert.bert_`), {P}: the prefix of the cell holding it (`bert.`).
_TO_ZOO = (
    (r"bert\.embeddings\.word_embeddings\.weight", "{R}embedding_lookup.embedding_table"),
    (r"bert\.embeddings\.token_type_embeddings\.weight", "{R}embedding_postprocessor.embedding_table"),
    (r"bert\.embeddings\.position_embeddings\.weight", "{R}embedding_postprocessor.full_position_embeddings"),
    (r"bert\.embeddings\.LayerNorm\.(weight|bias)", "{R}embedding_postprocessor.layernorm.{LN}"),
    (r"bert\.encoder\.layer\.(\d+)\.attention\.self\.(query|key|value)\.(weight|bias)",
     "{R}encoder.layers.\\1.attention.attention.\\2_layer.\\3"),
    (r"bert\.encoder\.layer\.(\d+)\.attention\.output\.dense\.(weight|bias)", "{R}encoder.layers.\\1.attention.output.dense.\\2"),
    (r"bert\.encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.(weight|bias)",
     "{R}encoder.layers.\\1.attention.output.layernorm.{LN}"),
    (r"bert\.encoder\.layer\.(\d+)\.intermediate\.dense\.(weight|bias)", "{R}encoder.layers.\\1.intermediate.\\2"),
    (r"bert\.encoder\.layer\.(\d+)\.output\.dense\.(weight|bias)", "{R}encoder.layers.\\1.output.dense.\\2"),
    (r"bert\.encoder\.layer\.(\d+)\.output\.LayerNorm\.(weight|bias)", "{R}encoder.layers.\\1.output.layernorm.{LN}"),
    (r"bert\.pooler\.dense\.(weight|bias)", "{B}dense.\\1"),
    (r"classifier\.(weight|bias)", "{P}dense_1.\\1"),
)


def zoo_names(names: Sequence[str], root: str = "bert.bert.", attr: str = "bert_") -> Dict[str, str]:
    """Our parameter names (a head network's: `bert.*`, `classifier.*`) -> the model zoo's, for a BertModel at
    `root` with attribute prefix `attr` (a TD checkpoint: `bert.bert.` and `bert_`; the classifier sits beside it).
    Raises CheckpointError for a name the zoo has no place for (e.g. a masked-LM head)."""
    parent = root[:-len("bert.")] if root.endswith("bert.") else root
    out = {}
    for name in names:
        for pattern, template in _TO_ZOO:
            match = re.fullmatch(pattern, name)
            if match:
                layer_norm = {"weight": "gamma", "bias": "beta"}.get((match.groups() or ("",))[-1], "")
                filled = template.format(R=root + attr, B=root, P=parent, LN=layer_norm)
                out[name] = match.expand(filled)
                break
        else:
            raise CheckpointError(f"{name}: no model-zoo name for this parameter")
    return out


# The zoo's BertConfig defaults: nn.GELU() (tanh approximation) and nn.LayerNorm's epsilon 1e-7.
ZOO_MODEL_DEFAULTS = {"hidden_act": "gelu_tanh", "layer_norm_eps": 1e-7}


def convert_zoo(path: str, config: BertConfig, output: str, head: Optional[str] = None,
                num_labels: Optional[int] = None, pooled_activation: Optional[str] = None,
                allow_missing: Sequence[str] = (), vocab_file: Optional[str] = None) -> str:
    """MindSpore model-zoo BERT/TinyBERT checkpoint -> ours. The zoo saves no config: pass it."""
    from src.model.checkpoint import read_checkpoint  # pylint: disable=import-outside-toplevel

    state, dropped = zoo_to_state(read_checkpoint(path), path)
    params, more = hf_to_params(state, path)
    dropped.update(more)
    spec = _choose_head(params, head, num_labels, pooled_activation)
    if spec["type"] == "sequence_classification" and pooled_activation is None:
        raise CheckpointError(
            f"{path}: has a classifier (dense_1); the zoo uses that name for three different heads, so say "
            f"which: --pooled_activation relu (TinyBERT BertModelCLS: classifier(ReLU(pooled))), "
            f"--pooled_activation none (BERT BertCLSModel, e.g. a fine-tuned teacher: classifier(pooled)), "
            f"or --head token_classification (BertNERModel / BertModelNER)")
    return finish(params, config, spec, output, path, dropped, allow_missing, vocab_file)
