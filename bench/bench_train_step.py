"""General-distillation training step on CPU: this project (MindSpore) vs the PyTorch original's computation.

    python bench/bench_train_step.py                                   # ours: fast GELU kernel and builtin, batch 8
    python bench/bench_train_step.py --batch 8,32 --torch_python /tmp/torchvenv/bin/python   # + PyTorch, ratios

One GD step = frozen teacher forward (eval mode), student forward + backward, attention-score MSE on the mapped
layers, hidden-state MSE through fit_dense, dynamic loss scaling, global-norm clipping, AdamWeightDecay: the same
work as `../shared/bench/torch_reference.py gd-step` (teacher BERT-base, student TinyBERT-4 312 by default,
random token ids with the last 1/8 of every row padded). Each configuration runs in its own process (so peak
memory is its own), warm-up steps first (graph compile), then the median of the timed steps. The PyTorch side
runs only when --torch_python names an interpreter that has torch (a separate venv: torch is not a project
dependency). Prints a table, then one `RESULT {json}` line per configuration.
"""
import argparse
import json
import os
import platform
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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="bert-base", choices=sorted(PRESETS))
    parser.add_argument("--student", default="tinybert4", choices=sorted(PRESETS))
    parser.add_argument("--batch", default="8", help="comma-separated batch sizes (default 8)")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="timed steps (default 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed first steps (compile; default 2)")
    parser.add_argument("--cpu_gelu", default="aot,builtin", help="our GELU kernels to run: aot, builtin or both")
    parser.add_argument("--no_views", dest="views", action="store_false",
                        help="attention heads with ops.transpose instead of mint views (more memory, see README)")
    parser.add_argument("--torch_python", default="", help="python of a venv with torch: also run the PyTorch side")
    parser.add_argument("--torch_reference", default=os.path.join(os.path.dirname(ROOT), "shared", "bench",
                                                                  "torch_reference.py"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.batch = int(args.batch)
        worker(args)
        return 0
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}, Python "
          f"{platform.python_version()}; load average {os.getloadavg()[0]:.2f}")
    print(f"command: python bench/bench_train_step.py {' '.join(sys.argv[1:])}", flush=True)
    rows = []
    for batch in [int(b) for b in args.batch.split(",")]:
        for kind in [k for k in args.cpu_gelu.split(",") if k]:
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--teacher", args.teacher, "--student",
                   args.student, "--batch", str(batch), "--seq", str(args.seq), "--steps", str(args.steps),
                   "--warmup", str(args.warmup), "--cpu_gelu", kind] + ([] if args.views else ["--no_views"])
            rows.append(run_child(cmd))
            print("RESULT " + json.dumps(rows[-1]), flush=True)
        if args.torch_python:
            cmd = [args.torch_python, args.torch_reference, "gd-step", "--teacher", args.teacher, "--student",
                   args.student, "--batch", str(batch), "--seq", str(args.seq), "--steps", str(args.steps),
                   "--warmup", str(args.warmup)]
            result = run_child(cmd)
            result["side"] = "pytorch " + result.get("torch", "")
            rows.append(result)
            print("RESULT " + json.dumps(result), flush=True)
    print(f"\nGD step, teacher {args.teacher}, student {args.student}, seq {args.seq}, float32; median of "
          f"{args.steps} steps after {args.warmup} warm-up; load average now {os.getloadavg()[0]:.2f}\n")
    print("| side | batch | s/step | samples/s | peak RSS | vs PyTorch (samples/s) | peak RSS / PyTorch's |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        side = row["side"] if row["side"] != "mindspore" else \
            f"MindSpore 2.10 GRAPH, GELU {row['cpu_gelu']}{'' if row.get('views', True) else ', no views'}"
        torch_row = next((r for r in rows if r["side"].startswith("pytorch") and r["batch"] == row["batch"]), None)
        ratio = f"{row['samples_per_s'] / torch_row['samples_per_s']:.2f}x" if torch_row else ""
        memory = f"{row['maxrss_mb'] / torch_row['maxrss_mb']:.2f}x" if torch_row else ""
        print(f"| {side} | {row['batch']} | {row['median_step_s']:.3f} | {row['samples_per_s']:.2f} | "
              f"{row['maxrss_mb'] / 1024:.1f} GB | {ratio} | {memory} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
