"""A checkpoint of ours as a Hugging Face model folder that `transformers` loads (no torch needed to write it).

    DIR/config.json               BertConfig (model_type bert, architectures, id2label / label2id, problem_type)
    DIR/model.safetensors         float32 tensors under HF's names, metadata {"format": "pt", ...provenance}
    DIR/vocab.txt                 the vocabulary the model was trained with (checked against its fingerprint)
    DIR/tokenizer_config.json     BertTokenizer, do_lower_case, model_max_length
    DIR/special_tokens_map.json   [UNK] [SEP] [PAD] [CLS] [MASK] (transformers 4.x reads it; 5.x as legacy)

Our parameter names are HF's already. What differs, and what this module does about it:
- the head: backbone -> BertModel, sequence_classification -> BertForSequenceClassification, token_classification
  -> BertForTokenClassification, masked_lm -> BertForMaskedLM. HF's sequence classifier reads the pooled output
  directly, so a TinyBERT head on ReLU(pooled) (`pooled_activation: relu`, every model-zoo task checkpoint) has no
  HF class with the same logits: refused, naming the way out (`--head backbone` writes the encoder and pooler);
- HF's token-classification and masked-LM models have no pooler: its tensors are left out;
- the masked-LM decoder is tied to the word embeddings in both: nothing extra is written;
- `gelu_tanh` is HF's `gelu_new`; layer_norm_eps and every size are written as they are.
The folder is written under a temporary name beside DIR and renamed into place when complete. With torch and
transformers installed (requirements-hf.txt), `verify_hf` then loads it with transformers and compares its outputs
with our network's at two shapes; a mismatch removes the folder.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any, Dict, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from src.config import BertConfig
from src.data import vocab
from src.infra.files import file_sha256, write_json_atomic

SPECIAL_TOKENS = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                  "mask_token": "[MASK]"}
ARCHITECTURES = {"backbone": "BertModel", "sequence_classification": "BertForSequenceClassification",
                 "token_classification": "BertForTokenClassification", "masked_lm": "BertForMaskedLM"}
HF_ACT = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}
_SIZE_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
              "max_position_embeddings", "type_vocab_size")
_FLOAT_KEYS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "initializer_range", "layer_norm_eps")


HF_CHECK_TOLERANCE = 1e-4  # absolute, on logits / hidden states (float32 in both; measured ~1e-6 on MiniLM)
CHECK_SHAPES = ((2, 16), (1, 7))  # (batch, sequence): two shapes, one of a single row


class HFExportError(ValueError):
    """A checkpoint that cannot be written as a Hugging Face model (head, vocabulary, labels, output folder)."""


def _hf_available() -> Optional[str]:
    """None when torch and transformers import, else why not."""
    try:
        import torch  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
        import transformers  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    except ImportError as err:
        return f"{err} (pip install -r requirements-hf.txt)"
    return None


def verify_hf(folder: str, net, tolerance: float = HF_CHECK_TOLERANCE) -> Dict[str, Any]:
    """Load `folder` with transformers (the class its config.json names) and compare with `net`, our network for
    the same weights, on example batches; returns {"max_abs_diff", "compared", "shapes", "transformers"}.

    Compared: the logits of a head; last_hidden_state and pooler_output of a BertModel. Positions the attention
    mask leaves out are not compared for per-token outputs (nothing downstream reads them).
    """
    import mindspore as ms  # pylint: disable=import-outside-toplevel
    import torch  # pylint: disable=import-outside-toplevel
    import transformers  # pylint: disable=import-outside-toplevel

    from src.model.bert import POOLED_OUTPUT, SEQUENCE_OUTPUT  # pylint: disable=import-outside-toplevel
    from src.model.heads import LOGITS  # pylint: disable=import-outside-toplevel
    from src.ship.export import example_inputs  # pylint: disable=import-outside-toplevel

    transformers.utils.logging.disable_progress_bar()  # "Loading weights" for every check is noise here
    with open(os.path.join(folder, "config.json"), encoding="utf-8") as f:
        architecture = json.load(f)["architectures"][0]
    model = getattr(transformers, architecture).from_pretrained(folder, attn_implementation="eager").eval()
    net.set_train(False)
    worst, compared = 0.0, []
    for batch, seq in CHECK_SHAPES:
        ids, types, mask = example_inputs(net.config, batch, min(seq, net.config.max_position_embeddings))
        with torch.no_grad():
            hf = model(**{name: torch.from_numpy(a.astype(np.int64)) for name, a in
                          (("input_ids", ids), ("token_type_ids", types), ("attention_mask", mask))})
        mine = net(ms.Tensor(ids), ms.Tensor(types), ms.Tensor(mask))
        if architecture == "BertModel":
            pairs = [("last_hidden_state", hf.last_hidden_state, mine[SEQUENCE_OUTPUT], True),
                     ("pooler_output", hf.pooler_output, mine[POOLED_OUTPUT], False)]
        else:
            pairs = [("logits", hf.logits, mine[LOGITS], architecture != "BertForSequenceClassification")]
        for name, theirs, ours, per_token in pairs:
            theirs, ours = theirs.numpy().astype(np.float64), ours.asnumpy().astype(np.float64)
            if theirs.shape != ours.shape:
                raise HFExportError(f"check of {folder}: transformers' {name} has shape {theirs.shape}, ours "
                                    f"{ours.shape}")
            if per_token:
                theirs, ours = theirs[mask == 1], ours[mask == 1]
            worst = max(worst, float(np.max(np.abs(theirs - ours))))
            if name not in compared:
                compared.append(name)
    result = {"max_abs_diff": worst, "compared": compared, "shapes": [list(s) for s in CHECK_SHAPES],
              "transformers": transformers.__version__, "class": architecture}
    if not worst <= tolerance:  # also catches NaN
        raise HFExportError(f"check of {folder}: max |transformers {architecture} - ours| = {worst:.3g} > "
                            f"{tolerance} on {', '.join(compared)}; the folder was removed")
    return result


def hf_config(config: BertConfig, head: Dict[str, Any], labels: Optional[Sequence[str]] = None,
              regression: bool = False) -> Dict[str, Any]:
    """config.json content for our config and head."""
    out: Dict[str, Any] = {"model_type": "bert", "architectures": [ARCHITECTURES[head["type"]]]}
    out.update({k: int(getattr(config, k)) for k in _SIZE_KEYS})
    out.update({k: float(getattr(config, k)) for k in _FLOAT_KEYS})
    out.update(hidden_act=HF_ACT[config.hidden_act], position_embedding_type="absolute", pad_token_id=0,
               classifier_dropout=None)
    if head["type"] in ("sequence_classification", "token_classification"):
        count = int(head["num_labels"])
        names = list(labels) if labels is not None else [f"LABEL_{i}" for i in range(count)]
        if len(names) != count:
            raise HFExportError(f"{len(names)} label names for a classifier of {count} labels")
        out["id2label"] = {str(i): name for i, name in enumerate(names)}
        out["label2id"] = {name: i for i, name in enumerate(names)}
        if head["type"] == "sequence_classification":
            out["problem_type"] = "regression" if regression or count == 1 else "single_label_classification"
    return out


def hf_tensors(params: Dict[str, np.ndarray], head: Dict[str, Any]) -> Dict[str, np.ndarray]:
    """Our tensors under the names HF's class for `head` has (C-contiguous float32)."""
    kind = head["type"]
    if kind == "sequence_classification" and head.get("pooled_activation", "relu") != "none":
        raise HFExportError("the classifier reads ReLU(pooled output) (pooled_activation: relu, TinyBERT's and the "
                            "model zoo's head); Hugging Face's BertForSequenceClassification reads the pooled output "
                            "itself, so no HF class gives the same logits. Write the encoder with --head backbone "
                            "(the classifier stays in the .ckpt), or train with task.pooled_activation: none")
    out = {}
    for name, value in params.items():
        if kind in ("token_classification", "masked_lm") and name.startswith("bert.pooler."):
            continue  # HF builds these models without a pooler
        out[name] = np.ascontiguousarray(value, dtype=np.float32)
    return out


