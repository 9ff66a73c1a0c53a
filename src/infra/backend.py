"""How networks and the training step compute on this machine: the CPU speed levers, chosen once, passed explicitly.

A `Backend` is given to `build_model` / `load_model` (the cells read it while they are built) and to the train
step; no module holds a switch and no cell asks which device it runs on. Two are in use:

- `Backend()` (portable): MindSpore's own GeLU and Transpose. What every exporter and device understands: exports,
  evaluation, inference, and training on GPU and Ascend.
- `Backend.for_training(run, device_target, distributed)`: on CPU the project's AOT kernels where they can be built
  (src/infra/aot.py: attention heads split and merged by SwapAxes12, whose buffers MindSpore's CPU runtime reuses,
  unlike its Transpose's; LayerNorm forward and backward, 2.5-6x faster than MindSpore's LayerNorm + LayerNormGrad;
  exact GELU, ~13x faster than MindSpore's on the development machine, so with
  `run.cpu_gelu: auto` the GELU kernel is measured once per machine and cached, src/infra/levers.py) and, on one
  device, the optimizer update in numpy (src/training/host_update.py). Without g++ it falls back, with a warning, to
  what still works (mint views for the heads, MindSpore's GeLU and LayerNorm).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from src.config import RunConfig, resolve_precision

logger = logging.getLogger(__name__)

GeluKind = Literal["builtin", "aot"]
HeadLayout = Literal["transpose", "swap", "views"]
LayerNormKind = Literal["builtin", "aot"]
ComputeDtype = Literal["float32", "float16", "bfloat16"]


def compute_dtype(precision: str, device_target: str) -> str:
    """run.precision on `device_target` as a dtype name (see src.config.resolve_precision)."""
    return resolve_precision(precision, device_target)


@dataclass(frozen=True)
class Backend:
    """The levers. gelu: exact GELU by MindSpore's GeLU ("builtin") or the AOT kernel ("aot", CPU float32).
    heads: attention heads split/merged by ops.transpose ("transpose"), the AOT SwapAxes12 kernel ("swap") or mint
    views ("views"; CPU). layer_norm: MindSpore's LayerNorm ("builtin") or the AOT kernels ("aot", CPU float32).
    host_update: the optimizer update on the host in numpy (CPU, one device)."""

    gelu: GeluKind = "builtin"
    heads: HeadLayout = "transpose"
    layer_norm: LayerNormKind = "builtin"
    host_update: bool = False
    # Mixed precision on devices: the encoder's Dense products in float16 / bfloat16, the rest float32 (MixedDense).
    compute_dtype: ComputeDtype = "float32"

    def __post_init__(self):
        if self.compute_dtype not in ("float32", "float16", "bfloat16"):
            raise ValueError(f"Backend.compute_dtype: got {self.compute_dtype!r}; expected 'float32', 'float16' or "
                             "'bfloat16'")
        if self.gelu not in ("builtin", "aot"):
            raise ValueError(f"Backend.gelu: got {self.gelu!r}; expected 'builtin' or 'aot'")
        if self.heads not in ("transpose", "swap", "views"):
            raise ValueError(f"Backend.heads: got {self.heads!r}; expected 'transpose', 'swap' or 'views'")
        if self.layer_norm not in ("builtin", "aot"):
            raise ValueError(f"Backend.layer_norm: got {self.layer_norm!r}; expected 'builtin' or 'aot'")

    @classmethod
    def for_training(cls, run: RunConfig, device_target: str, distributed: bool = False) -> "Backend":
        """The fastest levers that work here for a training stage (run.cpu_gelu and run.cpu_host_update may turn
        the CPU ones off; run.cpu_gelu auto is decided per machine by src/infra/levers.py, on CPU only)."""
        if device_target != "CPU":
            return cls(compute_dtype=compute_dtype(run.precision, device_target))
        compute_dtype(run.precision, device_target)  # refuses fp16 / bf16 on CPU
        # (aot compiles the kernels on first use; levers may measure them, once per machine)
        from src.infra import aot, levers  # pylint: disable=import-outside-toplevel

        kernels = aot.available()
        gelu = levers.cpu_gelu(run.cpu_gelu, kernels, distributed).gelu  # auto: measured once per machine, cached
        backend = cls(gelu=gelu, heads="swap" if kernels else "views", layer_norm="aot" if kernels else "builtin",
                      host_update=run.cpu_host_update and not distributed)
        logger.debug("training backend: %s", backend)
        return backend
