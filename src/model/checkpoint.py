"""All checkpoint I/O: atomic saves with the model config beside them, strict loads that list what is wrong.

A checkpoint is two files with the same stem:
    model.ckpt   MindSpore checkpoint (parameter name -> tensor)
    model.json   {"format": ..., "model": BertConfig fields, "head": {...}, "file_size": ..., ...}

Loading never matches by suffix and never ignores leftovers: missing names, unexpected names and shape
mismatches raise CheckpointError listing the first ones, unless the caller names them in
`allow_missing` / `allow_unexpected` (glob patterns such as "classifier.*"), which are then logged.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import logging
import os
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import mindspore as ms
from mindspore import Parameter, Tensor, nn

from src.config import BertConfig, ConfigError, bert_config_from_dict, to_dict
from src.infra.files import file_sha256, fsync_replace, temporary_name
from src.infra.protobuf import length_delimited, varint
from src.infra.backend import Backend
from src.model.bert import PORTABLE
from src.model.heads import build_model, head_spec

logger = logging.getLogger(__name__)

FORMAT = "tinybert-mindspore-checkpoint"
FORMAT_VERSION = 1
_LIST_LIMIT = 10  # how many names an error lists before "... and N more"


class CheckpointError(ValueError):
    """A checkpoint is missing, partial, or does not match the network it is loaded into."""


class LoadReport(NamedTuple):
    """What a strict load did: names kept at their initial value and names of the file left unused."""

    loaded: int
    allowed_missing: Tuple[str, ...]
    allowed_unexpected: Tuple[str, ...]


def sidecar_path(ckpt_path: str) -> str:
    """`dir/model.ckpt` -> `dir/model.json`."""
    stem = ckpt_path[:-5] if ckpt_path.endswith(".ckpt") else ckpt_path
    return stem + ".json"


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, (Tensor, Parameter)):
        return value.asnumpy()
    return np.asarray(value)


def named_parameters(net: nn.Cell) -> List[Tuple[str, Parameter]]:
    """(name relative to `net`, parameter) pairs. A Cell held by another Cell (a student inside a loss
    Cell) has its parameter names prefixed by MindSpore ("student.embeddings..."); checkpoints always use the
    names relative to the saved network, so a student saved from inside a training Cell loads anywhere."""
    return list(net.parameters_and_names())


# MindSpore's .ckpt is a protobuf `Checkpoint` (mindspore/train/checkpoint.proto): `repeated Value value = 1`,
# Value {string tag = 1; TensorProto tensor = 2}, TensorProto {repeated int64 dims = 1; string tensor_type = 2;
# bytes tensor_content = 3}. Concatenated messages parse as one, so each tensor is written as its own message.
_CKPT_TYPES = {np.dtype(np.float32): "Float32", np.dtype(np.float16): "Float16", np.dtype(np.float64): "Float64",
               np.dtype(np.int8): "Int8", np.dtype(np.uint8): "UInt8", np.dtype(np.int16): "Int16",
               np.dtype(np.uint16): "UInt16", np.dtype(np.int32): "Int32", np.dtype(np.uint32): "UInt32",
               np.dtype(np.int64): "Int64", np.dtype(np.uint64): "UInt64", np.dtype(np.bool_): "Bool"}


def write_ckpt_file(items: Sequence[Tuple[str, np.ndarray]], path: str) -> str:
    """Write (name, array) pairs as a MindSpore .ckpt (what mindspore.save_checkpoint writes for the same tensors,
    byte for byte, below its 512 MB slicing) and return the file's SHA-256 hex digest.

    The tensor bytes go from the array's own memory to the file and the hash (no copies); file writes and
    hashing of large buffers release the GIL, so a background writer (CheckpointWriter) does not stall the
    training thread. mindspore.save_checkpoint holds the GIL while it copies each tensor four times (bytes, slice,
    protobuf field, serialised message): run from the writer thread it took 4-6 s per save, during which a
    training step could wait 2.9 s for the GIL.
    """
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        for name, value in items:
            array = np.asarray(value)
            if not array.flags.c_contiguous:  # (never for 0-d arrays: ascontiguousarray would make them 1-d)
                array = np.ascontiguousarray(array)
            kind = _CKPT_TYPES.get(array.dtype)
            if kind is None:
                raise CheckpointError(f"{path}: {name} has dtype {array.dtype}; a .ckpt holds "
                                      f"{', '.join(sorted(set(_CKPT_TYPES.values())))}")
            if 0 in array.shape:  # MindSpore's loader would read it back as a scalar
                raise CheckpointError(f"{path}: {name} is empty (shape {array.shape}); a .ckpt cannot hold it")
            head = b"".join(varint(1 << 3) + varint(d) for d in array.shape) + length_delimited(2, kind.encode())
            head += varint(3 << 3 | 2) + varint(array.nbytes)  # tensor_content follows: the raw bytes
            tensor_size = len(head) + array.nbytes
            tag = length_delimited(1, name.encode())
            value_head = tag + varint(2 << 3 | 2) + varint(tensor_size)
            header = varint(1 << 3 | 2) + varint(len(value_head) + tensor_size) + value_head + head
            content = memoryview(array.reshape(-1)).cast("B")
            for part in (header, content):
                f.write(part)
                digest.update(part)
    return digest.hexdigest()


def save_checkpoint(params: Any, path: str, model_config: Optional[BertConfig] = None,
                    head: Optional[Dict[str, Any]] = None, extra: Optional[Dict[str, Any]] = None) -> str:
    """Write `params` (a Cell or a name -> array mapping) to `path` atomically, with the config beside it.

    Both files are written under temporary names in the same directory and renamed into place, so a crash
    never leaves a partial file under the final name. The JSON records the SHA-256 of the .ckpt, so a
    crash between the two renames (new weights, old JSON) is detected when loading. Returns the path.
    """
    if not path.endswith(".ckpt"):
        raise CheckpointError(f"checkpoint path must end with .ckpt: {path}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if isinstance(params, nn.Cell):
        items = [(name, p.asnumpy()) for name, p in named_parameters(params)]
    else:
        items = [(name, _to_numpy(value)) for name, value in params.items()]
    tmp_ckpt = temporary_name(path, ".ckpt")
    tmp_json = temporary_name(sidecar_path(path))
    try:
        digest = write_ckpt_file(items, tmp_ckpt)
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model": to_dict(model_config) if model_config is not None else None,
            "head": head or {"type": "backbone"},
            "num_tensors": len(items),
            "num_parameters": int(sum(v.size for _, v in items)),
            "file_size": os.path.getsize(tmp_ckpt),
            "sha256": digest,
        }
        meta.update(extra or {})
        with open(tmp_json, "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=2)
            f.write("\n")
        fsync_replace(tmp_ckpt, path)
        fsync_replace(tmp_json, sidecar_path(path))
    finally:
        for tmp in (tmp_ckpt, tmp_json):
            if os.path.exists(tmp):
                os.remove(tmp)
    logger.info("saved %s (%d tensors, %.1f M parameters)", path, len(items), meta["num_parameters"] / 1e6)
    return path


def read_metadata(path: str, verify: bool = False) -> Dict[str, Any]:
    """The JSON saved beside checkpoint `path`; checks that it belongs to this checkpoint file.

    The size is always compared; with `verify`, the SHA-256 too (reads the whole checkpoint once).
    """
    meta_path = sidecar_path(path)
    if not os.path.isfile(meta_path):
        raise CheckpointError(f"{path}: no config file beside it ({meta_path}); checkpoints written by "
                              f"save_checkpoint or scripts/convert_checkpoint.py have one")
    with open(meta_path, encoding="utf-8") as f:
        try:
            meta = json.load(f)
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{meta_path}: not valid JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"{meta_path}: format is {found!r}, expected {FORMAT!r}")
    if os.path.isfile(path):
        size = os.path.getsize(path)
        if meta.get("file_size") not in (None, size):
            raise CheckpointError(f"{path}: file size {size} does not match {meta['file_size']} recorded in "
                                  f"{meta_path}; the checkpoint was overwritten or truncated")
        if verify and meta.get("sha256") not in (None, file_sha256(path)):
            raise CheckpointError(f"{path}: contents do not match the SHA-256 recorded in {meta_path}; the "
                                  f"two files are from different saves (an interrupted save?)")
    return meta


def read_model_config(path: str) -> BertConfig:
    """The BertConfig saved beside checkpoint `path`."""
    meta = read_metadata(path)
    if not meta.get("model"):
        raise CheckpointError(f"{sidecar_path(path)}: has no 'model' section")
    try:
        return bert_config_from_dict(meta["model"], sidecar_path(path))
    except ConfigError as err:
        raise CheckpointError(str(err)) from None


def read_checkpoint(path: str) -> Dict[str, np.ndarray]:
    """Parameter name -> numpy array for a MindSpore .ckpt file, with a clear error if it is unreadable."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        params = ms.load_checkpoint(path)
    except (ValueError, RuntimeError, OSError) as err:
        raise CheckpointError(f"{path}: cannot be read as a MindSpore checkpoint (truncated or not a "
                              f".ckpt file): {err}") from None
    return {name: p.asnumpy() for name, p in params.items()}


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _listing(title: str, names: Sequence[str]) -> str:
    shown = ", ".join(names[:_LIST_LIMIT])
    more = f" ... and {len(names) - _LIST_LIMIT} more" if len(names) > _LIST_LIMIT else ""
    return f"{title} ({len(names)}): {shown}{more}"


