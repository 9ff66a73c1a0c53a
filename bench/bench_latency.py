"""Inference latency of the teacher (BERT-base) and the student (TinyBERT-4, 312 wide): our MINDIR and ONNX exports
against PyTorch eager (Hugging Face transformers) on the same weights.

    python bench/bench_latency.py [--quick] [--repeats 30] [--warmup 3] [--batch_sizes 1] [--seq_lengths 64,128]
        [--models teacher,student] [--formats MINDIR,ONNX,TORCH] [--threads N] [--pause_ms 5] [--json PATH]

Three sides run the same network, a sequence classifier with 2 labels and random (seeded) weights (latency does not
depend on their values):
- MINDIR: exported with src.ship.export at the fixed shape of the cell, run by src.ship.inference (nn.GraphCell);
- ONNX: exported once per model by the graph exporter (dynamic batch and sequence length), run by onnxruntime's
  CPUExecutionProvider;
- TORCH: the network's weights written as a Hugging Face folder by src/ship/hf.py (what `convert_checkpoint.py
  to-hf` does; in the bench's temporary folder), loaded with transformers.BertForSequenceClassification (float32,
  attention --torch_attention, default sdpa) and run in eval mode under torch.inference_mode(): PyTorch eager.
The classifier reads the pooled output itself (pooled_activation none, the Google / Hugging Face head), not
TinyBERT's ReLU(pooled): Hugging Face has no class for the ReLU head, so src/ship/hf.py refuses it (the ReLU on a
[B, 312] vector is no measurable part of the latency).

Every side is a whole call, numpy in, numpy out (the runners check and convert the inputs; the PyTorch side turns
them into int64 tensors and the logits back into numpy). The batch is src.ship.export.example_inputs (rows of
different lengths, padding, two segments). For each shape every side of every model first makes --warmup untimed
calls; the first one's logits are compared with the MindSpore Cell's on the same batch (tolerances: the export
check's, src.ship.export.PARITY_TOLERANCE, for MINDIR and ONNX; src.ship.hf.HF_CHECK_TOLERANCE, 1e-4 absolute, for
PyTorch) and the bench stops if one differs: the sides provably compute the same function. Then --repeats rounds in
which every side is called once, the order rotating by one each round (A B C, B C A, C A B, ...), so a slow spell
of a shared machine falls on all sides alike and no side is ever called twice in a row (none keeps a warmer cache
than another). Before each timed call the bench sleeps --pause_ms (untimed), so that the worker threads of the
runtime called before (OpenMP, onnxruntime and MindSpore pools spin a while after a call) are quiet again. The
table gives the median wall time with the fastest call in parentheses (on a shared machine the least disturbed
sample) and "vs PyTorch eager" = PyTorch's median / the side's median (> 1: faster than PyTorch), with the same
ratio of the minima in parentheses.

MindSpore, onnxruntime and torch get the same number of intra-op threads (--threads, default: the CPUs this
process may use; torch.set_num_threads). The machine (bench/machine.py), the versions, the load average and the
exact command are printed with the table; --json writes every figure (all times, per model, shape and side).
"""
import argparse
import json
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
sys.path.insert(0, os.path.join(ROOT, "bench"))

import numpy as np  # noqa: E402
import mindspore as ms  # noqa: E402
from mindspore import Tensor  # noqa: E402

import machine  # noqa: E402  (bench/machine.py)
from src.config import bert_preset  # noqa: E402
from src.model.checkpoint import save_model, sidecar_path  # noqa: E402
from src.model.heads import BertForSequenceClassification, LogitsOnly, count_parameters, head_spec  # noqa: E402
from src.ship.export import PARITY_TOLERANCE, example_inputs, export_network  # noqa: E402
from src.ship.hf import HF_CHECK_TOLERANCE, write_hf_folder  # noqa: E402
from src.ship.inference import load_runner  # noqa: E402

MODELS = {"teacher": "bert-base-uncased", "student": "tinybert-4l-312"}
FORMATS = ("MINDIR", "ONNX", "TORCH")
TORCH = "TORCH"
NUM_LABELS = 2
POOLED_ACTIVATION = "none"  # Hugging Face's head; src/ship/hf.py refuses TinyBERT's ReLU(pooled) head


