"""What one more sequence length costs in GRAPH_MODE: the compile behind the end-to-end figures.

    python bench/bench_compile.py

Builds the SST-2 phase-2 student of td_config/sst2_minilm.yaml (3 x 384, random weights, training kernels) and,
each in its own process, calls three graphs on batches of 32 x 16, 32 x 32 and 32 x 64 tokens:

  step      the training step as CPU training runs it (src/training/step.py TrainStep): the loss and gradients graph,
            compiled per length, then the update on the host (run.cpu_host_update: nothing to compile)
  one_graph the loss, gradients and the graph update (global-norm clip, AdamWeightDecay, loss scale) as one
            graph: what TrainStep compiled for every length before this project split it
  dynamic   the whole step declared with a dynamic sequence dimension (Cell.set_inputs(Tensor(shape=[32, None])),
            one compile for every length), reported as an error if MindSpore cannot compile it

For each length it prints the first call (compile + first run) and the mean of the next steps. The first length
also pays one-off costs (kernel library load, memory pool). Prints a table, then `RESULT {json}` lines.
"""
import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LENGTHS = (16, 32, 64)
CASES = ("step", "one_graph", "dynamic")


def first_tensor(value):
    while isinstance(value, (tuple, list)):
        value = value[0]
    return value


def worker(case, steps):
    import numpy as np  # pylint: disable=import-outside-toplevel
    import mindspore as ms  # pylint: disable=import-outside-toplevel
    from mindspore import nn  # pylint: disable=import-outside-toplevel

    sys.path.insert(0, ROOT)
    from src.infra.backend import Backend  # pylint: disable=import-outside-toplevel
    from src.config import load_config  # pylint: disable=import-outside-toplevel
    from src.distill.loss import DistillLoss  # pylint: disable=import-outside-toplevel
    from src.model.heads import BertForSequenceClassification  # pylint: disable=import-outside-toplevel
    from src.training.step import TrainStep  # pylint: disable=import-outside-toplevel

    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_seed(1)
    cfg = load_config(os.path.join(ROOT, "td_config", "sst2_minilm.yaml"), kind="td")
    student = BertForSequenceClassification(cfg.student, cfg.task.num_labels, cfg.task.pooled_activation,
                                            backend=Backend(gelu="aot", heads="swap"))
    loss_net = DistillLoss(student, None, "prediction", cfg.distill, stored_teacher_logits=True)
    train = TrainStep(loss_net, loss_net.optimizer_params(), cfg.td.phase2, 1000, graph=(case == "step"),
                      host_update=case == "step")

    def whole_step(*batch):
        outputs, grads = train.gradients_fn(*batch)
        return (outputs,) + train.update_fn(*grads)

    if case == "step":
        call = train.step
    elif case == "one_graph":
        call = ms.jit(whole_step)
    else:
        class Step(nn.Cell):
            def construct(self, *batch):
                return whole_step(*batch)

        call = Step()
        spec = ms.Tensor(shape=[32, None], dtype=ms.int32)
        call.set_inputs(spec, spec, spec, ms.Tensor(shape=[32], dtype=ms.int32),
                        ms.Tensor(shape=[32, cfg.task.num_labels], dtype=ms.float32))
    rng = np.random.default_rng(0)
    for length in LENGTHS:
        batch = [ms.Tensor(rng.integers(1, cfg.student.vocab_size, (32, length)).astype(np.int32)),
                 ms.Tensor(np.zeros((32, length), np.int32)), ms.Tensor(np.ones((32, length), np.int32)),
                 ms.Tensor(rng.integers(0, cfg.task.num_labels, (32,)).astype(np.int32)),
                 ms.Tensor(rng.standard_normal((32, cfg.task.num_labels)).astype(np.float32))]
        row = {"case": case, "length": length}
        try:
            start = time.time()
            out = call(*batch)
            first_tensor(out).asnumpy()  # waits for the graph
            row["first_call_s"] = round(time.time() - start, 2)
            start = time.time()
            for _ in range(steps):
                out = call(*batch)
            first_tensor(out).asnumpy()
            row["step_ms"] = round((time.time() - start) / steps * 1000, 1)
            del out
        except Exception as exc:  # pylint: disable=broad-except  # reported, not hidden
            row["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:160]}"
            print("RESULT " + json.dumps(row), flush=True)
            return
        print("RESULT " + json.dumps(row), flush=True)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], int(sys.argv[3]))
        return 0
    steps = int(os.environ.get("BENCH_STEPS", "5"))
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
          f"load average {os.getloadavg()[0]:.2f}\ncommand: python bench/bench_compile.py", flush=True)
    rows = []
    for case in CASES:
        done = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", case, str(steps)], cwd=ROOT,
                              capture_output=True, text=True, check=False, env=dict(os.environ, GLOG_v="3"))
        found = [json.loads(line[7:]) for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if not found:
            found = [{"case": case, "length": None, "error": f"exit {done.returncode}: {done.stderr.strip()[-300:]}"}]
        for row in found:
            print("RESULT " + json.dumps(row), flush=True)
        rows += found
    print(f"\nSST-2 phase-2 student, batch 32, GRAPH_MODE, {steps} timed steps after the first call\n")
    print("| graph | tokens | first call s | step ms |")
    print("|---|---:|---:|---:|")
    for row in rows:
        if "error" in row:
            print(f"| {row['case']} | {row['length'] or ''} | failed: {row['error']} | |")
        else:
            print(f"| {row['case']} | {row['length']} | {row['first_call_s']:.2f} | {row['step_ms']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
