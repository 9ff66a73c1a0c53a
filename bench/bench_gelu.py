"""Exact GELU on MindSpore CPU: MindSpore's GeLU vs the project's AOT kernel (src/infra/aot.py), speed and accuracy.

    python bench/bench_gelu.py [--repeats 9]

For float32 tensors of feed-forward shape ([8, 128, 3072] = BERT-base at batch 8, seq 128, and the TinyBERT-4
width 1200), GRAPH_MODE, prints the median (min) time of the forward and of forward+backward (value_and_grad of
sum(gelu(x) * dy)), with inputs of BERT-like spread (standard normal x 3) and small ones (x 0.1, what random
initial weights give), because MindSpore's kernel is value-dependent. Then the accuracy of both against float64
erf GELU and its derivative. Prints the machine and the command first.
"""
import argparse
import math
import os
import platform
import statistics
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=9, help="timed calls per cell (default 9, after 2 warm-up)")
    args = parser.parse_args()
    import mindspore as ms  # pylint: disable=import-outside-toplevel
    from mindspore import Tensor, nn  # pylint: disable=import-outside-toplevel

    from src.infra.aot import GeluAOT  # pylint: disable=import-outside-toplevel

    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}, MindSpore {ms.__version__}; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"command: python bench/bench_gelu.py {' '.join(sys.argv[1:])}\n", flush=True)

    class Weighted(nn.Cell):
        def __init__(self, act):
            super().__init__()
            self.act = act

        def construct(self, x, dy):
            return (self.act(x) * dy).sum()

    kernels = {"MindSpore GeLU": nn.GELU(approximate=False), "AOT kernel": GeluAOT(strict=True)}
    grads = {name: ms.jit(ms.value_and_grad(Weighted(k))) for name, k in kernels.items()}

    def timed(fn, *inputs):
        times = []
        for i in range(2 + args.repeats):
            start = time.perf_counter()
            out = fn(*inputs)
            (out[1] if isinstance(out, tuple) else out).asnumpy()  # wait for the result
            if i >= 2:
                times.append((time.perf_counter() - start) * 1e3)
        return f"{statistics.median(times):.1f} ({min(times):.1f})"

    print("| shape | inputs | pass | MindSpore GeLU ms, median (min) | AOT kernel ms, median (min) |")
    print("|---|---|---|---:|---:|")
    rng = np.random.default_rng(0)
    for shape in ((8, 128, 3072), (8, 128, 1200)):
        for scale in (3.0, 0.1):
            x = Tensor((rng.standard_normal(shape) * scale).astype(np.float32))
            dy = Tensor(rng.standard_normal(shape).astype(np.float32))
            fwd = [timed(k, x) for k in kernels.values()]
            both = [timed(g, x, dy) for g in grads.values()]
            label = f"normal x {scale:g}"
            print(f"| {list(shape)} | {label} | forward | {fwd[0]} | {fwd[1]} |")
            print(f"| {list(shape)} | {label} | forward+backward | {both[0]} | {both[1]} |", flush=True)

    x64 = np.concatenate([rng.standard_normal(1_000_000) * 3, np.linspace(-10, 10, 200_001)])
    x32 = x64.astype(np.float32)
    xs = x32.astype(np.float64)
    phi = 0.5 * (1.0 + np.vectorize(math.erf)(xs / math.sqrt(2.0)))
    want, want_grad = xs * phi, phi + xs * np.exp(-0.5 * xs * xs) / math.sqrt(2.0 * math.pi)
    ones = Tensor(np.ones_like(x32))
    print("\n| kernel | max abs error of gelu vs float64 | max abs error of its derivative |")
    print("|---|---:|---:|")
    for name, kernel in kernels.items():
        got = kernel(Tensor(x32)).asnumpy().astype(np.float64)
        grad = ms.grad(Weighted(kernel))(Tensor(x32), ones).asnumpy().astype(np.float64)
        print(f"| {name} | {np.abs(got - want).max():.2e} | {np.abs(grad - want_grad).max():.2e} |")
    print(f"\n({len(x32):,} points: 1,000,000 standard normal x 3 and 200,001 evenly spaced in [-10, 10]; "
          f"load average now {os.getloadavg()[0]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
