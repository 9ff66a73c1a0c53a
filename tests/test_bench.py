"""The benchmark plumbing that turns processes' figures into the published table (bench/machine.py, the rounds of
bench/bench_train_step.py, the interleaved calls of bench/bench_latency.py), and bench_latency's --quick mode run
end to end. No figure is checked here: benchmarks print figures, tests check the arithmetic and that the sides
compute the same function."""
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, needs

sys.path.insert(0, os.path.join(ROOT, "bench"))
import bench_latency  # noqa: E402  pylint: disable=wrong-import-position
import bench_train_step  # noqa: E402  pylint: disable=wrong-import-position
import machine  # noqa: E402  pylint: disable=wrong-import-position

HF_HINT = "pip install -r requirements-hf.txt (scripts/setup.sh installs it)"


def test_cpu_info_reads_the_model_and_the_isa_flags_of_the_first_processor(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC 9R14 96-Core Processor\n"
                       "flags\t\t: fpu sse avx2 fma avx512f avx512_bf16 avx512_vnni\n\n"
                       "processor\t: 1\nmodel name\t: other\nflags\t\t: fpu amx_tile amx_bf16\n")
    info = machine.cpu_info(str(cpuinfo))
    assert info["model"] == "AMD EPYC 9R14 96-Core Processor"
    assert info["isa"]["avx512_bf16"] and info["isa"]["avx2"] and not info["isa"]["amx_bf16"]
    assert machine.cpu_info(str(tmp_path / "missing")) == {"model": "unknown",
                                                          "isa": {f: False for f in machine.ISA_FLAGS}}
    lines = machine.lines({"cpu": info, "usable_cpus": 2, "os_cpu_count": 2, "platform": "Linux", "python": "3.11",
                           "env": {}, "mindspore": "2.10.0", "numpy": "1.26.4"})
    assert "ISA: avx2, fma, avx512f, avx512_vnni, avx512_bf16" in lines[1] and "no bf16" not in lines[1]


def row(label, pair, samples, rss, batch=8):
    return {"label": label, "pair": pair, "batch": batch, "samples_per_s": samples,
            "median_step_s": batch / samples, "maxrss_mb": rss}


def test_each_process_is_compared_with_the_pytorch_process_right_after_it():
    aot, builtin, torch = "MindSpore GRAPH, GELU aot", "MindSpore GRAPH, GELU builtin", "PyTorch"
    rows = [row(aot, "0-0", 6.0, 1000), row(torch, "0-0", 4.0, 2000),      # 1.5x
            row(builtin, "0-1", 3.0, 1500), row(torch, "0-1", 3.0, 2000),  # 1.0x (a slow spell for both)
            row(aot, "1-0", 4.0, 1000), row(torch, "1-0", 2.0, 2000),      # 2.0x
            row(builtin, "1-1", 4.0, 1500), row(torch, "1-1", 5.0, 2000),  # 0.8x
            row(aot, "2-0", 5.0, 1100), row(torch, "2-0", 4.0, 2000),      # 1.25x
            row(builtin, "2-1", 4.5, 1500), row(torch, "2-1", 5.0, 2000)]  # 0.9x
    first, second, theirs = bench_train_step.summarize(rows, [aot, builtin, torch])
    assert first["side"] == aot and first["processes"] == 3
    assert first["ratio"] == pytest.approx(1.5) and first["ratio_range"] == pytest.approx([1.25, 2.0])
    assert first["samples_per_s"] == 5.0 and first["samples_per_s_range"] == [4.0, 6.0]
    assert first["rss_ratio"] == pytest.approx(0.5)
    assert second["ratio"] == pytest.approx(0.9) and second["ratio_range"] == pytest.approx([0.8, 1.0])
    assert theirs["ratio"] is None and theirs["processes"] == 6 and theirs["samples_per_s"] == 4.0


