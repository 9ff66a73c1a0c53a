"""General-distillation training step on CPU: this project (MindSpore) vs the PyTorch original's computation.

    python bench/bench_train_step.py                         # ours (GELU aot and builtin) vs PyTorch, batch 8, 3 rounds
    python bench/bench_train_step.py --batch 8,32 --rounds 5 --json gd_step.json
    python bench/bench_train_step.py --torch_python ''       # ours only
    python bench/bench_train_step.py --breakdown --cpu_gelu aot --batch 8,32 --json gd_breakdown.json

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

--breakdown times the step's parts instead, on both sides, in the same fresh-process, alternating rounds: (a) the
teacher's forward alone (ours: the teacher BertModel, same Backend, in an inference-only ms.jit graph; PyTorch: eval
mode under torch.no_grad), (b) the student's forward + backward with the GD losses against the teacher's outputs,
computed once before the timed calls (ours: a bench-only DistillLoss subclass that takes them as inputs, through the
same TrainStep gradient function; PyTorch: GeneralDistill.forward with the teacher replaced by those outputs), (b')
the optimizer update alone on (b)'s gradients (clipping + AdamW), (c) the full step as in the default mode and
(d) a GEMM probe, one [B*S, 768] x [768, 3072] float32 product (ops.matmul in a jit graph vs torch.matmul), in
GFLOP/s. A process calls every part once per iteration, in turn, so a slow spell falls on all parts alike. Both
sides run on --torch_threads threads (MindSpore's CPU kernel threads set to the same count). The PyTorch side is this
file run by --torch_python on torch_reference.py's modules (it imports torch, never MindSpore). The table gives per
part each side's median ms and the paired ratio PyTorch ms / our ms (> 1: ours faster); --json writes the same.
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


def check_kernels(args):
    """A row labelled "GELU aot" or "--layer_norm aot" must time the AOT kernels: where they do not build, the cells
    fall back to MindSpore's ops with a warning, and the row would time those under the wrong name. Stop instead."""
    from src.infra import aot  # pylint: disable=import-outside-toplevel

    asked = [flag for flag, value in (("--cpu_gelu", args.cpu_gelu), ("--layer_norm", args.layer_norm))
             if value == "aot"]
    if asked and not aot.available():
        raise SystemExit(f"{' and '.join(asked)} aot: the AOT kernel library did not build on this machine (the "
                         f"warning above says why), so this row would time MindSpore's builtin ops under the aot "
                         f"label; install g++ or ask for builtin")


