"""Export a task head to MINDIR, ONNX or AIR for inference, with a JSON description beside the file.

    export_checkpoint("runs/sst2/student.ckpt", "ONNX", "deploy/student")  # -> deploy/student.onnx
    export_network(net, "MINDIR", "deploy/student", batch_size=1, seq_length=128, dynamic_batch=True)

What is exported is `LogitsOnly(head)`: the head in eval mode (dropout off) returning only its logits, with
inputs `input_ids`, `token_type_ids`, `attention_mask` (int32 [B, S]) and output `logits` (float32
[B, C] for sequence classification, [B, S, C] for token classification, [B, S, V] for masked LM).

Beside every export `<file>` (e.g. `student.onnx`) goes `<file>.json` (`student.onnx.json`; the `.ckpt`
sidecar of a checkpoint with the same stem is never overwritten) holding the model config, the head, the
input/output names, shapes and dtypes, the source checkpoint and its SHA-256, the GELU formulation used
and the result of the export check ("verification", null when not checked). The JSON is written only once
the file is complete (and removed with the file if the check fails), so a file without it is an interrupted or
failed export; `src.ship.inference.load_runner` refuses such files.

ONNX is written by src/ship/onnx_graph.py from the weights (onnx_exporter="graph", the default): dynamic batch and
sequence length, Hugging Face's input names, order and dtype (input_ids, attention_mask, token_type_ids; int64),
opset 17, exact GELU as ONNX Erf. onnx_exporter="mindspore" keeps MindSpore's own exporter (the model zoo's way):
one traced shape, int32 inputs in our order, exact GELU through a marker op that src/ship/onnx.py rewrites to a
real Erf node (exact, never the tanh approximation).

Every export is checked by default: the file is run through its runner on a fixed batch and compared
with the MindSpore Cell; a difference above PARITY_TOLERANCE removes the file and raises ExportError.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, Optional, Tuple

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn

from src.infra.files import file_sha256, write_json_atomic
from src.model.checkpoint import load_model, named_parameters, read_metadata
from src.model.heads import LogitsOnly, head_spec
from src.ship.format import (EXPORTABLE_HEADS, EXTENSIONS, FORMAT, FORMAT_VERSION, INPUT_NAMES, OUTPUT_NAME,
                             ExportError, metadata_path, normalize_format, output_path, output_shape)
from src.ship.inference import load_runner
from src.ship.onnx import ONNX_ERF_MARKER, finalize_onnx, onnx_export_copy, save_onnx
from src.ship.onnx_graph import BATCH, HF_INPUT_NAMES, OPSET, SEQUENCE, build_onnx
from src.config import BertConfig, to_dict

logger = logging.getLogger(__name__)


# Export check: max |logits(file) - logits(Cell)| must be <= atol + rtol * max |logits(Cell)|.
# Measured on this project's CPU (tests/test_export.py, bench/bench_latency.py): MINDIR through GraphCell is
# bit-identical (0.0); ONNX through onnxruntime with the Erf rewrite differs by float32 rounding only:
# <= 6.0e-6 on the real all-MiniLM-L6-v2 encoder and trained tiny models, <= 4e-7 on BERT-base and
# TinyBERT-4 with random weights. The tolerance leaves room for other CPUs' kernels and larger logits.
PARITY_TOLERANCE = {"MINDIR": (1e-5, 1e-5), "ONNX": (1e-4, 1e-4)}
ONNX_EXPORTERS = ("graph", "mindspore")


# --------------------------------------------------------------------------------------------------
# Checks and names
# --------------------------------------------------------------------------------------------------


def current_device_target() -> str:
    """MindSpore's device target in this process: 'CPU', 'GPU' or 'Ascend'."""
    return str(ms.get_context("device_target"))