def test_a_round_alternates_the_sides():
    class Args:
        cpu_gelu, views, teacher, student, seq, steps, warmup = "aot,builtin", True, "bert-base", "tinybert4", 128, 5, 2
        torch_python, torch_reference, torch_threads = "/usr/bin/python3", "torch_reference.py", 2
    commands = bench_train_step._commands(Args, 8)  # pylint: disable=protected-access
    assert [label for label, _ in commands] == ["MindSpore GRAPH, GELU aot", "PyTorch", "MindSpore GRAPH, GELU builtin",
                                                "PyTorch"]
    assert commands[1][1][-2:] == ["--threads", "2"]  # both sides on the same cores
    Args.torch_python = ""
    assert [label for label, _ in bench_train_step._commands(Args, 8)] == ["MindSpore GRAPH, GELU aot",  # noqa
                                                                              "MindSpore GRAPH, GELU builtin"]


def test_latency_sides_take_turns_call_by_call_and_warm_up_untimed():
    calls = []

    def side(name):
        def call(*inputs):
            calls.append((name, inputs))
            return name
        return call

    keys = [("student", "MINDIR"), ("student", "ONNX"), ("student", "TORCH")]
    runners = {key: side(key[1]) for key in keys}
    inputs = {"student": ("ids", "types", "mask")}
    first = bench_latency.warm_up(runners, inputs, 2)
    assert first == {key: key[1] for key in keys} and len(calls) == 6
    calls.clear()
    times = bench_latency.time_rounds(runners, inputs, 6, 0.0)
    order = [name for name, _ in calls]
    assert order[:9] == ["MINDIR", "ONNX", "TORCH", "ONNX", "TORCH", "MINDIR", "TORCH", "MINDIR", "ONNX"]
    assert all(a != b for a, b in zip(order, order[1:]))  # no side twice in a row, across rounds too
    assert all(inputs_ == inputs["student"] for _, inputs_ in calls)
    assert {key: len(t) for key, t in times.items()} == {key: 6 for key in keys}
    assert all(t >= 0 for samples in times.values() for t in samples)


@pytest.mark.slow
def test_latency_quick_mode_times_mindir_onnx_and_pytorch_on_the_same_function(tmp_path):
    """The bench's --quick mode, student at [1, 16]: every side timed, PyTorch eager (transformers on the folder
    src/ship/hf.py wrote) gives MindSpore's logits, every figure in the JSON. Under a minute."""
    needs("torch", HF_HINT)
    needs("transformers", HF_HINT)
    out = tmp_path / "latency.json"
    command = [sys.executable, os.path.join(ROOT, "bench", "bench_latency.py"), "--quick", "--models", "student",
               "--batch_sizes", "1", "--seq_lengths", "16", "--formats", "MINDIR,ONNX,TORCH", "--json", str(out)]
    env = dict(os.environ, GLOG_v="3", MS_COMPILER_CACHE_ENABLE="0")
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env, check=False)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    report = json.loads(out.read_text(encoding="utf-8"))
    rows = {row["side"]: row for row in report["results"]}
    assert sorted(rows) == ["MINDIR", "ONNX", "TORCH"]
    for row in rows.values():
        assert (row["model"], row["batch"], row["seq"]) == ("student", 1, 16)
        assert len(row["times_s"]) == report["settings"]["repeats"] == 5
        assert min(row["times_s"]) > 0 and row["min_s"] == min(row["times_s"]) and row["median_s"] > 0
        assert row["max_abs_diff"] <= row["tolerance"]
    assert rows["TORCH"]["max_abs_diff"] < 1e-4 and rows["ONNX"]["max_abs_diff"] < 1e-4
    assert rows["MINDIR"]["max_abs_diff"] < 1e-5
    assert rows["MINDIR"]["vs_torch_median"] == pytest.approx(rows["TORCH"]["median_s"] / rows["MINDIR"]["median_s"])
    assert rows["TORCH"]["vs_torch_median"] is None
    assert report["models"]["student"]["head"] == {"type": "sequence_classification", "num_labels": 2,
                                                   "pooled_activation": "none"}
    assert {"mindspore", "onnxruntime", "torch", "transformers"} <= set(report["versions"])
    assert report["machine"]["pytorch"]["threads"] == report["settings"]["threads"]  # torch on the same threads
    assert "| student | 1 | 16 | ONNX |" in proc.stdout and "vs PyTorch eager" in proc.stdout
