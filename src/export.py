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
failed export; `src.inference.load_runner` refuses such files.

Exact GELU and ONNX. BERT's `hidden_act: gelu` is 0.5 x (1 + erf(x / sqrt 2)). MindSpore 2.10's ONNX
exporter has no converter for Erf ("Can not find key Erf in convert map"), although ONNX has had an
`Erf` operator since opset 9. So for ONNX every exact GELU is exported as 0.5 x (1 + Sin(x / sqrt 2)) -
`Sin` being a marker the exporter can emit and BERT never uses - and the ONNX graph is then rewritten
with the `onnx` package: each marker node becomes a real `Erf` node (the exporter writes opset 11). The
count of markers must equal the count of GELUs replaced, or the export fails. The result computes exact
GELU, not an approximation; the tanh approximation is never substituted. Models with `gelu_tanh` or
`relu` are exported as they are.

Every export is checked by default: the file is run through its runner on a fixed batch and compared
with the MindSpore Cell; a difference above PARITY_TOLERANCE removes the file and raises ExportError.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn

from src.checkpoint import file_sha256, head_spec, load_model, load_params, named_parameters, read_metadata
from src.config import BertConfig, to_dict

logger = logging.getLogger(__name__)

FORMAT = "tinybert-mindspore-export"
FORMAT_VERSION = 1
EXTENSIONS = {"MINDIR": ".mindir", "ONNX": ".onnx", "AIR": ".air"}
INPUT_NAMES = ("input_ids", "token_type_ids", "attention_mask")
OUTPUT_NAME = "logits"
EXPORTABLE_HEADS = ("sequence_classification", "token_classification", "masked_lm")

ONNX_ERF_MARKER = "Sin"  # ONNX op the exporter can write and BERT never uses; rewritten to Erf
ONNX_MIN_ERF_OPSET = 9  # ONNX Erf exists from opset 9

# Export check: max |logits(file) - logits(Cell)| must be <= atol + rtol * max |logits(Cell)|.
# Measured on this project's CPU (tests/test_export.py, bench/bench_latency.py): MINDIR through GraphCell is
# bit-identical (0.0); ONNX through onnxruntime with the Erf rewrite differs by float32 rounding only:
# <= 6.0e-6 on the real all-MiniLM-L6-v2 encoder and trained tiny models, <= 4e-7 on BERT-base and
# TinyBERT-4 with random weights. The tolerance leaves room for other CPUs' kernels and larger logits.
PARITY_TOLERANCE = {"MINDIR": (1e-5, 1e-5), "ONNX": (1e-4, 1e-4)}


class ExportError(ValueError):
    """An export was asked for something that cannot be done, or the exported file does not match the Cell."""


class LogitsOnly(nn.Cell):
    """Inference wrapper of a task head: `(input_ids, token_type_ids, attention_mask) -> logits`.

    Puts the head in eval mode (dropout off). The head's hidden states and attention scores, which only
    distillation needs, are not outputs of the exported graph.
    """

    def __init__(self, head: nn.Cell):
        super().__init__(auto_prefix=False)  # with the prefix, wrapping would rename the head's parameters
        self.head = head
        self.set_train(False)

    def construct(self, input_ids, token_type_ids, attention_mask):
        return self.head(input_ids, token_type_ids, attention_mask)[0]


class OnnxErfMarkerGelu(nn.Cell):
    """0.5 x (1 + Sin(x / sqrt 2)): exact GELU with `Sin` standing in for `Erf`, for the ONNX exporter only.

    Never run it: it is numerically wrong until `finalize_onnx` turns every marker into ONNX Erf.
    """

    def __init__(self):
        super().__init__()
        self.sin = ms.ops.Sin()

    def construct(self, x):
        return 0.5 * x * (1.0 + self.sin(x * 0.7071067811865476))


# --------------------------------------------------------------------------------------------------
# Checks and names
# --------------------------------------------------------------------------------------------------
def normalize_format(file_format: str) -> str:
    """'onnx' -> 'ONNX'; anything but MINDIR, ONNX and AIR raises ExportError."""
    name = str(file_format).upper()
    if name not in EXTENSIONS:
        raise ExportError(f"file_format: got {file_format!r}; expected one of {', '.join(EXTENSIONS)}")
    return name


def current_device_target() -> str:
    """MindSpore's device target in this process: 'CPU', 'GPU' or 'Ascend'."""
    return str(ms.get_context("device_target"))


