"""CPU speed levers chosen per machine, not assumed: which exact-GELU kernel CPU training uses (`run.cpu_gelu`).

    python -m src.infra.levers               # this machine's key, the cached decisions and their measurements
    python -m src.infra.levers --remeasure   # measure again on this machine and rewrite its cache entry

`run.cpu_gelu` is `auto` (default), `aot` or `builtin`; Backend.for_training asks `cpu_gelu()` on CPU only (GPU and
Ascend never measure anything). The rules, in order:

- `aot` / `builtin` in the config: used as given, nothing measured, the cache not read (`aot` becomes `builtin`
  only when the AOT kernels cannot be built: src/infra/aot.py warns why).
- `auto` without the AOT kernels (no g++, build failed): `builtin`, nothing measured.
- `auto` in a data-parallel run: `aot`, nothing measured and the cache not read. Every rank must build the same
  network, and the config is the only input all ranks share: ranks on different hosts read different caches, and on
  one host another process may be writing the cache between two ranks' reads. Set `run.cpu_gelu: builtin` in the
  config to use MindSpore's GeLU in a data-parallel run.
- `auto` otherwise: the decision cached for this machine's key, else a measurement, written to the cache. The
  measurement: one forward + backward of exact GELU on float32 tensors shaped like BERT feed-forward activations
  (SHAPES: [32*64, 1536] and [8*128, 3072]; inputs of BERT-like spread, standard normal x 3, since MindSpore's
  kernel is value-dependent), through the same cells training builds (aot.GeluAOT and nn.GELU), GRAPH_MODE, after
  one compiling call; the two sides interleaved (order alternating) over ROUNDS rounds; the median of each side's
  per-round time (the sum over the shapes). `builtin` is taken only when it is more than NEAR_TIE (3%) faster; on a
  near tie `aot` is kept: it is exact to 2.4e-7 and training with it uses much less memory (README, Performance:
  1.7 vs 2.5 GB at batch 8, 2.9 vs 6.0 GB at batch 32). The measurement takes a few seconds, once per machine.

The cache is a JSON file, `$TINYBERT_LEVER_CACHE` if set, else `levers.json` in the folder of the AOT kernels
(aot.cache_dir(): `$TINYBERT_KERNEL_CACHE` or `~/.cache/tinybert_mindspore`), written atomically. Its entries are
keyed by the machine: CPU model, the ISA flags that matter (ISA_FLAGS), the CPUs this process may use, MindSpore's
version, the kernel library's build hash (and `$GELU_AOT_NUM_THREADS` if set); each holds the decision, the
measured times and the date. A corrupt or unreadable cache warns once, is measured again and rewritten; a cache that
cannot be written warns and the decision holds for the process. Each process decides once (memoised) and logs the
decision and where it came from at INFO.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import os
import platform
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from src.infra.files import write_json_atomic

logger = logging.getLogger(__name__)

CACHE_ENV = "TINYBERT_LEVER_CACHE"  # a file path: tests and users point the cache elsewhere with it
CACHE_NAME = "levers.json"
FORMAT = "tinybert-mindspore-levers/1"
ISA_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile")  # /proc/cpuinfo flags that change which kernel wins
SHAPES: Tuple[Tuple[int, int], ...] = ((32 * 64, 1536), (8 * 128, 3072))  # [batch*seq, intermediate]
ROUNDS = 5
SPREAD = 3.0  # standard deviation of the measured inputs: BERT-like pre-activation values (bench/bench_gelu.py)
NEAR_TIE = 0.03  # builtin must be more than this much faster than aot to be chosen
SIDES = ("aot", "builtin")
REQUESTS = ("auto", "aot", "builtin")

Measure = Callable[[], Dict[str, Any]]

_lock = threading.Lock()
_decided: Dict[Tuple[Any, ...], "GeluChoice"] = {}
_warned: set = set()


@dataclass(frozen=True)
class GeluChoice:
    """The kernel run.cpu_gelu resolved to on this machine (`gelu`), and why (`source`, `detail`)."""

    requested: str  # run.cpu_gelu as configured
    gelu: str  # "aot" or "builtin": Backend.gelu
    source: str  # "config", "no kernels", "data parallel", "cache", "measured", "measurement failed"
    detail: str  # the reason, as the log line gives it
    measurement: Optional[Dict[str, Any]] = None  # the cache entry behind an auto decision

    def describe(self) -> str:
        arrow = f"{self.requested} -> {self.gelu}" if self.requested == "auto" or self.requested != self.gelu \
            else self.gelu
        return f"run.cpu_gelu {arrow} ({self.detail})"


def reset() -> None:
    """Forget this process's decisions and warnings (as a new process would); for tests."""
    with _lock:
        _decided.clear()
        _warned.clear()