def check_request(file_format: str, dynamic_batch: bool = False, onnx_exporter: str = "graph") -> str:
    """Validate a format (and dynamic batch) before any work is done; returns the normalized format.

    AIR needs the Ascend backend and CANN (MindSpore refuses it elsewhere); a free batch needs MINDIR, or ONNX
    from the graph exporter (always dynamic).
    """
    fmt = normalize_format(file_format)
    if onnx_exporter not in ONNX_EXPORTERS:
        raise ExportError(f"onnx_exporter: got {onnx_exporter!r}; expected one of {', '.join(ONNX_EXPORTERS)}")
    if fmt == "ONNX" and onnx_exporter == "graph":
        return fmt  # dynamic batch and sequence length whatever dynamic_batch says
    if fmt == "AIR" and current_device_target() != "Ascend":
        raise ExportError(f"file_format AIR: AIR export needs the Ascend backend with CANN installed; the current "
                          f"device target is {current_device_target()}. Run on an Ascend machine with "
                          f"--device_target Ascend, or export MINDIR (runs on CPU, GPU and Ascend) or ONNX here")
    if dynamic_batch and fmt != "MINDIR":
        raise ExportError(f"dynamic_batch: MindSpore 2.10's own exporter writes {fmt} with fixed input shapes. "
                          + ("Leave out --onnx_exporter mindspore (the default ONNX export takes any batch and "
                             "sequence length)" if fmt == "ONNX" else
                             f"Export {fmt} with a fixed --batch_size (the runners' predict_batches pads the last "
                             f"batch) or export MINDIR with --dynamic_batch"))
    return fmt


def check_shapes(config: BertConfig, batch_size: int, seq_length: int) -> None:
    """Batch and sequence length must be positive; positions only exist up to max_position_embeddings."""
    if not isinstance(batch_size, (int, np.integer)) or isinstance(batch_size, bool) or batch_size < 1:
        raise ExportError(f"batch_size: got {batch_size!r}; expected an integer >= 1")
    if not isinstance(seq_length, (int, np.integer)) or isinstance(seq_length, bool) or seq_length < 1:
        raise ExportError(f"seq_length: got {seq_length!r}; expected an integer >= 1")
    if seq_length > config.max_position_embeddings:
        raise ExportError(f"seq_length: got {seq_length}; the model has position embeddings for at most "
                          f"max_position_embeddings = {config.max_position_embeddings} tokens; expected "
                          f"seq_length <= {config.max_position_embeddings}")


def head_of(net: nn.Cell) -> Dict[str, Any]:
    """The head description of `net`; only heads that produce logits can be exported."""
    spec = head_spec(net)
    if spec["type"] not in EXPORTABLE_HEADS:
        raise ExportError(f"cannot export a {spec['type']} network: export needs a head with logits, one of "
                          f"{', '.join(EXPORTABLE_HEADS)} (load the checkpoint with load_model(path, head=..., "
                          f"num_labels=...) to put one on an encoder)")
    return spec


def gelu_formulation(config: BertConfig, file_format: str, onnx_exporter: str = "mindspore") -> str:
    """How the feed-forward activation appears in an export of this format (recorded in the JSON)."""
    if config.hidden_act == "gelu" and normalize_format(file_format) == "ONNX" and onnx_exporter == "graph":
        return "exact GELU 0.5*x*(1+erf(x/sqrt(2))) with the ONNX Erf op"
    if config.hidden_act == "gelu" and normalize_format(file_format) == "ONNX":
        return (f"exact GELU 0.5*x*(1+erf(x/sqrt(2))) with the ONNX Erf op (MindSpore cannot emit Erf: exported "
                f"with a {ONNX_ERF_MARKER} marker, rewritten to Erf)")
    if config.hidden_act == "gelu":
        return "exact GELU 0.5*x*(1+erf(x/sqrt(2))) (MindSpore GeLU primitive, as trained)"
    if config.hidden_act == "gelu_tanh":
        return "tanh-approximated GELU, as trained (hidden_act gelu_tanh)"
    return f"{config.hidden_act} (no GELU), as trained"


