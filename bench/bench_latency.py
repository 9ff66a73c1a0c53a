"""Inference latency of the exported teacher (BERT-base) and student (TinyBERT-4, 312 wide), MINDIR vs ONNX.

    python bench/bench_latency.py [--quick] [--repeats 10] [--warmup 2] [--batch_sizes 1,32]
        [--seq_lengths 64,128] [--models teacher,student] [--formats MINDIR,ONNX] [--threads N]

For every model, shape and format the classifier (2 labels) is exported with src.ship.export at that fixed
shape, loaded with src.ship.inference.load_runner (MINDIR: nn.GraphCell; ONNX: onnxruntime CPUExecutionProvider)
and called on one batch: `warmup` untimed calls, then `repeats` timed calls, teacher and student taking
turns (so that load from other processes hits both alike); the table shows the median
wall time of a whole runner call (numpy in, numpy out), with the fastest call in parentheses (on a shared
machine the minimum is the least disturbed sample). Weights are random (seeded): latency does not
depend on their values. The last column compares the two formats' logits on the same batch (MINDIR
equals the MindSpore Cell exactly, so this is the ONNX export's deviation from MindSpore).

MindSpore and onnxruntime get the same number of CPU threads (--threads, default: the CPUs this process
may use). The machine, versions, load average and the exact command are printed with the table.
"""
import argparse
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault("GLOG_v", "3")
os.environ.setdefault("MS_COMPILER_CACHE_ENABLE", "0")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import mindspore as ms  # noqa: E402

from src.config import bert_preset  # noqa: E402
from src.ship.export import example_inputs, export_network  # noqa: E402
from src.ship.inference import load_runner  # noqa: E402
from src.model.heads import BertForSequenceClassification, count_parameters  # noqa: E402

MODELS = {"teacher": "bert-base-uncased", "student": "tinybert-4l-312"}
FORMATS = ("MINDIR", "ONNX")


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def machine_info() -> str:
    model = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return f"{cpu_count()} CPUs ({model}), {platform.platform()}"


def versions() -> str:
    import onnxruntime  # pylint: disable=import-outside-toplevel
    return (f"Python {platform.python_version()}, MindSpore {ms.__version__}, onnxruntime {onnxruntime.__version__}, "
            f"numpy {np.__version__}")