def _warn_once(key: str, message: str, *args: Any) -> None:
    if key not in _warned:
        _warned.add(key)
        logger.warning(message, *args)


# --------------------------------------------------------------------------------------------------
# The machine and the cache
# --------------------------------------------------------------------------------------------------
def cache_path() -> str:
    """$TINYBERT_LEVER_CACHE, else levers.json beside the AOT kernels (aot.cache_dir())."""
    path = os.environ.get(CACHE_ENV)
    if path:
        return os.path.abspath(os.path.expanduser(path))
    from src.infra import aot  # pylint: disable=import-outside-toplevel

    return os.path.join(aot.cache_dir(), CACHE_NAME)


def cpu_model_and_flags(path: str = "/proc/cpuinfo") -> Tuple[str, set]:
    """(CPU model name, ISA flags) of the first processor in `path`; ("", set()) where it cannot be read (callers
    pick their own fallback). The one /proc/cpuinfo reader (bench/machine.py and scripts/reproduce_sst2.py use it)."""
    model, flags = "", set()
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name in ("model name", "hardware", "cpu model") and not model:
                    model = value.strip()
                elif name in ("flags", "features") and not flags:
                    flags = set(value.split())
                if model and flags:
                    break
    except OSError:
        pass
    return model, flags


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def machine() -> Dict[str, Any]:
    """What a measurement depends on. The kernel's build hash is known once aot.gelu_ops() has built it."""
    import mindspore  # pylint: disable=import-outside-toplevel
    from src.infra import aot  # pylint: disable=import-outside-toplevel

    model, flags = cpu_model_and_flags()
    model = model or platform.processor() or platform.machine() or "unknown CPU"
    info = {"cpu": model, "isa": [f for f in ISA_FLAGS if f in flags], "cores": usable_cores(),
            "mindspore": mindspore.__version__, "kernel": aot.library_hash() or "none"}
    threads = os.environ.get("GELU_AOT_NUM_THREADS", "").strip()
    if threads:
        info["aot_threads"] = threads
    return info


def machine_key(info: Optional[Mapping[str, Any]] = None) -> str:
    """One readable line: "CPU model | isa avx2+avx512f | 16 cores | mindspore 2.10.0 | kernel 0123abcd..."."""
    info = machine() if info is None else info
    parts = [str(info["cpu"]), "isa " + ("+".join(info["isa"]) or "none"), f"{info['cores']} cores",
             f"mindspore {info['mindspore']}", f"kernel {info['kernel']}"]
    if info.get("aot_threads"):
        parts.append(f"GELU_AOT_NUM_THREADS={info['aot_threads']}")
    return " | ".join(parts)