# --------------------------------------------------------------------------------------------------
# Exact GELU for ONNX
# --------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------
# Inputs used for tracing and for the export check
# --------------------------------------------------------------------------------------------------
def example_inputs(config: BertConfig, batch_size: int, seq_length: int, seed: int = 0) -> Tuple[np.ndarray, ...]:
    """A fixed, realistic-looking batch: random token ids, a second segment, and rows of different lengths.

    Row r keeps its first L_r tokens (L_r from seq_length down to about half of it); the rest is padding
    (id 0, mask 0), so the check covers the attention mask as well.
    """
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, config.vocab_size, size=(batch_size, seq_length)).astype(np.int32)
    types = np.zeros((batch_size, seq_length), np.int32)
    mask = np.zeros((batch_size, seq_length), np.int32)
    for row in range(batch_size):
        length = max(1, seq_length - (row * seq_length) // max(2 * batch_size, 1))
        mask[row, :length] = 1
        ids[row, length:] = 0
        if config.type_vocab_size > 1:
            types[row, length // 2:length] = 1
    return ids, types, mask


def _max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        raise ExportError(f"export check: exported logits have shape {a.shape}, the Cell's {b.shape}")
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))) if a.size else 0.0


def verify_export(path: str, wrapper: LogitsOnly, batch_sizes: Tuple[int, ...], seq_length: int,
                  shapes: Optional[Tuple[Tuple[int, int], ...]] = None) -> Dict[str, Any]:
    """Run the exported file through its runner and the Cell on example_inputs; raise if they differ.

    shapes: (batch, sequence length) pairs to check; default each of `batch_sizes` at `seq_length`.
    Returns {"max_abs_diff", "max_abs_logit", "tolerance", "batch_sizes", "seq_length", "shapes"} for the JSON.
    """
    shapes = tuple(shapes or ((batch, seq_length) for batch in batch_sizes))

    # MINDIR runs where this process runs (the device MindSpore already uses); ONNX on onnxruntime's CPU.
    on_mindspore = path.lower().endswith(EXTENSIONS["MINDIR"])
    runner = load_runner(path, device=current_device_target() if on_mindspore else "CPU")
    fmt = runner.file_format
    config = runner.config
    worst, scale = 0.0, 0.0
    for batch, seq in shapes:
        ids, types, mask = example_inputs(config, batch, seq, seed=batch)
        ref = wrapper(Tensor(ids), Tensor(types), Tensor(mask)).asnumpy()
        got = runner(ids, types, mask)
        worst = max(worst, _max_abs_diff(got, ref))
        scale = max(scale, float(np.max(np.abs(ref))) if ref.size else 0.0)
    atol, rtol = PARITY_TOLERANCE[fmt]
    tolerance = atol + rtol * scale
    if not np.isfinite(worst) or worst > tolerance:
        raise ExportError(f"{path}: export check failed: max |logits - MindSpore Cell logits| = {worst:.3g} > "
                          f"tolerance {tolerance:.3g} (max |logit| {scale:.3g}); the file was removed. Pass "
                          f"verify=False (--no_verify) to keep an unchecked export")
    return {"max_abs_diff": worst, "max_abs_logit": scale, "tolerance": tolerance,
            "batch_sizes": sorted({b for b, _ in shapes}), "seq_length": max(s for _, s in shapes),
            "shapes": [list(shape) for shape in shapes], "reference": "MindSpore Cell, eval mode, same process"}


# --------------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------------
def _remove(*paths: str) -> None:
    for path in paths:
        if os.path.exists(path):
            os.remove(path)


def _write_onnx_graph(net: nn.Cell, path: str) -> Tuple[int, Dict[str, Any]]:
    """ONNX from the weights (src/ship/onnx_graph.py), dynamic [batch, sequence]; written atomically."""
    try:
        import onnx  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    except ImportError:
        raise ExportError("ONNX export needs the onnx package: pip install onnx") from None
    params = {name: p.asnumpy() for name, p in named_parameters(net)}
    model = build_onnx(params, net.config, head_of(net))
    save_onnx(model, path)
    erf = sum(1 for node in model.graph.node if node.op_type == "Erf")
    return erf, {"opset": OPSET, "exporter": "graph"}