def torch_missing():
    """None when torch and transformers import, else why not (one line)."""
    try:
        import torch  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
        import transformers  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    except ImportError as err:
        return f"{err} (pip install -r requirements-hf.txt)"
    return None


def versions(sides):
    import onnxruntime  # pylint: disable=import-outside-toplevel
    out = {"python": platform.python_version(), "mindspore": ms.__version__, "onnxruntime": onnxruntime.__version__,
           "numpy": np.__version__}
    if TORCH in sides:
        import torch  # pylint: disable=import-outside-toplevel
        import transformers  # pylint: disable=import-outside-toplevel
        out.update(torch=torch.__version__, transformers=transformers.__version__)
    return out


def load_average():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


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
        return list(dict.fromkeys(values))
    return parse


def build_parser():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="5 timed rounds after 1 warm-up call (overrides --repeats/--warmup); to check the "
                             "bench works, not for figures")
    parser.add_argument("--repeats", type=int, default=30, help="timed rounds per shape (default 30)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls of each side first, >= 1 (default 3)")
    parser.add_argument("--batch_sizes", type=int_list, default=[1], help="default 1")
    parser.add_argument("--seq_lengths", type=int_list, default=[64, 128], help="default 64,128")
    parser.add_argument("--models", type=name_list(tuple(MODELS)), default=list(MODELS), help="teacher,student")
    parser.add_argument("--formats", type=name_list(FORMATS), default=None,
                        help="sides, a subset of MINDIR,ONNX,TORCH (default: all three; without torch and "
                             "transformers, MINDIR,ONNX)")
    parser.add_argument("--threads", type=int, default=machine.usable_cpus(),
                        help="intra-op threads of MindSpore's CPU kernels, onnxruntime and torch (default: the CPUs "
                             "this process may use)")
    parser.add_argument("--torch_attention", choices=["sdpa", "eager"], default="sdpa",
                        help="transformers' attention implementation (default sdpa, what from_pretrained picks)")
    parser.add_argument("--pause_ms", type=float, default=5.0,
                        help="untimed sleep before every timed call, so the last runtime's threads are quiet "
                             "(default 5; 0 = back to back)")
    parser.add_argument("--json", help="also write every figure (all times, per model, shape and side) to this file")
    parser.add_argument("--workdir", default=None,
                        help="where the exports and Hugging Face folders go (default: a temporary folder, removed)")
    return parser


class TorchRunner:
    """A Hugging Face folder through transformers' BertForSequenceClassification, eval mode, torch.inference_mode();
    called like src.ship.inference's runners: (input_ids, token_type_ids, attention_mask) numpy -> logits numpy."""

    file_format = TORCH

    def __init__(self, folder: str, attention: str = "sdpa"):
        import torch  # pylint: disable=import-outside-toplevel
        import transformers  # pylint: disable=import-outside-toplevel

        transformers.utils.logging.disable_progress_bar()
        self.torch = torch
        self.model = transformers.BertForSequenceClassification.from_pretrained(
            folder, attn_implementation=attention, dtype=torch.float32).eval()
        self.attention = self.model.config._attn_implementation  # pylint: disable=protected-access

    def __call__(self, input_ids, token_type_ids, attention_mask):
        torch = self.torch
        with torch.inference_mode():
            out = self.model(input_ids=torch.from_numpy(np.asarray(input_ids, np.int64)),
                             token_type_ids=torch.from_numpy(np.asarray(token_type_ids, np.int64)),
                             attention_mask=torch.from_numpy(np.asarray(attention_mask, np.int64)))
        return out.logits.numpy()


def write_vocab(path: str, size: int) -> str:
    """A placeholder vocab.txt of `size` distinct tokens (BERT's special tokens where BERT has them): the Hugging
    Face folder needs one of the model's size; the bench feeds token ids and never tokenizes."""
    tokens = [f"[unused{i}]" for i in range(size)]
    for index, token in ((0, "[PAD]"), (100, "[UNK]"), (101, "[CLS]"), (102, "[SEP]"), (103, "[MASK]")):
        if index < size:
            tokens[index] = token
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write("\n".join(tokens) + "\n")
    return path


