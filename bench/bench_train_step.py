"""General-distillation training step on CPU: this project (MindSpore) vs the PyTorch original's computation.

    python bench/bench_train_step.py                         # ours (GELU aot and builtin) vs PyTorch, batch 8, 3 rounds
    python bench/bench_train_step.py --batch 8,32 --rounds 5 --json gd_step.json
    python bench/bench_train_step.py --torch_python ''       # ours only

One GD step = frozen teacher forward (eval mode), student forward + backward, attention-score MSE on the mapped
layers, hidden-state MSE through fit_dense, dynamic loss scaling, global-norm clipping, AdamWeightDecay: the same
work as `../shared/bench/torch_reference.py gd-step` (teacher BERT-base, student TinyBERT-4 312 by default,
random token ids with the last 1/8 of every row padded). Each configuration runs in its own process (so peak
memory is its own), warm-up steps first (graph compile), then the median of the timed steps. Sides alternate
(ours, PyTorch, ours, PyTorch, ...) for --rounds rounds (default 3) of fresh processes, so a slow spell of a
shared machine does not fall on one side; the table gives each side's median and range over the rounds and the
median (and range) of the rounds' paired ratios. The PyTorch side runs with --torch_python (default: this
interpreter when it has torch, as scripts/setup.sh installs it). The machine (CPU model, ISA extensions such as
avx512_bf16 / AMX, usable cores, thread variables, MindSpore, PyTorch and its oneDNN / MKL builds) is printed
first (bench/machine.py), then one `RESULT {json}` line per process and the table.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

PRESETS = {"bert-base": "bert-base-uncased", "tinybert4": "tinybert-4l-312", "zoo4": "ms-zoo-tinybert-4l-384",
           "minilm6": "all-minilm-l6-v2"}


def worker(args):
    """One configuration in this process: prints RESULT {json}."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    import mindspore as ms  # pylint: disable=import-outside-toplevel

    from src.config import DistillConfig, StageConfig, bert_preset, resolve_layer_map  # pylint: disable=C0415
    from src.distill.loss import DistillLoss, build_fit_dense  # pylint: disable=import-outside-toplevel
    from src.infra.backend import Backend  # pylint: disable=import-outside-toplevel
    from src.model.heads import build_model  # pylint: disable=import-outside-toplevel
    from src.training.step import TrainStep  # pylint: disable=import-outside-toplevel

    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_seed(0)
    # what CPU training stages use (Backend.for_training), with the GELU kernel and the head layout as asked
    backend = Backend(gelu=args.cpu_gelu, heads="swap" if args.views else "transpose", host_update=True)
    teacher_cfg, student_cfg = bert_preset(PRESETS[args.teacher]), bert_preset(PRESETS[args.student])
    pairs = resolve_layer_map("uniform", teacher_cfg.num_hidden_layers, student_cfg.num_hidden_layers)
    teacher, student = build_model(teacher_cfg, "backbone", backend), build_model(student_cfg, "backbone", backend)
    fit_dense = build_fit_dense(student_cfg, teacher_cfg, pairs, "shared")
    loss_net = DistillLoss(student, teacher, "gd", DistillConfig(), pairs, fit_dense=fit_dense)
    step = TrainStep(loss_net, loss_net.optimizer_params(), StageConfig(lr=5e-5), total_steps=1000, graph=True,
                     host_update=backend.host_update)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 30522, size=(args.batch, args.seq)).astype(np.int32)
    mask = np.ones((args.batch, args.seq), np.int32)
    mask[:, args.seq - args.seq // 8:] = 0
    types = np.zeros((args.batch, args.seq), np.int32)
    types[:, args.seq // 2:] = 1
    # GD has no labels; the loss cell takes a placeholder it does not read (as the trainer passes)
    batch = [ms.Tensor(ids), ms.Tensor(types), ms.Tensor(mask), ms.Tensor(np.zeros((args.batch,), np.int32))]
    times, losses = [], []
    for _ in range(args.warmup + args.steps):
        start = time.perf_counter()
        outputs, _, _, _ = step.step(*batch)
        losses.append(round(float(outputs[0].asnumpy()), 4))  # asnumpy waits for the step
        times.append(time.perf_counter() - start)
    median = statistics.median(times[args.warmup:])
    print("RESULT " + json.dumps({
        "side": "mindspore", "cpu_gelu": args.cpu_gelu, "views": args.views, "batch": args.batch, "seq": args.seq,
        "teacher": args.teacher, "student": args.student, "median_step_s": round(median, 4),
        "samples_per_s": round(args.batch / median, 3), "first_step_s": round(times[0], 2),
        "step_times": [round(t, 4) for t in times[args.warmup:]], "losses": losses,
        "maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}), flush=True)


def run_child(cmd):
    start = time.time()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT,
                          env=dict(os.environ, GLOG_v="3"))
    lines = [l for l in done.stdout.splitlines() if l.startswith("RESULT ")]
    if done.returncode or not lines:
        sys.exit(f"bench: {' '.join(cmd)} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    result["wall_s"] = round(time.time() - start, 1)
    return result


def default_torch_python() -> str:
    """This interpreter when it has torch (scripts/setup.sh installs the Hugging Face extra), else ""."""
    import importlib.util  # pylint: disable=import-outside-toplevel
    return sys.executable if importlib.util.find_spec("torch") is not None else ""


def summarize(rows, sides):
    """Per (side, batch): median samples/s and RSS over its processes, and the ratio of each of our processes to the
    PyTorch process that ran right after it (same "pair"), summarized by median and range.

    rows: run_child results, each with "label", "batch" and "pair" (our process and its PyTorch process share it);
    sides: side labels in table order. Returns table rows (dicts).
    """
    out = []
    for batch in sorted({r["batch"] for r in rows}):
        torch_of = {r["pair"]: r for r in rows if r["batch"] == batch and r["label"].startswith("PyTorch")}
        for side in sides:
            mine = [r for r in rows if r["batch"] == batch and r["label"] == side]
            if not mine:
                continue
            paired = [(r, torch_of[r["pair"]]) for r in mine if not side.startswith("PyTorch") and r["pair"] in torch_of]
            ratios = [r["samples_per_s"] / t["samples_per_s"] for r, t in paired]
            memory = [r["maxrss_mb"] / t["maxrss_mb"] for r, t in paired]
            out.append({"side": side, "batch": batch, "processes": len(mine),
                        "median_step_s": statistics.median(r["median_step_s"] for r in mine),
                        "samples_per_s": statistics.median(r["samples_per_s"] for r in mine),
                        "samples_per_s_range": [min(r["samples_per_s"] for r in mine),
                                                max(r["samples_per_s"] for r in mine)],
                        "maxrss_mb": statistics.median(r["maxrss_mb"] for r in mine),
                        "ratio": statistics.median(ratios) if ratios else None,
                        "ratio_range": [min(ratios), max(ratios)] if ratios else None,
                        "rss_ratio": statistics.median(memory) if memory else None})
    return out


def table(summary, args) -> str:
    lines = [f"GD step, teacher {args.teacher}, student {args.student}, seq {args.seq}, float32; each cell the "
             f"median over {args.rounds} round(s) of fresh processes, sides alternating (ours, PyTorch, ours, ...), "
             f"each of our processes compared with the PyTorch process right after it; a process times {args.steps} steps after {args.warmup} warm-up (median); PyTorch intra-op threads: "
             f"{args.torch_threads or 'its default'}", "",
             "| side | batch | s/step | samples/s (min-max) | peak RSS | vs PyTorch: samples/s, median (min-max) of "
             "the paired ratios | peak RSS / PyTorch's |", "|---|---:|---:|---:|---:|---:|---:|"]
    for row in summary:
        low, high = row["samples_per_s_range"]
        ratio = (f"{row['ratio']:.2f}x ({row['ratio_range'][0]:.2f}-{row['ratio_range'][1]:.2f})"
                 if row["ratio"] is not None else "")
        memory = f"{row['rss_ratio']:.2f}x" if row["rss_ratio"] is not None else ""
        lines.append(f"| {row['side']} | {row['batch']} | {row['median_step_s']:.3f} | {row['samples_per_s']:.2f} "
                     f"({low:.2f}-{high:.2f}) | {row['maxrss_mb'] / 1024:.1f} GB | {ratio} | {memory} |")
    return "\n".join(lines)


def _commands(args, batch):
    """(label, command) of every side for one batch size, in the order a round runs them: ours and PyTorch
    alternate (ours, torch, ours, ...), so a slow spell of the machine does not land on one side only."""
    ours = []
    for kind in [k for k in args.cpu_gelu.split(",") if k]:
        label = f"MindSpore GRAPH, GELU {kind}{'' if args.views else ', no views'}"
        ours.append((label, [sys.executable, os.path.abspath(__file__), "--worker", "--teacher", args.teacher,
                             "--student", args.student, "--batch", str(batch), "--seq", str(args.seq), "--steps",
                             str(args.steps), "--warmup", str(args.warmup), "--cpu_gelu", kind]
                     + ([] if args.views else ["--no_views"])))
    if not args.torch_python:
        return ours
    torch = ("PyTorch", [args.torch_python, args.torch_reference, "gd-step", "--teacher", args.teacher, "--student",
                         args.student, "--batch", str(batch), "--seq", str(args.seq), "--steps", str(args.steps),
                         "--warmup", str(args.warmup)] + (["--threads", str(args.torch_threads)] if args.torch_threads else []))
    order = []
    for side in ours:
        order += [side, torch]
    return order


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="bert-base", choices=sorted(PRESETS))
    parser.add_argument("--student", default="tinybert4", choices=sorted(PRESETS))
    parser.add_argument("--batch", default="8", help="comma-separated batch sizes (default 8)")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per process (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps (compile; default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of fresh processes per side (default 3)")
    parser.add_argument("--cpu_gelu", default="aot,builtin", help="our GELU kernels to run: aot, builtin or both")
    parser.add_argument("--no_views", dest="views", action="store_false",
                        help="attention heads with ops.transpose instead of mint views (more memory, see README)")
    parser.add_argument("--torch_python", default=None,
                        help="python of an environment with torch (default: this one when it has torch; '' = none)")
    parser.add_argument("--torch_reference", default=os.path.join(os.path.dirname(ROOT), "shared", "bench",
                                                                  "torch_reference.py"))
    parser.add_argument("--torch_threads", type=int, default=None,
                        help="PyTorch intra-op threads (default: the usable CPUs, as MindSpore uses; torch's own "
                             "default counts physical cores, 1 on a 2-vCPU machine with SMT; 0 = torch's default)")
    parser.add_argument("--json", help="also write the rows and the summary to this JSON file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.batch = int(args.batch)
        worker(args)
        return 0
    if args.rounds < 1:
        parser.error(f"--rounds {args.rounds}: expected at least 1")
    if args.torch_python is None:
        args.torch_python = default_torch_python()
    from machine import describe, lines, usable_cpus  # pylint: disable=import-outside-toplevel  (bench/ on sys.path)
    if args.torch_threads is None:
        args.torch_threads = usable_cpus()
    if args.torch_python and not os.path.isfile(args.torch_reference):
        parser.error(f"--torch_reference {args.torch_reference} does not exist")
    info = describe(args.torch_python)
    print("\n".join(lines(info)))
    print(f"command: python bench/bench_train_step.py {' '.join(sys.argv[1:])}", flush=True)
    rows = []
    for round_index in range(args.rounds):
        for batch in [int(b) for b in args.batch.split(",")]:
            for position, (label, cmd) in enumerate(_commands(args, batch)):
                # our process and the PyTorch process right after it form one pair
                pair = f"{round_index}-{position // 2 if args.torch_python else position}"
                result = dict(run_child(cmd), label=label, round=round_index, batch=batch, pair=pair)
                rows.append(result)
                print(f"round {round_index + 1}/{args.rounds}, batch {batch}, {label}: "
                      f"{result['samples_per_s']:.2f} samples/s, {result['maxrss_mb'] / 1024:.1f} GB", flush=True)
                print("RESULT " + json.dumps(result), flush=True)
    sides = list(dict.fromkeys(r["label"] for r in rows))
    summary = summarize(rows, sides)
    print("\n" + table(summary, args))
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"machine": info, "command": sys.argv[1:], "rows": rows, "summary": summary}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