def _write_file(net: nn.Cell, wrapper: LogitsOnly, fmt: str, path: str, batch_dim: Optional[int],
                seq_length: int, onnx_exporter: str = "mindspore") -> Tuple[int, Dict[str, Any]]:
    """Trace `wrapper` at [batch_dim, seq_length] (None: a free batch) and write `path`; returns (Erf markers
    rewritten, ONNX details). ONNX from the graph exporter is written from the weights instead (no trace)."""
    config: BertConfig = net.config
    if fmt == "ONNX" and onnx_exporter == "graph":
        return _write_onnx_graph(net, path)
    if batch_dim is None:
        trace = [Tensor(shape=[None, seq_length], dtype=ms.int32) for _ in INPUT_NAMES]
    else:
        trace = [Tensor(a) for a in example_inputs(config, batch_dim, seq_length)]
    if fmt != "ONNX":
        ms.export(wrapper, *trace, file_name=path[: -len(EXTENSIONS[fmt])], file_format=fmt)
        if not os.path.isfile(path):
            raise ExportError(f"{path}: MindSpore's {fmt} exporter did not write the file (see its log above)")
        return 0, {}
    # Exact GELU: export a copy with Sin markers, then rewrite them to ONNX Erf (src/ship/onnx.py).
    exported, markers = onnx_export_copy(net, head_of(net)) if config.hidden_act == "gelu" else (net, 0)
    ms.onnx.export(LogitsOnly(exported), *trace, file_name=path, input_names=list(INPUT_NAMES))
    del exported
    if not os.path.isfile(path):
        raise ExportError(f"{path}: MindSpore's ONNX exporter did not write the file (see its log above)")
    return markers, dict(finalize_onnx(path, markers), exporter="mindspore")


def _description(path: str, fmt: str, config: BertConfig, head: Dict[str, Any], batch_dim: Optional[int],
                 seq_length: Optional[int], markers: int, onnx_info: Dict[str, Any]) -> Dict[str, Any]:
    """The `<file>.json` content of a written export (before its check)."""
    shape = [batch_dim, seq_length]
    graph = onnx_info.get("exporter") == "graph"
    names, dtype = (HF_INPUT_NAMES, "int64") if graph else (INPUT_NAMES, "int32")
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "file": os.path.basename(path),
        "file_format": fmt,
        "file_size": os.path.getsize(path),
        "sha256": file_sha256(path),
        "model": to_dict(config),
        "head": head,
        "inputs": [{"name": name, "shape": shape, "dtype": dtype} for name in names],
        "outputs": [{"name": OUTPUT_NAME, "shape": output_shape(config, head, batch_dim, seq_length),
                     "dtype": "float32"}],
        "batch_size": batch_dim,
        "seq_length": seq_length,
        "dynamic_batch": batch_dim is None,
        "dynamic_axes": {BATCH: 0, SEQUENCE: 1} if graph else ({"batch_size": 0} if batch_dim is None else {}),
        "onnx_exporter": onnx_info.get("exporter"),
        "gelu": {"hidden_act": config.hidden_act,
                 "formulation": gelu_formulation(config, fmt, onnx_info.get("exporter") or "mindspore"),
                 "erf_nodes": markers if fmt == "ONNX" else None},
        "onnx_opset": onnx_info["opset"] if fmt == "ONNX" else None,
        "source_checkpoint": None,
        "mindspore_version": ms.__version__,
        "verification": None,
    }