def check_names(expected: Mapping[str, Tuple[int, ...]], found: Mapping[str, Tuple[int, ...]], source: str,
                allow_missing: Sequence[str] = (), allow_unexpected: Sequence[str] = ()) -> Tuple[List[str], List[str]]:
    """Compare parameter names and shapes; raise CheckpointError listing every kind of mismatch.

    Returns (allowed missing names, allowed unexpected names).
    """
    missing = sorted(n for n in expected if n not in found)
    unexpected = sorted(n for n in found if n not in expected)
    bad_missing = [n for n in missing if not _matches(n, allow_missing)]
    bad_unexpected = [n for n in unexpected if not _matches(n, allow_unexpected)]
    bad_shapes = [f"{n} {tuple(found[n])} vs network {tuple(expected[n])}"
                  for n in sorted(expected) if n in found and tuple(found[n]) != tuple(expected[n])]
    problems = []
    if bad_missing:
        problems.append(_listing("missing from the checkpoint", bad_missing))
    if bad_unexpected:
        problems.append(_listing("unexpected in the checkpoint", bad_unexpected))
    if bad_shapes:
        problems.append(_listing("shape mismatch", bad_shapes))
    if problems:
        raise CheckpointError(f"{source}: does not match the network.\n  " + "\n  ".join(problems))
    return ([n for n in missing if n not in bad_missing], [n for n in unexpected if n not in bad_unexpected])