def hf_folder(net, workdir: str, role: str) -> str:
    """`net` as a Hugging Face folder, written as `convert_checkpoint.py to-hf` writes it: our checkpoint first,
    then src.ship.hf.write_hf_folder. Its own check (two small shapes, another MindSpore copy of the network) is
    left out: the bench compares the logits with the Cell's at every shape it measures."""
    checkpoint = save_model(net, os.path.join(workdir, f"{role}.ckpt"))
    vocab = write_vocab(os.path.join(workdir, f"{role}_vocab.txt"), net.config.vocab_size)
    try:
        return write_hf_folder(checkpoint, os.path.join(workdir, f"{role}_hf"), vocab_file=vocab, overwrite=True,
                               verify=False).path
    finally:
        for leftover in (checkpoint, sidecar_path(checkpoint), vocab):
            if os.path.exists(leftover):
                os.remove(leftover)


def tolerance(side: str, reference: np.ndarray) -> float:
    if side == TORCH:
        return HF_CHECK_TOLERANCE
    atol, rtol = PARITY_TOLERANCE[side]
    return atol + rtol * float(np.max(np.abs(reference)))


def rotation(keys, index):
    """Round `index`'s order: the keys rotated by `index` (A B C, B C A, C A B, ...): each is first equally often
    and, with two or more keys, none is ever called twice in a row."""
    shift = index % len(keys)
    return keys[shift:] + keys[:shift]


def warm_up(runners, inputs, warmup):
    """`warmup` untimed calls of every runner, in the same rotation; returns {key: logits of its first call}."""
    first = {}
    keys = list(runners)
    for index in range(warmup):
        for key in rotation(keys, index):
            out = runners[key](*inputs[key[0]])
            first.setdefault(key, out)
    return first


def time_rounds(runners, inputs, repeats, pause_s):
    """`repeats` rounds, each calling every runner once in the rotating order; returns {key: [seconds]}."""
    times = {key: [] for key in runners}
    keys = list(runners)
    for index in range(repeats):
        for key in rotation(keys, index):
            if pause_s:
                time.sleep(pause_s)
            start = time.perf_counter()
            runners[key](*inputs[key[0]])
            times[key].append(time.perf_counter() - start)
    return times


def ratio_cell(theirs, mine):
    return f"{theirs['median_s'] / mine['median_s']:.2f}x ({theirs['min_s'] / mine['min_s']:.2f}x)"


def ms_cell(row):
    return f"{row['median_s'] * 1e3:.1f} ({row['min_s'] * 1e3:.1f})"


