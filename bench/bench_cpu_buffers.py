"""Which MindSpore CPU graph kernels keep their output buffers: the probe behind the attention memory fix.

    python bench/bench_cpu_buffers.py

Each case compiles one GRAPH_MODE graph that applies the same op ten times in a chain to a 64 MB float32 tensor
[64, 16, 128, 128], runs it twice, and prints how much the process's peak RSS grew. Kernels whose buffers the
runtime reuses grow it by a few tens of MB; kernels whose buffers it keeps grow it by about ten outputs. Every
case runs in its own process (peak RSS is per process). Prints a table, then `RESULT {json}`.
"""
import json
import os
import resource
import subprocess
import sys

CASES = {
    "add (same shape)": "x = x + 1.0",
    "mul by a [64,1,1,128] tensor (broadcast)": "x = x * 0.5 + self.m",
    "ops.transpose (0,2,1,3)": "x = ops.transpose(x, (0, 2, 1, 3))",
    "mint.permute + add (view)": "x = ms.mint.permute(x, (0, 2, 1, 3)) + 1.0",
    "SwapAxes12 AOT kernel": "x = self.swap(x)",
    "softmax": "x = ops.softmax(x, -1)",
}


def worker(case):
    import numpy as np  # pylint: disable=import-outside-toplevel
    import mindspore as ms  # pylint: disable=import-outside-toplevel
    from mindspore import nn, ops  # pylint: disable=import-outside-toplevel,unused-import

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from src.infra.aot import swap_axes12_op  # pylint: disable=import-outside-toplevel

    ms.set_device("CPU")
    ms.set_context(mode=ms.GRAPH_MODE)
    source = CASES[case]
    body = "\n".join(["class Chain(nn.Cell):", "    def __init__(self):", "        super().__init__()",
                      "        self.swap = swap_axes12_op()",
                      "        self.m = ms.Tensor(np.random.rand(64, 1, 1, 128).astype(np.float32))",
                      "    def construct(self, x):", "        for _ in range(10):", f"            {source}",
                      "        return x.sum()"])
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"bench_cpu_buffers_{os.getpid()}.py")
    with open(path, "w", encoding="utf-8") as f:  # graph mode parses construct from a source file
        f.write("import numpy as np\nimport mindspore as ms\nfrom mindspore import nn, ops\n"
                "from src.infra.aot import swap_axes12_op\n" + body + "\n")
    import importlib.util  # pylint: disable=import-outside-toplevel

    spec = importlib.util.spec_from_file_location("chain", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["chain"] = module  # the graph parser imports the cell's module by name
    spec.loader.exec_module(module)
    x = ms.Tensor(np.random.rand(64, 16, 128, 128).astype(np.float32))
    net = module.Chain()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for _ in range(2):
        net(x).asnumpy()
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
    os.remove(path)
    print("RESULT " + json.dumps({"case": case, "op": source, "peak_rss_growth_mb": round(grown)}), flush=True)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker(sys.argv[2])
        return 0
    print(f"command: python bench/bench_cpu_buffers.py; {os.cpu_count()} CPUs", flush=True)
    rows = []
    for case in CASES:
        done = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", case], capture_output=True,
                              text=True, check=False, env=dict(os.environ, GLOG_v="3"))
        lines = [l for l in done.stdout.splitlines() if l.startswith("RESULT ")]
        if done.returncode or not lines:
            sys.exit(f"bench: case {case!r} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
        rows.append(json.loads(lines[-1][len("RESULT "):]))
        print(lines[-1], flush=True)
    print("\nten chained ops on a 64 MB float32 tensor, GRAPH_MODE, CPU\n")
    print("| op | peak RSS growth |")
    print("|---|---:|")
    for row in rows:
        print(f"| {row['case']} | {row['peak_rss_growth_mb']} MB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