def check_request(file_format: str, dynamic_batch: bool = False) -> str:
    """Validate a format (and dynamic batch) before any work is done; returns the normalized format.

    AIR needs the Ascend backend and CANN (MindSpore refuses it elsewhere); dynamic batch is MINDIR only.
    """
    fmt = normalize_format(file_format)
    if fmt == "AIR" and current_device_target() != "Ascend":
        raise ExportError(f"file_format AIR: AIR export needs the Ascend backend with CANN installed; the current "
                          f"device target is {current_device_target()}. Run on an Ascend machine with "
                          f"--device_target Ascend, or export MINDIR (runs on CPU, GPU and Ascend) or ONNX here")
    if dynamic_batch and fmt != "MINDIR":
        raise ExportError(f"dynamic_batch: supported only for MINDIR; MindSpore 2.10 exports {fmt} with fixed input "
                          f"shapes. Export {fmt} with a fixed --batch_size (the runners' predict_batches pads the "
                          f"last batch) or export MINDIR with --dynamic_batch")
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


def head_of(net: nn.Cell) -> Dict[str, Any]:
    """The head description of `net`; only heads that produce logits can be exported."""
    spec = head_spec(net)
    if spec["type"] not in EXPORTABLE_HEADS:
        raise ExportError(f"cannot export a {spec['type']} network: export needs a head with logits, one of "
                          f"{', '.join(EXPORTABLE_HEADS)} (load the checkpoint with load_model(path, head=..., "
                          f"num_labels=...) to put one on an encoder)")
    return spec


def output_shape(config: BertConfig, head: Dict[str, Any], batch: Optional[int], seq: Optional[int]) -> List[Any]:
    """Shape of `logits` for a head: [B, C], [B, S, C] or [B, S, V] (None marks a free dimension)."""
    if head["type"] == "sequence_classification":
        return [batch, int(head["num_labels"])]
    if head["type"] == "token_classification":
        return [batch, seq, int(head["num_labels"])]
    return [batch, seq, config.vocab_size]


def gelu_formulation(config: BertConfig, file_format: str) -> str:
    """How the feed-forward activation appears in an export of this format (recorded in the JSON)."""
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
def is_exact_gelu(cell: nn.Cell) -> bool:
    """True for nn.GELU(approximate=False) (MindSpore stores approximate as the string 'none' or 'tanh')."""
    return isinstance(cell, nn.GELU) and str(cell.approximate).lower() in ("none", "false")


def onnx_export_copy(net: nn.Cell) -> Tuple[nn.Cell, int]:
    """A fresh copy of head `net` for the ONNX exporter, each exact GELU replaced by OnnxErfMarkerGelu.

    Returns (copy in eval mode, number of GELUs replaced). A copy, not an in-place swap: MindSpore caches
    the parsed graph of every Cell it has compiled, so a Cell that already ran or was exported keeps its
    old activation in the next compile even after the attribute is replaced. The weights are copied by
    name with the strict loader; `net` is left untouched.
    """
    from src.modeling import build_model  # pylint: disable=import-outside-toplevel

    spec = head_of(net)
    fresh = build_model(net.config, spec["type"], **{k: v for k, v in spec.items() if k != "type"})
    replaced = 0
    for _, cell in list(fresh.cells_and_names()):
        for attr, child in list(cell.name_cells().items()):
            if is_exact_gelu(child):
                if isinstance(cell, (nn.CellList, nn.SequentialCell)):
                    cell[int(attr)] = OnnxErfMarkerGelu()
                else:
                    setattr(cell, attr, OnnxErfMarkerGelu())
                replaced += 1
    load_params(fresh, {name: p.asnumpy() for name, p in named_parameters(net)}, "the network being exported")
    fresh.set_train(False)
    return fresh, replaced