def export_network(net: nn.Cell, file_format: str, output: str, batch_size: int = 1, seq_length: int = 128,
                   dynamic_batch: bool = False, verify: bool = True,
                   source_checkpoint: Optional[str] = None, onnx_exporter: str = "graph") -> str:
    """Export `LogitsOnly(net)` to `output` (+ the format's extension) and write `<file>.json`; returns the file.

    net: a task head from src.model.bert (sequence_classification, token_classification or masked_lm).
    file_format: "MINDIR", "ONNX" or "AIR" (AIR only with the Ascend backend).
    batch_size, seq_length: the int32 input shape [B, S]; S <= max_position_embeddings.
    dynamic_batch: MINDIR (and ONNX from MindSpore's exporter, which refuses it); the batch dimension is left
        free ([None, S]).
    onnx_exporter: "graph" (default): ONNX written from the weights, any batch and sequence length, int64 inputs
        in Hugging Face's order; batch_size and seq_length then only set the largest shape checked.
        "mindspore": MindSpore's exporter at the fixed [batch_size, seq_length], int32 inputs in our order.
    verify: run the written file and the Cell on a fixed batch and compare (see PARITY_TOLERANCE); AIR
        files cannot be run here and are not checked.
    source_checkpoint: recorded in the JSON with its SHA-256 (export_checkpoint passes it).
    """
    fmt = check_request(file_format, dynamic_batch, onnx_exporter)
    graph = fmt == "ONNX" and onnx_exporter == "graph"
    head = head_of(net)
    config: BertConfig = net.config
    check_shapes(config, batch_size, seq_length)
    path = output_path(output, fmt)
    meta_file = metadata_path(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    # A previous export's JSON is removed first: a JSON exists only beside a complete, checked export.
    _remove(meta_file)

    was_training = net.training
    wrapper = LogitsOnly(net)
    batch_dim = None if dynamic_batch or graph else int(batch_size)
    try:
        markers, onnx_info = _write_file(net, wrapper, fmt, path, batch_dim, int(seq_length), onnx_exporter)
    except BaseException:
        _remove(path)
        net.set_train(was_training)
        raise
    meta = _description(path, fmt, config, head, batch_dim, None if graph else int(seq_length), markers, onnx_info)
    if source_checkpoint:
        source_meta = read_metadata(source_checkpoint)
        meta["source_checkpoint"] = {"path": os.path.abspath(source_checkpoint),
                                     "sha256": source_meta.get("sha256") or file_sha256(source_checkpoint)}
        if source_meta.get("vocab"):  # predict.py / preprocess.py check the vocab.txt they are given against it
            meta["vocab"] = source_meta["vocab"]
    try:
        write_json_atomic(meta_file, meta)
        if verify and fmt != "AIR":
            wrapper.set_train(False)
            batches = (1, 3) if dynamic_batch else (int(batch_size),)
            shapes = None
            if graph:  # a traced B or S that leaked into a constant shows only at other shapes: B=1, S=1, odd S
                shapes = ((1, 1), (int(batch_size), int(seq_length)), (3, max(1, min(int(seq_length), 13))))
            meta["verification"] = verify_export(path, wrapper, batches, int(seq_length), shapes)
            write_json_atomic(meta_file, meta)
    except BaseException:
        _remove(path, meta_file)
        raise
    finally:
        net.set_train(was_training)
    logger.info("exported %s (%s, %d bytes)", path, fmt, meta["file_size"])
    return path


def export_checkpoint(checkpoint: str, file_format: str, output: str, batch_size: int = 1,
                      seq_length: Optional[int] = None, dynamic_batch: bool = False, verify: bool = True,
                      onnx_exporter: str = "graph") -> str:
    """Load `checkpoint` strictly with src.model.checkpoint.load_model and export it (see export_network).

    seq_length: the exported input length; when None, the model's max_position_embeddings (pass it
    explicitly: the CLI's default is 128). Returns the written file.
    """
    check_request(file_format, dynamic_batch, onnx_exporter)  # fail before the (possibly slow) load
    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
    net = load_model(checkpoint)
    if seq_length is None:
        seq_length = net.config.max_position_embeddings
        logger.info("seq_length not given: using max_position_embeddings = %d", seq_length)
    return export_network(net, file_format, output, batch_size=batch_size, seq_length=seq_length,
                          dynamic_batch=dynamic_batch, verify=verify, source_checkpoint=checkpoint,
                          onnx_exporter=onnx_exporter)