def print_tables(rows, args, sides):
    index = {(r["model"], r["batch"], r["seq"], r["side"]): r for r in rows}
    print("| model | batch | seq | side | ms, median (min) | vs PyTorch eager, median (min) "
          "| max abs logits diff vs MindSpore |")
    print("|---|---:|---:|---|---:|---:|---:|")
    for role in args.models:
        for seq in args.seq_lengths:
            for batch in args.batch_sizes:
                torch_row = index.get((role, batch, seq, TORCH))
                for side in sides:
                    row = index.get((role, batch, seq, side))
                    if row is None:
                        continue
                    versus = ("(reference)" if side == TORCH else ratio_cell(torch_row, row) if torch_row else "-")
                    print(f"| {role} | {batch} | {seq} | {side} | {ms_cell(row)} | {versus} | "
                          f"{row['max_abs_diff']:.1e} |")
    if all(role in args.models for role in ("teacher", "student")):
        print("\n| side | batch | seq | teacher/student, median (min) |\n|---|---:|---:|---:|")
        for side in sides:
            for seq in args.seq_lengths:
                for batch in args.batch_sizes:
                    teacher = index.get(("teacher", batch, seq, side))
                    student = index.get(("student", batch, seq, side))
                    if teacher and student:
                        print(f"| {side} | {batch} | {seq} | {ratio_cell(teacher, student)} |")


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup = 5, 1
    if args.warmup < 1 or args.repeats < 1 or args.threads < 1 or args.pause_ms < 0:
        parser.error("--warmup, --repeats and --threads must be >= 1 (the first warm-up call is the logits check), "
                     "--pause_ms >= 0")
    missing = torch_missing()
    notes = []
    if args.formats is None:
        sides = list(FORMATS) if missing is None else [f for f in FORMATS if f != TORCH]
        if missing:
            notes.append(f"TORCH left out (no PyTorch eager side): {missing}")
    else:
        sides = args.formats
        if TORCH in sides and missing:
            parser.error(f"--formats {','.join(sides)}: the TORCH side needs torch and transformers: {missing}")
    words = [os.path.relpath(os.path.abspath(__file__), ROOT)] + list(sys.argv[1:] if argv is None else argv)
    command = "python " + " ".join(shlex.quote(w) for w in words)

    ms.device_context.cpu.op_tuning.threads_num(args.threads)
    if TORCH in sides:
        import torch  # pylint: disable=import-outside-toplevel
        torch.set_num_threads(args.threads)  # importing MindSpore set OMP_NUM_THREADS=1 in the C environment
    info = machine.describe(torch_here=TORCH in sides)
    found = versions(sides)
    workdir = args.workdir or tempfile.mkdtemp(prefix="bench_latency_")
    os.makedirs(workdir, exist_ok=True)
    print(f"# command: {command}")
    for line in machine.lines(info):
        print(f"# {line}")
    print("# versions: " + ", ".join(f"{k} {v}" for k, v in found.items()))
    for note in notes:
        print(f"# {note}")
    print(f"# threads: {args.threads} intra-op for MindSpore CPU kernels, onnxruntime"
          + (f" and torch (torch.get_num_threads() = {info['pytorch']['threads']})" if TORCH in sides else ""))
    print(f"# sides: {', '.join(sides)}; timing: {args.warmup} untimed call(s) of each side, then {args.repeats} "
          f"rounds calling every side once in rotating order, {args.pause_ms:g} ms untimed pause before each call; "
          f"median (min) of the calls; random weights, classifier with {NUM_LABELS} labels on the pooled output "
          f"(pooled_activation {POOLED_ACTIVATION})", flush=True)
    if args.quick:
        print("# --quick: a handful of calls on a possibly busy machine; the figures say only that the bench runs")

    rows, models = [], {}
    wall = time.perf_counter()
    try:
        nets, cells, onnx_runners, torch_runners = {}, {}, {}, {}
        for role in args.models:
            ms.set_seed(0)
            nets[role] = BertForSequenceClassification(bert_preset(MODELS[role]), NUM_LABELS,
                                                       pooled_activation=POOLED_ACTIVATION)
            nets[role].set_train(False)
            cells[role] = LogitsOnly(nets[role])
            cells[role].set_train(False)
            models[role] = {"preset": MODELS[role], "parameters": count_parameters(nets[role]),
                            "head": head_spec(nets[role])}
            if "ONNX" in sides:
                start = time.perf_counter()
                path = export_network(nets[role], "ONNX", os.path.join(workdir, role), batch_size=max(args.batch_sizes),
                                      seq_length=max(args.seq_lengths), verify=False)
                onnx_runners[role] = load_runner(path, threads=args.threads)
                print(f"# exported {role} ONNX (any shape) in {time.perf_counter() - start:.1f} s", flush=True)
            if TORCH in sides:
                start = time.perf_counter()
                torch_runners[role] = TorchRunner(hf_folder(nets[role], workdir, role), args.torch_attention)
                models[role]["torch_attention"] = torch_runners[role].attention
                print(f"# wrote {role} as a Hugging Face folder and loaded it with transformers "
                      f"(attention {torch_runners[role].attention}) in {time.perf_counter() - start:.1f} s", flush=True)
        for seq in args.seq_lengths:
            for batch in args.batch_sizes:
                inputs = {role: example_inputs(net.config, batch, seq, seed=1) for role, net in nets.items()}
                reference = {role: cells[role](*(Tensor(a) for a in inputs[role])).asnumpy() for role in nets}
                runners, paths = {}, []
                for role in nets:
                    for side in sides:
                        if side == "MINDIR":
                            start = time.perf_counter()
                            stem = os.path.join(workdir, f"{role}_b{batch}_s{seq}")
                            path = export_network(nets[role], "MINDIR", stem, batch_size=batch, seq_length=seq,
                                                  verify=False)
                            paths.append(path)
                            runners[(role, side)] = load_runner(path)
                            print(f"# exported {role} MINDIR [{batch}, {seq}] in {time.perf_counter() - start:.1f} s",
                                  flush=True)
                        else:
                            runners[(role, side)] = (onnx_runners if side == "ONNX" else torch_runners)[role]
                first = warm_up(runners, inputs, args.warmup)
                checks = {}
                for (role, side), logits in first.items():
                    gap = np.abs(logits.astype(np.float64) - reference[role].astype(np.float64))
                    checks[(role, side)] = (float(gap.max()), tolerance(side, reference[role]))
                wrong = [f"{role} {side}: max |logits - MindSpore Cell| = {diff:.3g} > {tol:.3g}"
                         for (role, side), (diff, tol) in checks.items() if not diff <= tol]
                if wrong:
                    print(f"error: at batch {batch}, seq {seq} the sides do not compute the same function as the "
                          f"MindSpore network: " + "; ".join(wrong), file=sys.stderr)
                    return 1
                times = time_rounds(runners, inputs, args.repeats, args.pause_ms / 1e3)
                for (role, side), samples in times.items():
                    diff, tol = checks[(role, side)]
                    rows.append({"model": role, "batch": batch, "seq": seq, "side": side,
                                 "median_s": statistics.median(samples), "min_s": min(samples),
                                 "times_s": samples, "max_abs_diff": diff, "tolerance": tol})
                for row in rows[-len(times):]:
                    print(f"{row['model']:8s} {row['side']:6s} batch {batch:3d} seq {seq:4d}: median "
                          f"{row['median_s'] * 1e3:9.1f} ms (min {row['min_s'] * 1e3:9.1f}); max abs diff vs "
                          f"MindSpore {row['max_abs_diff']:.1e}", flush=True)
                del runners
                for path in paths:
                    for leftover in (path, path + ".json"):
                        if os.path.exists(leftover):
                            os.remove(leftover)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    for row in rows:  # the ratio to PyTorch eager at the same model and shape (None for PyTorch itself)
        theirs = next((r for r in rows if (r["model"], r["batch"], r["seq"], r["side"]) ==
                       (row["model"], row["batch"], row["seq"], TORCH)), None)
        row["vs_torch_median"] = theirs["median_s"] / row["median_s"] if theirs and row is not theirs else None
        row["vs_torch_min"] = theirs["min_s"] / row["min_s"] if theirs and row is not theirs else None
    total = time.perf_counter() - wall
    end_load = load_average()
    print(f"\n# load average at end: {' '.join(map(str, end_load or ['n/a']))}; total {total:.0f} s")
    print("# " + ", ".join(f"{role} = {m['preset']} ({m['parameters'] / 1e6:.1f} M parameters)"
                           for role, m in models.items()) + "\n")
    print_tables(rows, args, sides)
    if args.json:
        report = {"command": command, "machine": info, "versions": found, "notes": notes,
                  "settings": {"sides": sides, "repeats": args.repeats, "warmup": args.warmup,
                               "pause_ms": args.pause_ms, "threads": args.threads, "quick": args.quick,
                               "order": "rounds of every side once, rotating by one each round",
                               "torch_attention": args.torch_attention, "num_labels": NUM_LABELS,
                               "pooled_activation": POOLED_ACTIVATION, "weights": "random, ms.set_seed(0)",
                               "inputs": "src.ship.export.example_inputs(config, batch, seq, seed=1)",
                               "reference": "MindSpore Cell (LogitsOnly, eval mode, PyNative) on the same batch"},
                  "models": models, "results": rows, "load_average_end": end_load, "total_s": total}
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
        print(f"\n# wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