def gd_step_setup(args):
    """What one MindSpore GD step needs, as CPU training stages build it (Backend.for_training) with the GELU
    kernel and head layout asked: teacher, student (training mode: dropout, as run_stage sets it and as the PyTorch
    side trains), fit_dense, loss net, TrainStep and one batch of random ids with the last 1/8 of every row padded."""
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
    check_kernels(args)
    backend = Backend(gelu=args.cpu_gelu, heads="swap" if args.views else "transpose", layer_norm=args.layer_norm,
                      host_update=True)
    teacher_cfg, student_cfg = bert_preset(PRESETS[args.teacher]), bert_preset(PRESETS[args.student])
    pairs = resolve_layer_map("uniform", teacher_cfg.num_hidden_layers, student_cfg.num_hidden_layers)
    teacher, student = build_model(teacher_cfg, "backbone", backend), build_model(student_cfg, "backbone", backend)
    student.set_train(True)
    fit_dense = build_fit_dense(student_cfg, teacher_cfg, pairs, "shared")
    loss_net = DistillLoss(student, teacher, "gd", DistillConfig(), pairs, fit_dense=fit_dense)
    stage = StageConfig(lr=5e-5)
    step = TrainStep(loss_net, loss_net.optimizer_params(), stage, total_steps=1000, graph=True,
                     host_update=backend.host_update)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 30522, size=(args.batch, args.seq)).astype(np.int32)
    mask = np.ones((args.batch, args.seq), np.int32)
    mask[:, args.seq - args.seq // 8:] = 0
    types = np.zeros((args.batch, args.seq), np.int32)
    types[:, args.seq // 2:] = 1
    # GD has no labels; the loss cell takes a placeholder it does not read (as the trainer passes)
    batch = [ms.Tensor(ids), ms.Tensor(types), ms.Tensor(mask), ms.Tensor(np.zeros((args.batch,), np.int32))]
    return {"backend": backend, "teacher_cfg": teacher_cfg, "pairs": pairs, "teacher": teacher, "student": student,
            "fit_dense": fit_dense, "loss_net": loss_net, "stage": stage, "step": step, "batch": batch}


def worker(args):
    """One configuration in this process: prints RESULT {json}."""
    parts = gd_step_setup(args)
    step, batch = parts["step"], parts["batch"]
    times, losses = [], []
    for _ in range(args.warmup + args.steps):
        start = time.perf_counter()
        outputs, _, _, _ = step.step(*batch)
        losses.append(round(float(outputs[0].asnumpy()), 4))  # asnumpy waits for the step
        times.append(time.perf_counter() - start)
    median = statistics.median(times[args.warmup:])
    print("RESULT " + json.dumps({
        "side": "mindspore", "cpu_gelu": args.cpu_gelu, "views": args.views, "layer_norm": args.layer_norm,
        "batch": args.batch, "seq": args.seq,
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


def memory_model(summary):
    """Peak RSS as fixed + per-sample MB for each side, by least squares over the batch sizes run (needs two or more):
    {side: {"fixed_mb", "per_sample_mb"}}, plus, when PyTorch ran, the batch from which ours is at most PyTorch's
    ("crossover_batch": None when ours is never or always at most PyTorch's in the fitted lines)."""
    model = {}
    for side in dict.fromkeys(row["side"] for row in summary):
        points = [(row["batch"], row["maxrss_mb"]) for row in summary if row["side"] == side]
        if len({b for b, _ in points}) < 2:
            continue
        mean_b = statistics.fmean(b for b, _ in points)
        mean_m = statistics.fmean(m for _, m in points)
        slope = sum((b - mean_b) * (m - mean_m) for b, m in points) / sum((b - mean_b) ** 2 for b, _ in points)
        model[side] = {"fixed_mb": mean_m - slope * mean_b, "per_sample_mb": slope}
    torch = next((side for side in model if side.startswith("PyTorch")), None)
    if torch is not None:
        theirs = model[torch]
        for side, ours in model.items():
            if side == torch:
                continue
            extra, saved = ours["fixed_mb"] - theirs["fixed_mb"], theirs["per_sample_mb"] - ours["per_sample_mb"]
            ours["crossover_batch"] = extra / saved if extra > 0 and saved > 0 else None
    return model


def import_rss_mb(python: str, module: str) -> int:
    """Peak RSS (MB) of a fresh `python` process that only imports `module`: the framework's own floor, which every
    peak RSS of its side includes."""
    code = f"import resource, {module}; print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, check=False, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{python} -c 'import {module}' failed:\n{done.stderr[-2000:]}")
    return round(int(done.stdout.split()[-1]) / 1024)


def memory_lines(model, imports) -> list:
    """Text under the table: the fitted peak-RSS lines and the import floors (imports: {label: MB})."""
    out = []
    for side, fit in model.items():
        text = f"peak RSS ~ {fit['fixed_mb']:.0f} MB + {fit['per_sample_mb']:.1f} MB per sample: {side}"
        if fit.get("crossover_batch") is not None:
            text += f" (at most PyTorch's from batch ~{fit['crossover_batch']:.0f})"
        out.append(text)
    if imports:
        out.append("RSS of the import alone: " + ", ".join(f"{label} {mb} MB" for label, mb in imports.items()))
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
    breakdown = getattr(args, "breakdown", False)
    # --breakdown: both sides on the same threads (MindSpore's CPU kernel threads set to PyTorch's count)
    threads = ["--breakdown", "--threads", str(args.torch_threads or 0)] if breakdown else []
    ours = []
    for kind in [k for k in args.cpu_gelu.split(",") if k]:
        label = (f"MindSpore GRAPH, GELU {kind}{'' if args.views else ', no views'}"
                 f"{'' if args.layer_norm == 'aot' else ', builtin LayerNorm'}")
        ours.append((label, [sys.executable, os.path.abspath(__file__), "--worker", "--teacher", args.teacher,
                             "--student", args.student, "--batch", str(batch), "--seq", str(args.seq), "--steps",
                             str(args.steps), "--warmup", str(args.warmup), "--cpu_gelu", kind,
                             "--layer_norm", args.layer_norm]
                     + ([] if args.views else ["--no_views"]) + threads))
    if not args.torch_python:
        return ours
    if breakdown:  # this file's torch_breakdown_worker, run by the PyTorch interpreter on torch_reference's modules
        torch = ("PyTorch", [args.torch_python, os.path.abspath(__file__), "--torch_worker", "--torch_reference",
                             args.torch_reference, "--teacher", args.teacher, "--student", args.student, "--batch",
                             str(batch), "--seq", str(args.seq), "--steps", str(args.steps), "--warmup",
                             str(args.warmup)] + threads)
    else:
        torch = ("PyTorch", [args.torch_python, args.torch_reference, "gd-step", "--teacher", args.teacher, "--student",
                             args.student, "--batch", str(batch), "--seq", str(args.seq), "--steps", str(args.steps),
                             "--warmup", str(args.warmup)] + (["--threads", str(args.torch_threads)] if args.torch_threads else []))
    order = []
    for side in ours:
        order += [side, torch]
    return order


# ------------------------------------------------------------------------------------------------ --breakdown
# Where the step's time goes, part by part, on both sides (issue 19). A breakdown process times every part in turn
# at every iteration (teacher, student, update, full step, GEMM, teacher, ...), so a slow spell of the machine falls
# on all parts alike; the processes themselves alternate sides over the rounds as in the default mode.
PARTS = ("teacher_forward", "student_forward_backward", "update", "full_step", "gemm")
REQUIRED_PARTS = ("teacher_forward", "student_forward_backward", "full_step", "gemm")
PART_TITLES = {
    "teacher_forward": "(a) teacher forward (frozen, eval, no grad)",
    "student_forward_backward": "(b) student fwd+bwd + losses vs precomputed teacher outputs",
    "update": "(b') update alone: unscale/clip + AdamW",
    "full_step": "(c) full GD step (as the default mode)",
    "gemm": "(d) GEMM probe [B*S,768]x[768,3072] fp32",
}
GEMM_K, GEMM_N = 768, 3072


def gemm_flops(batch: int, seq: int) -> float:
    """FLOPs of the probe's one [batch*seq, 768] x [768, 3072] product (a multiply and an add per term)."""
    return 2.0 * batch * seq * GEMM_K * GEMM_N


def time_parts(parts, warmup: int, steps: int):
    """{name: [seconds of each timed call]}: every part called once per iteration, in order, warmup iterations
    first (untimed). Each callable must return only when its work is done."""
    times = {name: [] for name in parts}
    for iteration in range(warmup + steps):
        for name, call in parts.items():
            start = time.perf_counter()
            call()
            if iteration >= warmup:
                times[name].append(time.perf_counter() - start)
    return times


def part_results(times, batch: int, seq: int):
    """The "parts" entry of a breakdown RESULT: median and every timed call in ms (+ GFLOP/s for the GEMM)."""
    out = {}
    for name, samples in times.items():
        median = statistics.median(samples)
        out[name] = {"median_ms": round(median * 1e3, 3), "times_ms": [round(t * 1e3, 3) for t in samples]}
        if name == "gemm":
            out[name].update(gflops=round(gemm_flops(batch, seq) / median / 1e9, 2),
                             shape=[batch * seq, GEMM_K, GEMM_N])
    return out


def _precomputed_teacher_loss(distill_loss_class, teacher_layers: int):
    """A DistillLoss whose construct takes the teacher's hidden states and attention scores as inputs instead of
    running the teacher: construct(ids, types, mask, labels, *hidden_states (L+1), *attention_scores (L)). The same
    student call and the same loss code (DistillLoss._intermediate) as the GD loss; bench-only adapter."""
    import mindspore as ms  # pylint: disable=import-outside-toplevel
    from mindspore import ops  # pylint: disable=import-outside-toplevel

    n_hidden = teacher_layers + 1

    class PrecomputedTeacherLoss(distill_loss_class):
        def construct(self, input_ids, segment_ids, input_mask, label_ids, *teacher):  # pylint: disable=W0221
            s_out = self.student(input_ids, segment_ids, input_mask)
            hidden_states, attention_scores = teacher[:n_hidden], teacher[n_hidden:]
            # the positions of BertModel's output tuple (HIDDEN_STATES = 2, ATTENTION_SCORES = 3)
            t_out = (hidden_states[-1], hidden_states[-1], hidden_states, attention_scores)
            attention, hidden, embedding = self._intermediate(s_out, t_out, input_mask, (None, None, None))
            total = self.attention_weight * attention + self.hidden_weight * hidden + \
                self.embedding_weight * embedding
            zero = ops.zeros((), ms.float32)
            return total, attention, hidden, embedding, zero, zero, ops.zeros((1,), ms.float32)

    return PrecomputedTeacherLoss


def breakdown_worker(args):
    """MindSpore side of --breakdown in this process: prints RESULT {json} with every part's times."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    import mindspore as ms  # pylint: disable=import-outside-toplevel
    from mindspore import ops  # pylint: disable=import-outside-toplevel

    from src.config import DistillConfig  # pylint: disable=import-outside-toplevel
    from src.distill.loss import DistillLoss  # pylint: disable=import-outside-toplevel
    from src.training.step import TrainStep  # pylint: disable=import-outside-toplevel

    if args.threads:
        # MindSpore's CPU kernel threads, as many as PyTorch's (its default on a 2-CPU machine is the same: one
        # actor and one kernel thread). This process's environment is the parent's os.environ, without the
        # OMP_NUM_THREADS=1 that importing MindSpore put in the parent's C environment.
        ms.device_context.cpu.op_tuning.threads_num(args.threads)
    parts = gd_step_setup(args)  # the models, loss and step exactly as worker() builds them
    backend, teacher, student, fit_dense = parts["backend"], parts["teacher"], parts["student"], parts["fit_dense"]
    teacher_cfg, pairs, stage, step, batch = (parts["teacher_cfg"], parts["pairs"], parts["stage"], parts["step"],
                                              parts["batch"])

    # (a) the teacher alone, in an inference-only graph (no gradient), eval mode (DistillLoss set it), same Backend
    def teacher_forward(input_ids, token_type_ids, attention_mask):
        return teacher(input_ids, token_type_ids, attention_mask)

    teacher_graph = ms.jit(teacher_forward)
    # (b) the student's gradients against the teacher's outputs, computed once here, outside the timed calls; the
    # adapter shares the student and fit_dense, and a TrainStep of its own gives the same gradient function
    t_out = teacher_graph(*batch[:3])
    teacher_tensors = list(t_out[2]) + list(t_out[3])  # hidden states (L+1), attention scores (L)
    adapter_class = _precomputed_teacher_loss(DistillLoss, teacher_cfg.num_hidden_layers)
    adapter = adapter_class(student, teacher, "gd", DistillConfig(), pairs, fit_dense=fit_dense)
    student_step = TrainStep(adapter, adapter.optimizer_params(), stage, total_steps=1000, graph=True,
                             host_update=backend.host_update)
    # (d) one FFN-sized product in a graph of its own
    rng = np.random.default_rng(1)  # GEMM operands (their values do not change the time)
    gemm_a = ms.Tensor(rng.standard_normal((args.batch * args.seq, GEMM_K)).astype(np.float32))
    gemm_b = ms.Tensor(rng.standard_normal((GEMM_K, GEMM_N)).astype(np.float32))

    def product(a, b):
        return ops.matmul(a, b)

    gemm_graph = ms.jit(product)
    state = {"grads": None, "skipped": 0, "losses": [], "student_losses": []}

    # Each call returns when its outputs are ready: asnumpy waits for a tensor and, on CPU, shares its memory (no
    # copy; HostUpdate relies on it), so waiting for every output costs nothing. (ms.runtime.synchronize is for
    # Ascend / GPU streams only: on CPU it logs an error and does nothing.)
    def wait(tensors):
        for tensor in tensors:
            tensor.asnumpy()

    def run_teacher():
        out = teacher_graph(*batch[:3])
        wait(out[:2] + tuple(out[2]) + tuple(out[3]))

    def run_student():
        outputs, grads = student_step.gradients(*batch, *teacher_tensors)
        wait(grads)
        state["student_losses"].append(round(float(outputs[0].asnumpy()), 4))
        state["grads"] = grads

    def run_update():  # the host update (numpy, in place) returns when done
        finite, _, _ = student_step.update(*state["grads"])
        state["skipped"] += int(not bool(np.asarray(finite.asnumpy() if hasattr(finite, "asnumpy") else finite)))
        state["grads"] = None

    def run_full():  # as worker() times a step
        outputs, _, _, _ = step.step(*batch)
        state["losses"].append(round(float(outputs[0].asnumpy()), 4))

    def run_gemm():
        gemm_graph(gemm_a, gemm_b).asnumpy()

    calls = {"teacher_forward": run_teacher, "student_forward_backward": run_student, "update": run_update,
             "full_step": run_full, "gemm": run_gemm}
    times = time_parts(calls, args.warmup, args.steps)
    print("RESULT " + json.dumps({
        "side": "mindspore", "cpu_gelu": args.cpu_gelu, "views": args.views, "layer_norm": args.layer_norm,
        "batch": args.batch, "seq": args.seq,
        "teacher": args.teacher, "student": args.student, "threads": args.threads or "MindSpore's default",
        "parts": part_results(times, args.batch, args.seq), "losses": state["losses"],
        "student_losses": state["student_losses"], "skipped_updates": state["skipped"],
        "maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}), flush=True)


def torch_breakdown_worker(args):
    """PyTorch side of --breakdown in this process (run by --torch_python; imports torch, never MindSpore): the
    modules, optimizer and step of torch_reference.py gd-step, part by part. Prints RESULT {json}."""
    import importlib.util  # pylint: disable=import-outside-toplevel

    spec = importlib.util.spec_from_file_location("torch_reference", args.torch_reference)
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    torch, nn = ref.torch, ref.nn
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # as torch_reference.gd_step builds them
    net = ref.GeneralDistill(ref.SHAPES[args.teacher], ref.SHAPES[args.student]).train()
    net.teacher.eval()
    named = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    decay = [p for n, p in named if "ln" not in n and "bias" not in n]
    no_decay = [p for n, p in named if "ln" in n or "bias" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 1e-4}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=5e-5, eps=1e-6)
    batch = ref.random_batch(args.batch, args.seq)
    teacher = net.teacher
    with torch.no_grad():
        cached = teacher(*batch)

    class Precomputed(nn.Module):
        """Stands in for the teacher in GeneralDistill.forward: returns the outputs computed once above."""

        def forward(self, *_):
            return cached

    precomputed = Precomputed()
    state = {"losses": [], "student_losses": []}

    def run_teacher():
        with torch.no_grad():
            teacher(*batch)

    def run_student():
        opt.zero_grad(set_to_none=True)
        net.teacher = precomputed  # GeneralDistill.forward unchanged, minus the teacher's computation
        try:
            loss = net(*batch)
        finally:
            net.teacher = teacher
        loss.backward()
        state["student_losses"].append(round(float(loss.detach()), 4))

    def run_update():
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()

    def run_full():  # torch_reference.gd_step's loop body
        opt.zero_grad(set_to_none=True)
        loss = net(*batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        state["losses"].append(round(float(loss.detach()), 4))

    gen = torch.Generator().manual_seed(0)
    gemm_a = torch.randn(args.batch * args.seq, GEMM_K, generator=gen)
    gemm_b = torch.randn(GEMM_K, GEMM_N, generator=gen)

    def run_gemm():
        torch.matmul(gemm_a, gemm_b)

    calls = {"teacher_forward": run_teacher, "student_forward_backward": run_student, "update": run_update,
             "full_step": run_full, "gemm": run_gemm}
    times = time_parts(calls, args.warmup, args.steps)
    print("RESULT " + json.dumps({
        "side": "pytorch", "batch": args.batch, "seq": args.seq, "teacher": args.teacher, "student": args.student,
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "parts": part_results(times, args.batch, args.seq), "losses": state["losses"],
        "student_losses": state["student_losses"],
        "maxrss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}), flush=True)


def summarize_breakdown(rows, sides):
    """Per (batch, our side, part): our median ms and PyTorch's over their processes, and the median and range of
    the paired ratios PyTorch ms / our ms (> 1: we are faster), each of our processes against the PyTorch process
    right after it; plus each part's share of its side's full step and the GEMM's GFLOP/s.

    rows: breakdown RESULTs with "label", "batch", "pair" and "parts"; sides: labels in table order."""
    out = []
    for batch in sorted({r["batch"] for r in rows}):
        theirs = [r for r in rows if r["batch"] == batch and r["label"].startswith("PyTorch")]
        torch_of = {r["pair"]: r for r in theirs}
        for side in sides:
            if side.startswith("PyTorch"):
                continue
            mine = [r for r in rows if r["batch"] == batch and r["label"] == side]
            if not mine:
                continue
            for part in [p for p in PARTS if p in mine[0]["parts"]]:
                ours = [r["parts"][part]["median_ms"] for r in mine]
                torch_ms = [r["parts"][part]["median_ms"] for r in theirs if part in r["parts"]]
                ratios = [torch_of[r["pair"]]["parts"][part]["median_ms"] / r["parts"][part]["median_ms"]
                          for r in mine if r["pair"] in torch_of and part in torch_of[r["pair"]]["parts"]]
                entry = {"batch": batch, "side": side, "part": part, "processes": len(mine),
                         "ours_ms": statistics.median(ours), "ours_ms_range": [min(ours), max(ours)],
                         "torch_ms": statistics.median(torch_ms) if torch_ms else None,
                         "torch_ms_range": [min(torch_ms), max(torch_ms)] if torch_ms else None,
                         "ratio": statistics.median(ratios) if ratios else None,
                         "ratio_range": [min(ratios), max(ratios)] if ratios else None}
                if part != "gemm":
                    entry["ours_share"] = statistics.median(
                        r["parts"][part]["median_ms"] / r["parts"]["full_step"]["median_ms"] for r in mine)
                    entry["torch_share"] = statistics.median(
                        r["parts"][part]["median_ms"] / r["parts"]["full_step"]["median_ms"] for r in theirs) \
                        if theirs else None
                else:
                    entry["ours_gflops"] = statistics.median(r["parts"]["gemm"]["gflops"] for r in mine)
                    entry["torch_gflops"] = statistics.median(r["parts"]["gemm"]["gflops"] for r in theirs) \
                        if theirs else None
                out.append(entry)
    return out


def breakdown_table(summary, args) -> str:
    lines = [f"GD step breakdown, teacher {args.teacher}, student {args.student}, seq {args.seq}, float32; each "
             f"cell the median over {args.rounds} round(s) of fresh processes, sides alternating; a process times "
             f"every part once per iteration, in turn, {args.steps} iterations after {args.warmup} warm-up "
             f"(median); threads: {args.torch_threads or 'each side its default'} on both sides. Ratio = PyTorch ms "
             f"/ our ms (> 1: ours faster), median (min-max) of the paired processes. Share = part / its side's "
             f"full step. (b') update is (b)'s gradients through clip + AdamW; (c) ~ (a) + (b) + (b').", "",
             "| batch | part | ours | our ms (min-max) | PyTorch ms (min-max) | PyTorch / ours | share of step: "
             "ours / PyTorch |", "|---:|---|---|---:|---:|---:|---:|"]

    def cell(value, span):
        return f"{value:.1f} ({span[0]:.1f}-{span[1]:.1f})" if value is not None else ""

    for row in summary:
        ratio = (f"{row['ratio']:.2f}x ({row['ratio_range'][0]:.2f}-{row['ratio_range'][1]:.2f})"
                 if row["ratio"] is not None else "")
        if row["part"] == "gemm":
            extra = f"GFLOP/s {row['ours_gflops']:.1f}" + (f" / {row['torch_gflops']:.1f}"
                                                          if row["torch_gflops"] is not None else "")
        else:
            extra = f"{row['ours_share']:.0%}" + (f" / {row['torch_share']:.0%}" if row["torch_share"] is not None
                                                   else "")
        lines.append(f"| {row['batch']} | {PART_TITLES[row['part']]} | {row['side']} | "
                     f"{cell(row['ours_ms'], row['ours_ms_range'])} | {cell(row['torch_ms'], row['torch_ms_range'])} "
                     f"| {ratio} | {extra} |")
    return "\n".join(lines)


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
    parser.add_argument("--layer_norm", default="aot", choices=("aot", "builtin"),
                        help="LayerNorm by the AOT kernels (what CPU training uses when they build) or MindSpore's")
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
    parser.add_argument("--breakdown", action="store_true",
                        help="time the step's parts on both sides: (a) teacher forward, (b) student forward + "
                             "backward + losses against precomputed teacher outputs (and the update alone), (c) the "
                             "full step, (d) a [B*S,768]x[768,3072] float32 GEMM; both sides on --torch_threads "
                             "threads (MindSpore's CPU kernel threads set to the same count)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--torch_worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)  # a breakdown process's threads
    args = parser.parse_args()
    if args.worker or args.torch_worker:
        args.batch = int(args.batch)
        if args.torch_worker:
            torch_breakdown_worker(args)
        elif args.breakdown:
            breakdown_worker(args)
        else:
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
                if args.breakdown:
                    figures = ", ".join(f"{part} {value['median_ms']:.1f} ms"
                                        for part, value in result["parts"].items())
                else:
                    figures = f"{result['samples_per_s']:.2f} samples/s"
                print(f"round {round_index + 1}/{args.rounds}, batch {batch}, {label}: {figures}, "
                      f"{result['maxrss_mb'] / 1024:.1f} GB", flush=True)
                print("RESULT " + json.dumps(result), flush=True)
    sides = list(dict.fromkeys(r["label"] for r in rows))
    if args.breakdown:
        summary = summarize_breakdown(rows, sides)
        print("\n" + breakdown_table(summary, args))
    else:
        summary = summarize(rows, sides)
        print("\n" + table(summary, args))
        imports = {"MindSpore": import_rss_mb(sys.executable, "mindspore")}
        if args.torch_python:
            imports["PyTorch"] = import_rss_mb(args.torch_python, "torch")
        model = memory_model(summary)
        print("\n".join([""] + memory_lines(model, imports)))
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")
    if args.json:
        report = {"machine": info, "command": sys.argv[1:], "rows": rows, "summary": summary}
        if not args.breakdown:
            report.update(memory_model=model, import_rss_mb=imports)
        if args.breakdown:
            report.update(mode="breakdown", threads=args.torch_threads or None, parts=dict(PART_TITLES))
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