def load_average() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def int_list(text: str):
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def name_list(allowed):
    def parse(text):
        values = [v.strip() for v in text.split(",") if v.strip()]
        wrong = [v for v in values if v not in allowed]
        if wrong or not values:
            raise argparse.ArgumentTypeError(f"got {text!r}; expected a comma-separated subset of {', '.join(allowed)}")
        return values
    return parse


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="5 timed calls after 1 warm-up (overrides --repeats/--warmup)")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per cell (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls first (default 2)")
    parser.add_argument("--batch_sizes", type=int_list, default=[1, 32], help="default 1,32")
    parser.add_argument("--seq_lengths", type=int_list, default=[64, 128], help="default 64,128")
    parser.add_argument("--models", type=name_list(tuple(MODELS)), default=list(MODELS), help="teacher,student")
    parser.add_argument("--formats", type=name_list(FORMATS), default=list(FORMATS), help="MINDIR,ONNX")
    parser.add_argument("--threads", type=int, default=cpu_count(),
                        help="CPU threads for MindSpore kernels and onnxruntime (default: CPUs available)")
    parser.add_argument("--workdir", default=None, help="where the exports go (default: a temporary folder, removed)")
    return parser


def time_interleaved(runners, inputs, warmup, repeats):
    """Time the runners in turns (teacher, student, student, teacher, ...) so that both see the same load.

    Returns {role: (median s, min s, last logits)}.
    """
    logits = {}
    for role, runner in runners.items():
        for _ in range(warmup):
            logits[role] = runner(*inputs[role])
    times = {role: [] for role in runners}
    order = list(runners)
    for index in range(repeats):
        for role in (order if index % 2 == 0 else order[::-1]):
            start = time.perf_counter()
            logits[role] = runners[role](*inputs[role])
            times[role].append(time.perf_counter() - start)
    return {role: (statistics.median(t), min(t), logits[role]) for role, t in times.items()}


def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.quick:
        args.repeats, args.warmup = 5, 1
    words = [os.path.relpath(__file__, ROOT)] + list(sys.argv[1:] if argv is None else argv)
    command = "python " + " ".join(shlex.quote(w) for w in words)
    ms.device_context.cpu.op_tuning.threads_num(args.threads)
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench_latency_")
    os.makedirs(workdir, exist_ok=True)
    print(f"# command: {command}")
    print(f"# machine: {machine_info()}")
    print(f"# versions: {versions()}")
    print(f"# threads: {args.threads} (MindSpore CPU kernels and onnxruntime intra-op); load average at start: "
          f"{load_average()}")
    print(f"# timing: median of {args.repeats} calls after {args.warmup} warm-up calls; random weights; "
          f"classification head, 2 labels", flush=True)

    results = {}  # (model, format, batch, seq) -> (median s, min s)
    diffs = {}  # (model, batch, seq) -> max |MINDIR - ONNX|
    sizes = {}
    wall = time.perf_counter()
    nets = {}
    try:
        for role in args.models:
            ms.set_seed(0)
            nets[role] = BertForSequenceClassification(bert_preset(MODELS[role]), 2)
            nets[role].set_train(False)
            sizes[role] = count_parameters(nets[role])
        for seq in args.seq_lengths:
            for batch in args.batch_sizes:
                inputs = {role: example_inputs(net.config, batch, seq, seed=1) for role, net in nets.items()}
                logits = {}
                for fmt in args.formats:
                    runners, paths = {}, []
                    for role, net in nets.items():
                        start = time.perf_counter()
                        path = export_network(net, fmt, os.path.join(workdir, f"{role}_b{batch}_s{seq}"),
                                              batch_size=batch, seq_length=seq, verify=False)
                        paths.append(path)
                        kwargs = {"threads": args.threads} if fmt == "ONNX" else {}
                        runners[role] = load_runner(path, **kwargs)
                        print(f"# exported {role} {fmt} [{batch}, {seq}] in {time.perf_counter() - start:.1f} s",
                              flush=True)
                    for role, (median, best, out) in time_interleaved(runners, inputs, args.warmup,
                                                                      args.repeats).items():
                        results[(role, fmt, batch, seq)] = (median, best)
                        logits[(role, fmt)] = out
                        print(f"{role:8s} {fmt:6s} batch {batch:3d} seq {seq:4d}: median {median * 1e3:9.1f} ms "
                              f"(min {best * 1e3:9.1f})", flush=True)
                    del runners
                    for path in paths:
                        for leftover in (path, path + ".json"):
                            if os.path.exists(leftover):
                                os.remove(leftover)
                for role in nets:
                    if (role, "MINDIR") in logits and (role, "ONNX") in logits:
                        gap = np.abs(logits[(role, "MINDIR")] - logits[(role, "ONNX")])
                        diffs[(role, batch, seq)] = float(gap.max())
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    print(f"\n# load average at end: {load_average()}; total {time.perf_counter() - wall:.0f} s")
    print(f"# teacher = {MODELS['teacher']} ({sizes.get('teacher', 0) / 1e6:.1f} M parameters), "
          f"student = {MODELS['student']} ({sizes.get('student', 0) / 1e6:.1f} M parameters)\n")
    print("| format | batch | seq | teacher ms, median (min) | student ms, median (min) "
          "| speedup teacher/student, median (min) | max abs logits diff MINDIR vs ONNX (teacher, student) |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for fmt in args.formats:
        for seq in args.seq_lengths:
            for batch in args.batch_sizes:
                teacher = results.get(("teacher", fmt, batch, seq))
                student = results.get(("student", fmt, batch, seq))
                cells = [f"{t[0] * 1e3:.1f} ({t[1] * 1e3:.1f})" if t else "-" for t in (teacher, student)]
                speedup = (f"{teacher[0] / student[0]:.1f}x ({teacher[1] / student[1]:.1f}x)"
                           if teacher and student else "-")
                diff = ", ".join(f"{diffs[(r, batch, seq)]:.1e}" if (r, batch, seq) in diffs else "-"
                                 for r in ("teacher", "student"))
                print(f"| {fmt} | {batch} | {seq} | {cells[0]} | {cells[1]} | {speedup} | {diff} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