def load_params(net: nn.Cell, params: Mapping[str, Any], source: str, allow_missing: Sequence[str] = (),
                allow_unexpected: Sequence[str] = ()) -> LoadReport:
    """Load name -> array `params` into `net` strictly (see module docstring). `source` names the origin."""
    named = named_parameters(net)
    expected = {name: tuple(p.shape) for name, p in named}
    arrays = {n: _to_numpy(v) for n, v in params.items()}
    found = {n: tuple(a.shape) for n, a in arrays.items()}
    kept, unused = check_names(expected, found, source, allow_missing, allow_unexpected)
    to_load = {}
    for name, p in named:
        if name in arrays:
            to_load[p.name] = Parameter(Tensor(arrays[name], dtype=p.dtype), name=p.name)
    not_loaded, _ = ms.load_param_into_net(net, to_load, strict_load=True)
    not_loaded = [n for n in not_loaded if n not in kept]
    if not_loaded:  # belt and braces: MindSpore's own view must agree with ours
        raise CheckpointError(f"{source}: MindSpore did not load {_listing('parameters', sorted(not_loaded))}")
    if kept:
        logger.info("%s: %s kept at initialisation (allowed)", source, _listing("parameters", kept))
    if unused:
        logger.info("%s: %s not used (allowed)", source, _listing("tensors", unused))
    return LoadReport(len(to_load), tuple(kept), tuple(unused))


