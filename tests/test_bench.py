"""The benchmark plumbing that turns processes' figures into the published table (bench/machine.py and the
rounds of bench/bench_train_step.py). No timing here: benchmarks print figures, tests check the arithmetic."""
import os
import sys

import pytest

from tests.conftest import ROOT

sys.path.insert(0, os.path.join(ROOT, "bench"))
import bench_train_step  # noqa: E402  pylint: disable=wrong-import-position
import machine  # noqa: E402  pylint: disable=wrong-import-position


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