def read_cache(path: str) -> Dict[str, Any]:
    """The cache's content ({} if there is none); a corrupt or unreadable file warns once and reads as empty."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:  # ValueError: not JSON, not UTF-8
        _warn_once(f"read:{path}", "lever cache %s cannot be read (%s); measuring again and rewriting it", path, exc)
        return {}
    if not isinstance(data, dict) or not isinstance(data.get("machines", {}), dict):
        _warn_once(f"read:{path}", "lever cache %s is not a lever cache (no 'machines' object); measuring again "
                   "and rewriting it", path)
        return {}
    return data


def _valid(entry: Any) -> bool:
    if not isinstance(entry, dict) or entry.get("decision") not in SIDES:
        return False
    times = [entry.get(f"{side}_ms") for side in SIDES]
    return all(isinstance(t, (int, float)) and not isinstance(t, bool) and t > 0 for t in times)


def cached_entry(path: str, key: str, lever: str = "cpu_gelu") -> Optional[Dict[str, Any]]:
    """This machine's cached entry of `lever`, None if there is none; an invalid one warns once."""
    record = read_cache(path).get("machines", {}).get(key)
    if record is None or (isinstance(record, dict) and lever not in record):
        return None
    entry = record.get(lever) if isinstance(record, dict) else record
    if not _valid(entry):
        _warn_once(f"entry:{path}", "lever cache %s: the %s entry of this machine is invalid (%r); measuring again "
                   "and rewriting it", path, lever, entry)
        return None
    return entry


def write_entry(path: str, key: str, info: Mapping[str, Any], entry: Mapping[str, Any],
                lever: str = "cpu_gelu") -> bool:
    """Put this machine's `lever` entry into the cache (other machines' entries kept), atomically; False with a
    warning if the file cannot be written."""
    data = read_cache(path)
    machines = data.get("machines") if isinstance(data.get("machines"), dict) else {}
    record = machines.get(key) if isinstance(machines.get(key), dict) else {}
    record = dict(record, machine=dict(info), **{lever: dict(entry)})
    machines[key] = record
    try:
        write_json_atomic(path, {"format": FORMAT, "machines": machines})
    except OSError as exc:
        _warn_once(f"write:{path}", "lever cache %s cannot be written (%s); the decision holds for this process "
                   "only", path, exc)
        return False
    return True


# --------------------------------------------------------------------------------------------------
# The measurement
# --------------------------------------------------------------------------------------------------
def choose(aot_ms: float, builtin_ms: float, near_tie: float = NEAR_TIE) -> str:
    """"builtin" when it is more than `near_tie` (a fraction of aot's time) faster than aot, else "aot"."""
    return "builtin" if builtin_ms < aot_ms * (1.0 - near_tie) else "aot"


@contextlib.contextmanager
def _graph_mode():
    import mindspore as ms  # pylint: disable=import-outside-toplevel

    mode = ms.get_context("mode")
    ms.set_context(mode=ms.GRAPH_MODE)
    try:
        yield
    finally:
        ms.set_context(mode=mode)


