"""What a benchmark figure depends on, printed with it: the CPU (model, the ISA extensions the kernels may use),
the cores this process may run on, thread settings, and the library versions of both sides.

    python bench/machine.py                          # this machine, MindSpore's side
    python bench/machine.py --torch_python PYTHON    # and PyTorch's (its version, threads, oneDNN / MKL builds)
"""
import argparse
import json
import os
import platform
import subprocess
import sys
from typing import Any, Dict, List, Optional

# x86 flags that decide which matmul / GELU kernels a library can pick (names as /proc/cpuinfo spells them).
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE")

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH_DIR)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)  # src.infra.levers (imported where used, so that the torch probe needs the stdlib only)
# run by another interpreter (--torch_python): this file's torch_facts, which needs only the standard library to import
_TORCH_PROBE = f"import json, sys; sys.path.insert(0, {BENCH_DIR!r}); from machine import torch_facts; " \
    "print(json.dumps(torch_facts()))"


def cpu_info(path: str = "/proc/cpuinfo") -> Dict[str, Any]:
    """{"model", "isa": {flag: bool}} of the first processor in `path` (unknown / empty off Linux)."""
    from src.infra.levers import cpu_model_and_flags  # pylint: disable=import-outside-toplevel  (stdlib-only import)

    model, flags = cpu_model_and_flags(path)
    return {"model": model or "unknown", "isa": {flag: flag in flags for flag in ISA_FLAGS}}


def usable_cpus() -> int:
    from src.infra.levers import usable_cores  # pylint: disable=import-outside-toplevel

    return usable_cores()


def torch_facts() -> Dict[str, Any]:
    """Version, thread counts (as set now) and the oneDNN / MKL builds of the torch this process imports."""
    import torch  # pylint: disable=import-outside-toplevel

    config = torch.__config__.show()

    def line(word):
        return next((l.strip(" -") for l in config.splitlines() if word in l), None)

    return {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(),
            "onednn": line("oneDNN") or line("MKL-DNN"), "mkl": line("Math Kernel Library") or line("MKL"),
            "mkldnn_enabled": torch.backends.mkldnn.is_available()}


def torch_info(python: str) -> Optional[Dict[str, Any]]:
    """Version, thread counts and the oneDNN / MKL builds of the torch that `python` imports (None if it cannot)."""
    # env from os.environ: importing MindSpore sets OMP_NUM_THREADS=1 in the C environment (not in os.environ),
    # which a child started with the inherited environment would take as its thread count
    done = subprocess.run([python, "-c", _TORCH_PROBE], capture_output=True, text=True, check=False, timeout=300,
                          env=dict(os.environ))
    lines = done.stdout.strip().splitlines()
    return json.loads(lines[-1]) if done.returncode == 0 and lines else None


def mindspore_info() -> Dict[str, Any]:
    import mindspore as ms  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel

    return {"mindspore": ms.__version__, "numpy": np.__version__}


def describe(torch_python: str = "", torch_here: bool = False) -> Dict[str, Any]:
    """Everything above as one JSON-able dict; PyTorch's facts from `torch_python` (a child process) or, with
    `torch_here`, from the torch this process has imported (its thread count as this process set it)."""
    info: Dict[str, Any] = {"cpu": cpu_info(), "usable_cpus": usable_cpus(), "os_cpu_count": os.cpu_count(),
                            "platform": platform.platform(), "python": platform.python_version(),
                            "env": {k: os.environ[k] for k in THREAD_VARIABLES if k in os.environ},
                            **mindspore_info()}
    if torch_here:
        info["pytorch"] = torch_facts()
    elif torch_python:
        info["pytorch"] = torch_info(torch_python)
    try:
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    return info


def lines(info: Dict[str, Any]) -> List[str]:
    """The description as the lines a benchmark prints above its table."""
    isa = ", ".join(flag for flag, present in info["cpu"]["isa"].items() if present) or "none of " + \
        ", ".join(ISA_FLAGS)
    out = [f"machine: {info['cpu']['model']}; {info['usable_cpus']} usable CPUs of {info['os_cpu_count']}; "
           f"{info['platform']}; Python {info['python']}",
           f"ISA: {isa}" + ("" if info["cpu"]["isa"].get("avx512_bf16") or info["cpu"]["isa"].get("amx_bf16")
                             else " (no bf16 matmul instructions)"),
           f"MindSpore {info['mindspore']}, numpy {info['numpy']}; thread variables: "
           f"{', '.join(f'{k}={v}' for k, v in info['env'].items()) or 'none set'}"]
    torch = info.get("pytorch")
    if torch:
        out.append(f"PyTorch {torch['torch']}: {torch['threads']} intra-op / {torch['interop_threads']} inter-op "
                   f"threads; oneDNN: {torch['onednn'] or 'n/a'}; MKL: {torch['mkl'] or 'n/a'}")
    if "load_average" in info:
        out.append(f"load average before: {' '.join(str(x) for x in info['load_average'])}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--torch_python", default="", help="python of an environment with torch")
    parser.add_argument("--json", action="store_true", help="print the JSON instead of the lines")
    args = parser.parse_args()
    info = describe(args.torch_python)
    print(json.dumps(info, indent=2) if args.json else "\n".join(lines(info)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
