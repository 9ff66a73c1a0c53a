"""Exact GELU in ONNX files: MindSpore 2.10's ONNX exporter has no converter for Erf ("Can not find key Erf in
convert map"), although ONNX has had an `Erf` operator since opset 9. So for ONNX every exact GELU is exported as
0.5 x (1 + Sin(x / sqrt 2)) - `Sin` being a marker the exporter can emit and BERT never uses - and the ONNX graph is
then rewritten with the `onnx` package: each marker node becomes a real `Erf` node (the exporter writes opset 11).
The count of markers must equal the count of GELUs replaced, or the export fails. The result computes exact GELU,
not an approximation; the tanh approximation is never substituted.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Tuple

import mindspore as ms
from mindspore import nn

from src.infra.files import temporary_name
from src.model.checkpoint import load_params, named_parameters
from src.model.heads import build_model
from src.ship.format import INPUT_NAMES, OUTPUT_NAME, ExportError

ONNX_ERF_MARKER = "Sin"  # ONNX op the exporter can write and BERT never uses; rewritten to Erf
ONNX_MIN_ERF_OPSET = 9  # ONNX Erf exists from opset 9


class OnnxErfMarkerGelu(nn.Cell):
    """0.5 x (1 + Sin(x / sqrt 2)): exact GELU with `Sin` standing in for `Erf`, for the ONNX exporter only.

    Never run it: it is numerically wrong until `finalize_onnx` turns every marker into ONNX Erf.
    """

    def __init__(self):
        super().__init__()
        self.sin = ms.ops.Sin()

    def construct(self, x):
        return 0.5 * x * (1.0 + self.sin(x * 0.7071067811865476))


def is_exact_gelu(cell: nn.Cell) -> bool:
    """True for nn.GELU(approximate=False) (MindSpore stores approximate as the string 'none' or 'tanh')."""
    return isinstance(cell, nn.GELU) and str(cell.approximate).lower() in ("none", "false")


def onnx_export_copy(net: nn.Cell, spec: Dict[str, Any]) -> Tuple[nn.Cell, int]:
    """A fresh copy of head `net` for the ONNX exporter, each exact GELU replaced by OnnxErfMarkerGelu.

    Returns (copy in eval mode, number of GELUs replaced). A copy, not an in-place swap: MindSpore caches
    the parsed graph of every Cell it has compiled, so a Cell that already ran or was exported keeps its
    old activation in the next compile even after the attribute is replaced. The weights are copied by
    name with the strict loader; `net` is left untouched.
    """
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
    save_onnx(model, path)
    return {"erf_nodes": len(markers), "opset": opset}


def save_onnx(model, path: str) -> None:
    """Check `model` (onnx.checker) and write it to `path` atomically (a temporary name, then renamed)."""
    import onnx  # pylint: disable=import-outside-toplevel

    onnx.checker.check_model(model)
    tmp = temporary_name(path)
    try:
        onnx.save(model, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