def _backbone_of(params: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """The encoder and pooler of a head checkpoint, under BertModel's names (no "bert." prefix)."""
    return {name[len("bert."):]: value for name, value in params.items() if name.startswith("bert.")}


def _vocab_file(meta: Dict[str, Any], vocab_file: Optional[str], checkpoint: str) -> Tuple[str, Dict[str, Any]]:
    recorded = meta.get(vocab.KEY)
    path = vocab_file or (recorded or {}).get("file")
    if not path:
        raise HFExportError(f"{checkpoint}: its .json names no vocabulary; pass --vocab_file (the vocab.txt the "
                            f"model was trained with)")
    if not os.path.isfile(path):
        raise HFExportError(f"vocab file {path} does not exist" + ("" if vocab_file else
                            f" (named in {checkpoint}'s .json); pass --vocab_file"))
    found = vocab.fingerprint(path)
    vocab.check_pair(found, f"vocab file {path}", recorded, checkpoint)
    return path, found


class HFFolder(NamedTuple):
    path: str
    check: Dict[str, Any]  # verify_hf's result, or {"skipped": why}


def export_hf(checkpoint: str, output: str, **kwargs: Any) -> str:
    """write_hf_folder, returning only the folder."""
    return write_hf_folder(checkpoint, output, **kwargs).path


def write_hf_folder(checkpoint: str, output: str, vocab_file: Optional[str] = None,
                    labels: Optional[Sequence[str]] = None, head: Optional[str] = None, do_lower_case: bool = True,
                    overwrite: bool = False, verify: Optional[bool] = None) -> HFFolder:
    """Write checkpoint `checkpoint` (a .ckpt with its .json) as the Hugging Face folder `output`.

    head: "backbone" writes only the encoder and pooler of a task checkpoint (as BertModel).
    labels: the classifier's label names in id order (default: LABEL_0 ...).
    verify: check the folder with transformers (verify_hf); None: when torch and transformers are installed,
    True: always (an error without them), False: never.
    """
    from safetensors.numpy import save_file  # pylint: disable=import-outside-toplevel

    from src.model.checkpoint import (load_model, read_checkpoint, read_metadata,  # pylint: disable=import-outside-toplevel
                                      read_model_config)

    meta = read_metadata(checkpoint, verify=True)
    config = read_model_config(checkpoint)
    spec = dict(meta.get("head") or {"type": "backbone"})
    if spec["type"] not in ARCHITECTURES:
        raise HFExportError(f"{checkpoint}: a {spec['type']} checkpoint is not a model; expected one of "
                            f"{', '.join(ARCHITECTURES)}")
    params = read_checkpoint(checkpoint)
    if head == "backbone" and spec["type"] != "backbone":
        params, spec = _backbone_of(params), {"type": "backbone"}
    elif head not in (None, spec["type"]):
        raise HFExportError(f"--head {head}: {checkpoint} is a {spec['type']} checkpoint; only 'backbone' (its "
                            f"encoder) can be chosen instead")
    tensors = hf_tensors(params, spec)
    source_vocab, found = _vocab_file(meta, vocab_file, checkpoint)
    vocab.check_size(found, f"vocab file {source_vocab}", config.vocab_size,
                     f"the vocab_size of {checkpoint}")
    content = hf_config(config, spec, labels)
    missing = _hf_available() if verify is not False else None
    if verify and missing:
        raise HFExportError(f"the check needs torch and transformers: {missing}")
    if os.path.exists(output) and os.listdir(output) and not overwrite:
        raise HFExportError(f"{output} exists and is not empty; choose another folder or pass --overwrite")
    parent = os.path.dirname(os.path.abspath(output))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-hf-", dir=parent)
    try:
        save_file(tensors, os.path.join(tmp, "model.safetensors"),
                  metadata={"format": "pt", "source_checkpoint": os.path.abspath(checkpoint),
                            "source_sha256": meta.get("sha256") or file_sha256(checkpoint)})
        write_json_atomic(os.path.join(tmp, "config.json"), content)
        shutil.copyfile(source_vocab, os.path.join(tmp, "vocab.txt"))
        write_json_atomic(os.path.join(tmp, "tokenizer_config.json"),
                    {"tokenizer_class": "BertTokenizer", "do_lower_case": bool(do_lower_case), "strip_accents": None,
                     "tokenize_chinese_chars": True, "model_max_length": int(config.max_position_embeddings),
                     **SPECIAL_TOKENS})
        write_json_atomic(os.path.join(tmp, "special_tokens_map.json"), SPECIAL_TOKENS)
        check = None
        if verify is not False and not missing:
            net = load_model(checkpoint, head="backbone") if spec["type"] == "backbone" else load_model(checkpoint)
            check = verify_hf(tmp, net)
        if os.path.exists(output):
            shutil.rmtree(output)
        os.replace(tmp, output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return HFFolder(output, check or {"skipped": "not asked for" if verify is False else missing})