def finalize_onnx(path: str, expected_markers: int) -> Dict[str, int]:
    """Post-process the exporter's ONNX file in place; returns {"erf_nodes": n, "opset": v}.

    1. Each of the `expected_markers` Sin marker nodes becomes an ONNX Erf node (exact GELU). A different
       marker count means the network uses Sin itself, and the export fails rather than guess.
    2. The single graph output is renamed `logits`. (MindSpore 2.10's `output_names` is not applied when the
       last node is a Reshape, as after the token classifier, which leaves an invalid graph; so the file is
       exported without output names and renamed here.)
    3. The graph is checked with onnx.checker and the input names with INPUT_NAMES.
    """
    try:
        import onnx  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise ExportError("ONNX export needs the onnx package to finish the graph (Erf for exact GELU, output "
                          "name): pip install onnx") from None
    model = onnx.load(path, load_external_data=False)
    graph = model.graph
    opset = next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    markers = [node for node in graph.node if node.op_type == ONNX_ERF_MARKER and node.domain in ("", "ai.onnx")]
    if len(markers) != expected_markers:
        why = (f"the network uses {ONNX_ERF_MARKER} itself, so the GELUs cannot be told apart"
               if len(markers) > expected_markers else
               f"the exporter did not keep one {ONNX_ERF_MARKER} node per GELU (another MindSpore version?)")
        raise ExportError(f"{path}: expected {expected_markers} {ONNX_ERF_MARKER} marker nodes (one per exact GELU) "
                          f"but the graph has {len(markers)}: {why}; the GELUs cannot be rewritten to Erf safely")
    if markers and opset < ONNX_MIN_ERF_OPSET:
        raise ExportError(f"{path}: written with ONNX opset {opset}; the Erf op needs opset >= {ONNX_MIN_ERF_OPSET}")
    for node in markers:
        node.op_type = "Erf"
        node.name = (node.name or "gelu") + "_erf"

    weights = {t.name for t in graph.initializer}
    inputs = [i.name for i in graph.input if i.name not in weights]
    if inputs != list(INPUT_NAMES):
        raise ExportError(f"{path}: graph inputs are {inputs}; expected {list(INPUT_NAMES)}")
    if len(graph.output) != 1:
        raise ExportError(f"{path}: graph has {len(graph.output)} outputs; expected one (logits)")
    old = graph.output[0].name
    if old != OUTPUT_NAME:
        if any(OUTPUT_NAME in node.output for node in graph.node):
            raise ExportError(f"{path}: a tensor named {OUTPUT_NAME!r} already exists inside the graph")
        for node in graph.node:
            node.output[:] = [OUTPUT_NAME if name == old else name for name in node.output]
            node.input[:] = [OUTPUT_NAME if name == old else name for name in node.input]
        for info in graph.value_info:
            if info.name == old:
                info.name = OUTPUT_NAME
        graph.output[0].name = OUTPUT_NAME
    onnx.checker.check_model(model)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        onnx.save(model, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return {"erf_nodes": len(markers), "opset": opset}


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


def verify_export(path: str, wrapper: LogitsOnly, batch_sizes: Tuple[int, ...], seq_length: int) -> Dict[str, Any]:
    """Run the exported file through its runner and the Cell on example_inputs; raise if they differ.

    Returns {"max_abs_diff", "max_abs_logit", "tolerance", "batch_sizes", "seq_length"} for the JSON.
    """
    from src.inference import load_runner  # pylint: disable=import-outside-toplevel  (inference imports us)

    # MINDIR runs where this process runs (the device MindSpore already uses); ONNX on onnxruntime's CPU.
    on_mindspore = path.lower().endswith(EXTENSIONS["MINDIR"])
    runner = load_runner(path, device=current_device_target() if on_mindspore else "CPU")
    fmt = runner.file_format
    config = runner.config
    worst, scale = 0.0, 0.0
    for batch in batch_sizes:
        ids, types, mask = example_inputs(config, batch, seq_length, seed=batch)
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
            "batch_sizes": list(batch_sizes), "seq_length": seq_length,
            "reference": "MindSpore Cell, eval mode, same process"}


# --------------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------------
def _write_json(path: str, data: Dict[str, Any]) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _remove(*paths: str) -> None:
    for path in paths:
        if os.path.exists(path):
            os.remove(path)


