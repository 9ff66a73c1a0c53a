"""The exported-model file contract, shared by the exporter and the runners (no MindSpore import, so light tools
such as preprocess.py can read it too).

Beside every export `<file>` (e.g. `student.onnx`) goes `<file>.json` (`student.onnx.json`): format tag, model
config, head, input/output names, shapes and dtypes, source checkpoint and its SHA-256, the GELU formulation and
the export check. Inputs are `input_ids`, `token_type_ids`, `attention_mask` (int32 [B, S]); the output is
`logits` (float32 [B, C], [B, S, C] or [B, S, V] by head).
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

from src.config import BertConfig

FORMAT = "tinybert-mindspore-export"
FORMAT_VERSION = 1
EXTENSIONS = {"MINDIR": ".mindir", "ONNX": ".onnx", "AIR": ".air"}
INPUT_NAMES = ("input_ids", "token_type_ids", "attention_mask")
OUTPUT_NAME = "logits"
EXPORTABLE_HEADS = ("sequence_classification", "token_classification", "masked_lm")


class ExportError(ValueError):
    """An export was asked for something that cannot be done, or the exported file does not match the Cell."""


def normalize_format(file_format: str) -> str:
    """'onnx' -> 'ONNX'; anything but MINDIR, ONNX and AIR raises ExportError."""
    name = str(file_format).upper()
    if name not in EXTENSIONS:
        raise ExportError(f"file_format: got {file_format!r}; expected one of {', '.join(EXTENSIONS)}")
    return name


def output_path(output: str, file_format: str) -> str:
    """The file an export to `output` writes: the format's extension is added unless already there."""
    fmt = normalize_format(file_format)
    ext = EXTENSIONS[fmt]
    if output.lower().endswith(ext):
        return output[: -len(ext)] + ext  # MindSpore writes the extension in lower case
    for other, other_ext in EXTENSIONS.items():
        if output.lower().endswith(other_ext):
            raise ExportError(f"file_name: {output!r} ends with {other_ext} (the {other} extension) but file_format "
                              f"is {fmt}; use a name ending with {ext} or without an extension")
    if output.lower().endswith(".ckpt") or output.lower().endswith(".json"):
        raise ExportError(f"file_name: {output!r} would be written as {output}{ext} beside a checkpoint-like "
                          f"name; give the name without .ckpt/.json")
    return output + ext


def metadata_path(path: str) -> str:
    """`deploy/student.onnx` -> `deploy/student.onnx.json` (never the checkpoint's `student.json`)."""
    return path + ".json"


def output_shape(config: BertConfig, head: Dict[str, Any], batch: Optional[int], seq: Optional[int]) -> List[Any]:
    """Shape of `logits` for a head: [B, C], [B, S, C] or [B, S, V] (None marks a free dimension)."""
    if head["type"] == "sequence_classification":
        return [batch, int(head["num_labels"])]
    if head["type"] == "token_classification":
        return [batch, seq, int(head["num_labels"])]
    return [batch, seq, config.vocab_size]


def read_export_metadata(path: str) -> Dict[str, Any]:
    """The JSON written beside exported file `path`, checked to belong to it (format tag and file size)."""
    meta_file = metadata_path(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"exported model not found: {path}")
    if not os.path.isfile(meta_file):
        raise ExportError(f"{path}: no description beside it ({meta_file}); files written by export.py / "
                          f"src.ship.export have one (a missing one means the export failed or was interrupted)")
    with open(meta_file, encoding="utf-8") as f:
        try:
            meta = json.load(f)
        except json.JSONDecodeError as err:
            raise ExportError(f"{meta_file}: not valid JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ExportError(f"{meta_file}: format is {found!r}, expected {FORMAT!r}")
    size = os.path.getsize(path)
    if meta.get("file_size") != size:
        raise ExportError(f"{path}: file size {size} does not match {meta.get('file_size')} recorded in {meta_file}; "
                          f"the file was replaced after export; export again")
    return meta
