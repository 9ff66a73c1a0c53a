"""Exact (erf) GELU for MindSpore's CPU backend as an AOT custom operator (float32), with its backward.

MindSpore 2.10's CPU GeLU/Erf kernels are scalar: on a [8, 128, 3072] tensor the exact GELU forward takes
~60 ms forward with BERT-like inputs (bench/bench_gelu.py). `src/infra/kernels/gelu_aot.cc` computes the same function with a
branch-free minimax erf that GCC vectorises (AVX-512 / AVX2 / SSE clones chosen at load time) and splits over
threads: ~4.7 ms forward on the same tensor, max |gelu - exact| 2.4e-7 against float64 (MindSpore's own kernel:
4.5e-7), derivative 1.5e-7 (MindSpore's: 8.5e-7).

The same library holds `SwapAxes12` ([A, B, C, D] -> [A, C, B, D]), which training uses to split and merge the
attention heads on CPU, because MindSpore 2.10's CPU graph runtime never reuses the buffers of its own Transpose
(see src/model/bert.py BertSelfAttention; swap_axes12_op()), and LayerNorm forward/backward (layer_norm_op()),
because MindSpore 2.10's CPU LayerNormGrad is several times slower.

GELU is used for training on CPU (`run.cpu_gelu: aot`, or `auto`, the default, unless MindSpore's GeLU measured
faster on this machine: src/infra/levers.py); exported models and evaluation-only commands keep MindSpore's GeLU
primitive, because a MINDIR holding this op would hold the absolute path of the .so. The library is compiled
with g++ on first use into `$TINYBERT_KERNEL_CACHE` (default `~/.cache/tinybert_mindspore`), keyed by a hash of
source, flags and compiler, and renamed into place atomically, so concurrent processes are safe. Without g++ (or
if the build fails) the builtin GELU is used and a warning says why. `$GELU_AOT_NUM_THREADS` sets the kernel's
threads (default: the CPUs the process may use).
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from typing import Optional, Tuple

import mindspore as ms
from mindspore import nn, ops

logger = logging.getLogger(__name__)

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "kernels", "gelu_aot.cc")
# Portable (no -march=native: the source's target_clones pick the ISA at load time). -fno-trapping-math lets
# GCC if-convert the branch-free selects for SSE/AVX2; -ffast-math must not be used (it breaks the rounding
# trick in exp and NaN propagation).
COMPILE_FLAGS = ("-std=c++17", "-O3", "-fno-trapping-math", "-fPIC", "-shared", "-pthread")

_lock = threading.Lock()
_ops: Optional[Tuple[ops.Custom, ops.Custom]] = None
_error: Optional[str] = None
_library: Optional[str] = None  # the .so gelu_ops() loaded


class KernelBuildError(RuntimeError):
    """The AOT kernel could not be compiled (message has the command and the compiler output)."""


def cache_dir() -> str:
    folder = os.environ.get("TINYBERT_KERNEL_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                                       "tinybert_mindspore")
    os.makedirs(folder, exist_ok=True)
    return folder


def build_library(source: str = SOURCE, cxx: Optional[str] = None) -> str:
    """Compile `source` into cache_dir()/libgelu_aot_<hash>.so unless present; returns the absolute path."""
    cxx = cxx or os.environ.get("CXX") or "g++"
    compiler = shutil.which(cxx)
    if compiler is None:
        raise KernelBuildError(f"C++ compiler {cxx!r} not found (install g++ or set CXX)")
    with open(source, "rb") as f:
        code = f.read()
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False).stdout
    key = hashlib.sha256(code + " ".join(COMPILE_FLAGS).encode() + version.encode()).hexdigest()[:16]
    folder = cache_dir()
    target = os.path.abspath(os.path.join(folder, f"libgelu_aot_{key}.so"))
    if os.path.isfile(target):
        return target
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=folder)
    os.close(fd)
    command = [compiler, *COMPILE_FLAGS, "-o", tmp, os.path.abspath(source)]
    logger.info("compiling the exact-GELU CPU kernel: %s", " ".join(command))
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0:
            raise KernelBuildError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return target


def _same(*args):
    return args[0]


def _kernel(library: str, name: str, out_shape, out_dtype=None, bprop=None) -> ops.Custom:
    """The library's function `name` as an AOT Custom primitive; out_dtype defaults to out_shape's function (the
    outputs take the dtypes of the inputs it returns)."""
    return ops.Custom(f"{library}:{name}", out_shape=out_shape, out_dtype=out_dtype or out_shape, func_type="aot",
                      bprop=bprop)


def _built_library() -> Optional[str]:
    """The path of the library gelu_ops() loaded (building it on first use); None (a warning said why) when it
    cannot be built."""
    return _library if gelu_ops() is not None else None


def gelu_ops(strict: bool = False) -> Optional[Tuple[ops.Custom, ops.Custom]]:
    """(forward, backward) Custom primitives, building the library on first use; None if it cannot be built
    (a warning says why), or KernelBuildError with strict=True."""
    global _ops, _error, _library  # pylint: disable=global-statement
    with _lock:
        if _ops is not None:
            return _ops
        if _error is not None and not strict:
            return None
        try:
            library = build_library()
        except (KernelBuildError, OSError, subprocess.SubprocessError) as exc:
            _error = str(exc)
            if strict:
                raise KernelBuildError(str(exc)) from exc
            logger.warning("exact-GELU CPU kernel unavailable (%s); using MindSpore's GeLU", exc)
            return None
        backward = _kernel(library, "GeluAotBwd", _same)

        def bprop(x, out, dout):  # pylint: disable=unused-argument
            # Custom's bprop signature: (*inputs, out, dout) -> one gradient per input (graph-compiled: no `del`)
            return (backward(x, dout),)

        forward = _kernel(library, "GeluAotFwd", _same, bprop=bprop)
        _ops = (forward, backward)
        _library = library
        return _ops


def library_hash() -> Optional[str]:
    """The build hash (source, flags, compiler) of the library this process loaded, None before gelu_ops() built
    it or when it cannot be built. src/infra/levers.py puts it in the machine key of its measurements."""
    if _library is None:
        return None
    name = os.path.basename(_library)
    return name[len("libgelu_aot_"):-len(".so")] if name.startswith("libgelu_aot_") else name


_swap_op: Optional[ops.Custom] = None


def _swapped(shape):
    return [shape[0], shape[2], shape[1], shape[3]]


def swap_axes12_op() -> Optional[ops.Custom]:
    """Custom primitive [A, B, C, D] -> [A, C, B, D] (float32, CPU) from the same library, its own gradient;
    None when the library cannot be built. BertSelfAttention uses it in training to split and merge heads: unlike
    MindSpore 2.10's CPU Transpose, its output buffers are reused by the graph runtime, and unlike mint's views it
    needs no extra contiguous copy."""
    global _swap_op  # pylint: disable=global-statement
    if _swap_op is not None:
        return _swap_op
    library = _built_library()
    if library is None:
        return None
    backward = _kernel(library, "SwapAxes12", _swapped, _same)

    def bprop(x, out, dout):  # pylint: disable=unused-argument
        return (backward(dout),)

    _swap_op = _kernel(library, "SwapAxes12", _swapped, _same, bprop=bprop)
    return _swap_op


_layer_norm_op: Optional[ops.Custom] = None


def _layer_norm_shape(x, gamma, beta, eps):  # pylint: disable=unused-argument
    return x


def _layer_norm_grad_shapes(x, gamma, eps, dy):  # pylint: disable=unused-argument
    return x, gamma, gamma


def layer_norm_op() -> Optional[ops.Custom]:
    """Custom primitive (x [..., H], gamma [H], beta [H], eps [1]) -> LayerNorm over the last axis (float32, CPU),
    with its backward (LayerNormAotBwd: dx, dgamma, dbeta; mean and rstd recomputed from x); None when the library
    cannot be built. MindSpore 2.10's CPU LayerNormGrad is slow: on [8, 128, 312] forward + backward took 35 ms with
    MindSpore's kernels and 13.5 ms with these (same gradients within 2e-6 relative; a one-off timing in GRAPH
    mode on 2 cores shared with a training job; bench_train_step.py --breakdown --layer_norm times it in a step), and
    the student has 9 of them per step."""
    global _layer_norm_op  # pylint: disable=global-statement
    if _layer_norm_op is not None:
        return _layer_norm_op
    library = _built_library()
    if library is None:
        return None
    backward = _kernel(library, "LayerNormAotBwd", _layer_norm_grad_shapes)

    def bprop(x, gamma, beta, eps, out, dout):  # pylint: disable=unused-argument
        dx, dgamma, dbeta = backward(x, gamma, eps, dout)
        return dx, dgamma, dbeta, ops.zeros_like(eps)

    _layer_norm_op = _kernel(library, "LayerNormAotFwd", _layer_norm_shape, bprop=bprop)
    return _layer_norm_op


def available() -> bool:
    """True when the kernel library is built (or can be built now); False, with a warning saying why, if not."""
    return gelu_ops() is not None


class GeluAOT(nn.Cell):
    """Exact GELU x * Phi(x) through the AOT kernel (CPU, float32 inputs); MindSpore's GeLU for other dtypes, and
    when the kernel cannot be built (strict=True raises KernelBuildError instead)."""

    def __init__(self, strict: bool = False):
        super().__init__()
        pair = gelu_ops(strict)
        self.use_aot = pair is not None
        self.builtin = nn.GELU(approximate=False)
        self.kernel = pair[0] if pair is not None else self.builtin

    def construct(self, x):
        if self.use_aot and x.dtype == ms.float32:
            return self.kernel(x)
        return self.builtin(x)
