"""The optimizer update on CPU: MindSpore's graph (clip + AdamWeightDecay kernel + loss scale) vs run.cpu_host_update.

    python bench/bench_update.py [--steps 20]

Builds the SST-2 phase-2 student of td_config/sst2_minilm.yaml (3 x 384, 17.4 M parameters in 57 tensors, 11.7 M
of them the word embeddings), computes one batch's gradients (batch 32 x 32 tokens), then times the update that
follows every training step, both ways, on the same gradients: `graph` = TrainStep's compiled update (global-norm
clip as one multiply per tensor, nn.AdamWeightDecay's fused CPU kernel, DynamicLossScaler), `host` =
src/training/step.py HostUpdate (the same float32 formulas in numpy on the parameters' memory, two threads, 1 MB chunks).
Also times the whole step (gradients + update) both ways. Prints a table, then `RESULT {json}`.
"""
import argparse
import json
import os
import platform
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="timed calls of each (default 20)")
    args = parser.parse_args()
    import numpy as np  # pylint: disable=import-outside-toplevel
    import mindspore as ms  # pylint: disable=import-outside-toplevel

    from src.infra.backend import Backend  # pylint: disable=import-outside-toplevel
    from src.config import load_config  # pylint: disable=import-outside-toplevel
    from src.distill.loss import DistillLoss  # pylint: disable=import-outside-toplevel
    from src.model.heads import BertForSequenceClassification  # pylint: disable=import-outside-toplevel
    from src.training.host_update import HostUpdate  # pylint: disable=import-outside-toplevel
    from src.training.step import TrainStep  # pylint: disable=import-outside-toplevel

    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE)
    ms.set_seed(1)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, MindSpore "
          f"{ms.__version__}; load average {os.getloadavg()[0]:.2f}\ncommand: python bench/bench_update.py "
          f"{' '.join(sys.argv[1:])}", flush=True)
    cfg = load_config(os.path.join(ROOT, "td_config", "sst2_minilm.yaml"), kind="td")
    student = BertForSequenceClassification(cfg.student, cfg.task.num_labels, cfg.task.pooled_activation,
                                            backend=Backend(gelu="aot", heads="swap"))
    loss_net = DistillLoss(student, None, "prediction", cfg.distill, stored_teacher_logits=True)
    step = TrainStep(loss_net, loss_net.optimizer_params(), cfg.td.phase2, 10 ** 6, graph=True, host_update=False)
    host = HostUpdate(step.optimizer, step.scaler, step.stage, step.total_steps)
    rng = np.random.default_rng(0)
    batch = [ms.Tensor(rng.integers(1, cfg.student.vocab_size, (32, 32)).astype(np.int32)),
             ms.Tensor(np.zeros((32, 32), np.int32)), ms.Tensor(np.ones((32, 32), np.int32)),
             ms.Tensor(rng.integers(0, cfg.task.num_labels, (32,)).astype(np.int32)),
             ms.Tensor(rng.standard_normal((32, cfg.task.num_labels)).astype(np.float32))]
    _, grads = step.gradients(*batch)
    params = sum(int(np.prod(p.shape)) for p in step.optimizer.parameters)
    rows = []

    def timed(name, fn):
        fn()  # compile / warm up
        step.optimizer.parameters[0].asnumpy()
        start = time.perf_counter()
        for _ in range(args.steps):
            out = fn()
        float(out[1])  # waits for the last call
        row = {"what": name, "ms": round((time.perf_counter() - start) / args.steps * 1000, 1)}
        rows.append(row)
        print("RESULT " + json.dumps(row), flush=True)

    timed("update: graph", lambda: step.graph_update(*grads))
    timed("update: host", lambda: host(*grads))

    def whole(update):
        def run():
            _, g = step.gradients(*batch)
            return update(*g)
        return run

    timed("step: gradients + graph update", whole(step.graph_update))
    timed("step: gradients + host update", whole(host))
    print(f"\nSST-2 phase-2 student, {params / 1e6:.1f} M parameters in {len(step.optimizer.parameters)} tensors, "
          f"batch 32 x 32 tokens, GRAPH_MODE, mean of {args.steps} calls\n")
    print("| what | ms per call |")
    print("|---|---:|")
    for row in rows:
        print(f"| {row['what']} | {row['ms']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