def load_checkpoint(net: nn.Cell, path: str, prefix: str = "", allow_missing: Sequence[str] = (),
                    allow_unexpected: Sequence[str] = ()) -> LoadReport:
    """Load checkpoint file `path` into `net` strictly.

    `prefix`: keep only checkpoint names starting with it and strip it (e.g. "bert." to load the encoder
    of a classifier checkpoint into a bare BertModel); the other names are then reported as unused.
    """
    params = read_checkpoint(path)
    if prefix:
        inside = {n[len(prefix):]: v for n, v in params.items() if n.startswith(prefix)}
        if not inside:
            raise CheckpointError(f"{path}: no parameter name starts with {prefix!r} "
                                  f"(first names: {', '.join(sorted(params)[:5])})")
        outside = sorted(n for n in params if not n.startswith(prefix))
        if outside:
            logger.info("%s: %s outside %r not used", path, _listing("tensors", outside), prefix)
        params = inside
    return load_params(net, params, path, allow_missing, allow_unexpected)


def save_model(net: nn.Cell, path: str, extra: Optional[Dict[str, Any]] = None) -> str:
    """Save a BertModel or task head with its BertConfig and head description."""
    return save_checkpoint(net, path, net.config, head_spec(net), extra)


_CLASSIFIER_HEADS = ("sequence_classification", "token_classification")


def load_model(path: str, head: Optional[str] = None, backend: Backend = PORTABLE,
               model_overrides: Optional[Dict[str, Any]] = None, **head_kwargs: Any) -> nn.Cell:
    """Build the network described beside `path` and load its weights strictly (SHA-256 verified).

    `model_overrides`: BertConfig fields to build with instead of the saved ones (settings that do not change the
    weights' shapes, such as the dropout probabilities).

    Without `head`, the saved network is rebuilt; keyword arguments override saved head arguments (a changed
    num_labels then fails on the classifier's shape). With a different `head`, only the encoder (`bert.*`)
    carries over: a bare "backbone" takes it alone; a classifier head on top of it starts with a fresh
    classifier (logged; num_labels is required). A masked-LM head is never invented. `backend`: how the network
    computes (src/infra/backend.py; default MindSpore's own ops).
    """
    meta = read_metadata(path, verify=True)
    config = read_model_config(path)
    if model_overrides:
        config = dataclasses.replace(config, **model_overrides)
    saved = dict(meta.get("head") or {"type": "backbone"})
    saved_type = saved.pop("type")
    head = head or saved_type
    kwargs = {**saved, **head_kwargs} if head == saved_type else dict(head_kwargs)
    if head in _CLASSIFIER_HEADS and "num_labels" not in kwargs:
        raise CheckpointError(f"{path}: a {head} head on a {saved_type} checkpoint needs num_labels")
    net = build_model(config, head, backend, **kwargs)
    params = read_checkpoint(path)
    if head == saved_type:
        load_params(net, params, path)
        return net
    encoder = {n: v for n, v in params.items() if n.startswith("bert.")} if saved_type != "backbone" \
        else {"bert." + n: v for n, v in params.items()}
    dropped = sorted(n for n in params if saved_type != "backbone" and not n.startswith("bert."))
    if dropped:
        logger.info("%s: %s not used by a %s network", path, _listing("tensors", dropped), head)
    if head == "backbone":
        load_params(net, {n[len("bert."):]: v for n, v in encoder.items()}, path)
    else:
        load_params(net, encoder, path, allow_missing=("classifier.*",) if head in _CLASSIFIER_HEADS else ())
    return net