def kernel_sides(shapes: Sequence[Sequence[int]]) -> Dict[str, Callable[[int], None]]:
    """side -> run(i): one forward + backward of that side's GELU cell on shapes[i] (float32, CPU), as training
    computes it: the forward's output and the input gradient for a given upstream gradient."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    from mindspore import Tensor, nn, ops  # pylint: disable=import-outside-toplevel

    from src.infra.aot import GeluAOT  # pylint: disable=import-outside-toplevel

    class Step(nn.Cell):
        def __init__(self, act):
            super().__init__()
            self.act = act
            self.grad = ops.GradOperation(sens_param=True)(act)

        def construct(self, x, dy):
            return self.act(x), self.grad(x, dy)

    # The cells activation("gelu", backend) builds for the two values of Backend.gelu (src/model/bert.py).
    cells = {"aot": Step(GeluAOT(strict=True)), "builtin": Step(nn.GELU(approximate=False))}
    rng = np.random.default_rng(0)
    inputs = [(Tensor((rng.standard_normal(tuple(s)) * SPREAD).astype(np.float32)),
               Tensor(rng.standard_normal(tuple(s)).astype(np.float32))) for s in shapes]

    def runner(cell):
        def run(i: int) -> None:
            out = cell(*inputs[i])
            out[1].asnumpy()  # the result is there (graph runs are synchronous on CPU; this costs ~0.2 ms)
        return run

    return {side: runner(cell) for side, cell in cells.items()}


def measure_gelu(shapes: Sequence[Sequence[int]] = SHAPES, rounds: int = ROUNDS,
                 sides: Optional[Mapping[str, Callable[[int], None]]] = None,
                 clock: Callable[[], float] = time.perf_counter) -> Dict[str, Any]:
    """Median ms per round (one forward + backward on each shape) of each side, sides interleaved over `rounds`
    after one warm-up (compiling) call each; `sides` / `clock` replace the real kernels and timer (tests)."""
    if rounds < 1 or not shapes:
        raise ValueError(f"measure_gelu: rounds {rounds} and shapes {list(shapes)} must not be empty")
    with _graph_mode() if sides is None else contextlib.nullcontext():
        run = dict(sides) if sides is not None else kernel_sides(shapes)
        for side in SIDES:
            for i in range(len(shapes)):
                run[side](i)
        per_round: Dict[str, List[float]] = {side: [] for side in SIDES}
        for r in range(rounds):
            total = dict.fromkeys(SIDES, 0.0)
            for i in range(len(shapes)):
                for side in (SIDES if (r + i) % 2 == 0 else SIDES[::-1]):
                    start = clock()
                    run[side](i)
                    total[side] += clock() - start
            for side in SIDES:
                per_round[side].append(total[side] * 1e3)
    out: Dict[str, Any] = {f"{side}_ms": round(statistics.median(per_round[side]), 4) for side in SIDES}
    out.update(shapes=[list(s) for s in shapes], rounds=rounds,
               rounds_ms={side: [round(t, 4) for t in per_round[side]] for side in SIDES})
    return out


def _entry(measurement: Mapping[str, Any]) -> Dict[str, Any]:
    aot_ms, builtin_ms = float(measurement["aot_ms"]), float(measurement["builtin_ms"])
    return dict(measurement, decision=choose(aot_ms, builtin_ms), near_tie=NEAR_TIE,
                date=datetime.date.today().isoformat())


def _times(entry: Mapping[str, Any]) -> str:
    text = f"aot {entry['aot_ms']:.2f} ms, builtin {entry['builtin_ms']:.2f} ms"
    if entry["decision"] == "aot" and entry["builtin_ms"] < entry["aot_ms"]:
        text += f", within {entry.get('near_tie', NEAR_TIE):.0%}: aot kept"
    return text


# --------------------------------------------------------------------------------------------------
# The decision
# --------------------------------------------------------------------------------------------------
def cpu_gelu(requested: str, kernels: bool, distributed: bool = False) -> GeluChoice:
    """run.cpu_gelu resolved for CPU training on this machine (module docstring: the rules); decided once per
    process and logged at INFO. `kernels`: the AOT kernels are available (aot.available())."""
    if requested not in REQUESTS:
        raise ValueError(f"run.cpu_gelu: got {requested!r}; expected one of {', '.join(REQUESTS)}")
    path = cache_path() if requested == "auto" and kernels and not distributed else None
    memo = (requested, bool(kernels), bool(distributed), path)
    with _lock:
        if memo not in _decided:
            _decided[memo] = _decide(requested, kernels, distributed, path)
            logger.info("%s", _decided[memo].describe())
        return _decided[memo]


def _decide(requested: str, kernels: bool, distributed: bool, path: Optional[str]) -> GeluChoice:
    if requested != "auto":
        if requested == "aot" and not kernels:
            return GeluChoice(requested, "builtin", "config", "forced in the config, but the AOT kernels cannot be "
                              "built here")
        return GeluChoice(requested, requested, "config", "forced in the config")
    if not kernels:
        return GeluChoice(requested, "builtin", "no kernels", "the AOT kernels cannot be built here; nothing measured")
    if distributed:
        return GeluChoice(requested, "aot", "data parallel", "data-parallel run: every rank takes aot without "
                          "measuring, so that all ranks agree; set run.cpu_gelu: builtin to force the other")
    assert path is not None
    info = machine()
    key = machine_key(info)
    entry = cached_entry(path, key)
    if entry is not None:
        return GeluChoice(requested, entry["decision"], "cache",
                          f"cached for this machine, measured {entry.get('date', '?')}: {_times(entry)}; {path}; "
                          "python -m src.infra.levers --remeasure to measure again", entry)
    logger.info("run.cpu_gelu auto: measuring the two exact-GELU kernels on this machine (once; a few seconds)")
    try:
        entry = _entry(measure_gelu())
    except Exception as exc:  # pylint: disable=broad-except  (a failed measurement must not stop training)
        logger.warning("measuring the exact-GELU kernels failed (%s: %s); using aot", type(exc).__name__, exc)
        return GeluChoice(requested, "aot", "measurement failed", "the measurement failed; nothing cached")
    written = write_entry(path, key, info, entry)
    where = f"cached in {path}" if written else f"not cached: {path} cannot be written"
    return GeluChoice(requested, entry["decision"], "measured",
                      f"measured on this machine {entry['date']}: {_times(entry)}; {where}", entry)


def remeasure() -> Tuple[str, Dict[str, Any], bool]:
    """Measure this machine again and rewrite its entry: (key, entry, written). Needs the AOT kernels."""
    from src.infra import aot  # pylint: disable=import-outside-toplevel

    aot.gelu_ops(strict=True)
    info = machine()
    key = machine_key(info)
    entry = _entry(measure_gelu())
    written = write_entry(cache_path(), key, info, entry)
    with _lock:
        _decided.clear()
    return key, entry, written


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------
def _describe_entry(entry: Mapping[str, Any]) -> str:
    shapes = " + ".join(str(list(s)) for s in entry.get("shapes", []))
    return (f"{entry['decision']} (measured {entry.get('date', '?')}: {_times(entry)}; median of "
            f"{entry.get('rounds', '?')} rounds, forward + backward of {shapes or '?'})")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m src.infra.levers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--remeasure", action="store_true", help="measure this machine again and rewrite its entry")
    args = parser.parse_args(argv)
    os.environ.setdefault("GLOG_v", "3")
    import mindspore as ms  # pylint: disable=import-outside-toplevel

    from src.infra import aot  # pylint: disable=import-outside-toplevel

    if ms.get_context("device_target") != "CPU":  # (a runtime already started cannot be moved)
        ms.set_device("CPU")
    path = cache_path()
    kernels = aot.available()
    key = machine_key()
    print(f"lever cache: {path}")
    print(f"machine key: {key}")
    if not kernels:
        print("cpu_gelu (auto): builtin: the AOT kernels cannot be built here (see the warning); nothing to measure")
        return 1 if args.remeasure else 0
    if args.remeasure:
        print("measuring the exact-GELU kernels (a few seconds) ...", flush=True)
        key, entry, written = remeasure()
        print(f"cpu_gelu (auto) on this machine: {_describe_entry(entry)}")
        print(f"written to {path}" if written else f"NOT written: {path} cannot be written")
        return 0 if written else 1
    entry = cached_entry(path, key)
    if entry is None:
        print("cpu_gelu (auto) on this machine: not measured yet (the first CPU training with run.cpu_gelu: auto "
              "measures it, or: python -m src.infra.levers --remeasure)")
    else:
        print(f"cpu_gelu (auto) on this machine: {_describe_entry(entry)}")
    others = {k: v for k, v in read_cache(path).get("machines", {}).items() if k != key}
    for other, record in sorted(others.items()):
        found = record.get("cpu_gelu") if isinstance(record, dict) else None
        print(f"other machine: {other}\n  cpu_gelu (auto): {_describe_entry(found) if _valid(found) else 'invalid'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