def export_network(net: nn.Cell, file_format: str, output: str, batch_size: int = 1, seq_length: int = 128,
                   dynamic_batch: bool = False, verify: bool = True,
                   source_checkpoint: Optional[str] = None) -> str:
    """Export `LogitsOnly(net)` to `output` (+ the format's extension) and write `<file>.json`; returns the file.

    net: a task head from src.modeling (sequence_classification, token_classification or masked_lm).
    file_format: "MINDIR", "ONNX" or "AIR" (AIR only with the Ascend backend).
    batch_size, seq_length: the int32 input shape [B, S]; S <= max_position_embeddings.
    dynamic_batch: MINDIR only; the batch dimension is left free ([None, S]).
    verify: run the written file and the Cell on a fixed batch and compare (see PARITY_TOLERANCE); AIR
        files cannot be run here and are not checked.
    source_checkpoint: recorded in the JSON with its SHA-256 (export_checkpoint passes it).
    """
    fmt = check_request(file_format, dynamic_batch)
    head = head_of(net)
    config: BertConfig = net.config
    check_shapes(config, batch_size, seq_length)
    path = output_path(output, fmt)
    meta_file = metadata_path(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    # A previous export's JSON is removed first: a JSON exists only beside a complete, checked export.
    _remove(meta_file)
    stem = path[: -len(EXTENSIONS[fmt])]

    was_training = net.training
    wrapper = LogitsOnly(net)
    batch_dim = None if dynamic_batch else int(batch_size)
    if dynamic_batch:
        trace = [Tensor(shape=[None, seq_length], dtype=ms.int32) for _ in INPUT_NAMES]
    else:
        trace = [Tensor(a) for a in example_inputs(config, int(batch_size), int(seq_length))]
    markers = 0
    onnx_info: Dict[str, int] = {}
    try:
        if fmt == "ONNX":
            # Exact GELU: export a copy with Sin markers, then rewrite them to ONNX Erf (module docstring).
            exported, markers = onnx_export_copy(net) if config.hidden_act == "gelu" else (net, 0)
            ms.onnx.export(LogitsOnly(exported), *trace, file_name=path, input_names=list(INPUT_NAMES))
            del exported
            if not os.path.isfile(path):
                raise ExportError(f"{path}: MindSpore's ONNX exporter did not write the file (see its log above)")
            onnx_info = finalize_onnx(path, markers)
        else:
            ms.export(wrapper, *trace, file_name=stem, file_format=fmt)
            if not os.path.isfile(path):
                raise ExportError(f"{path}: MindSpore's {fmt} exporter did not write the file (see its log above)")
    except BaseException:
        _remove(path)
        net.set_train(was_training)
        raise

    shape = [batch_dim, int(seq_length)]
    meta: Dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "file": os.path.basename(path),
        "file_format": fmt,
        "file_size": os.path.getsize(path),
        "sha256": file_sha256(path),
        "model": to_dict(config),
        "head": head,
        "inputs": [{"name": name, "shape": shape, "dtype": "int32"} for name in INPUT_NAMES],
        "outputs": [{"name": OUTPUT_NAME, "shape": output_shape(config, head, batch_dim, int(seq_length)),
                     "dtype": "float32"}],
        "batch_size": batch_dim,
        "seq_length": int(seq_length),
        "dynamic_batch": bool(dynamic_batch),
        "gelu": {"hidden_act": config.hidden_act, "formulation": gelu_formulation(config, fmt),
                 "erf_nodes": markers if fmt == "ONNX" else None},
        "onnx_opset": onnx_info["opset"] if fmt == "ONNX" else None,
        "source_checkpoint": None,
        "mindspore_version": ms.__version__,
        "verification": None,
    }
    if source_checkpoint:
        meta["source_checkpoint"] = {"path": os.path.abspath(source_checkpoint),
                                     "sha256": read_metadata(source_checkpoint).get("sha256")
                                     or file_sha256(source_checkpoint)}
    try:
        _write_json(meta_file, meta)
        if verify and fmt != "AIR":
            wrapper.set_train(False)
            batches = (1, 3) if dynamic_batch else (int(batch_size),)
            meta["verification"] = verify_export(path, wrapper, batches, int(seq_length))
            _write_json(meta_file, meta)
    except BaseException:
        _remove(path, meta_file)
        raise
    finally:
        net.set_train(was_training)
    logger.info("exported %s (%s, %d bytes)", path, fmt, meta["file_size"])
    return path


def export_checkpoint(checkpoint: str, file_format: str, output: str, batch_size: int = 1,
                      seq_length: Optional[int] = None, dynamic_batch: bool = False, verify: bool = True) -> str:
    """Load `checkpoint` strictly with src.checkpoint.load_model and export it (see export_network).

    seq_length: the exported input length; when None, the model's max_position_embeddings (pass it
    explicitly: the CLI's default is 128). Returns the written file.
    """
    check_request(file_format, dynamic_batch)  # fail before the (possibly slow) load
    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
    net = load_model(checkpoint)
    if seq_length is None:
        seq_length = net.config.max_position_embeddings
        logger.info("seq_length not given: using max_position_embeddings = %d", seq_length)
    return export_network(net, file_format, output, batch_size=batch_size, seq_length=seq_length,
                          dynamic_batch=dynamic_batch, verify=verify, source_checkpoint=checkpoint)


def read_export_metadata(path: str) -> Dict[str, Any]:
    """The JSON written beside exported file `path`, checked to belong to it (format tag and file size)."""
    meta_file = metadata_path(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"exported model not found: {path}")
    if not os.path.isfile(meta_file):
        raise ExportError(f"{path}: no description beside it ({meta_file}); files written by export.py / "
                          f"src.export have one (a missing one means the export failed or was interrupted)")
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
