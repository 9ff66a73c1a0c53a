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


def test_peak_rss_is_fitted_as_fixed_plus_per_sample_and_the_crossover_batch_follows():
    ours, torch = "MindSpore GRAPH, GELU aot", "PyTorch"
    summary = [{"side": ours, "batch": 8, "maxrss_mb": 1800.0}, {"side": torch, "batch": 8, "maxrss_mb": 1600.0},
               {"side": ours, "batch": 32, "maxrss_mb": 3120.0}, {"side": torch, "batch": 32, "maxrss_mb": 3328.0}]
    model = bench_train_step.memory_model(summary)
    assert model[ours]["per_sample_mb"] == pytest.approx(55.0) and model[ours]["fixed_mb"] == pytest.approx(1360.0)
    assert model[torch]["per_sample_mb"] == pytest.approx(72.0) and model[torch]["fixed_mb"] == pytest.approx(1024.0)
    assert model[ours]["crossover_batch"] == pytest.approx(336.0 / 17.0)  # 1360 + 55 b = 1024 + 72 b
    lines = bench_train_step.memory_lines(model, {"MindSpore": 398, "PyTorch": 223})
    assert lines[0] == f"peak RSS ~ 1360 MB + 55.0 MB per sample: {ours} (at most PyTorch's from batch ~20)"
    assert lines[-1] == "RSS of the import alone: MindSpore 398 MB, PyTorch 223 MB"
    # more memory per sample and more fixed: never at most PyTorch's; one batch size: no line to fit
    worse = [dict(r, maxrss_mb=r["maxrss_mb"] * (2 if r["side"] == ours else 1)) for r in summary]
    assert bench_train_step.memory_model(worse)[ours]["crossover_batch"] is None
    assert bench_train_step.memory_model([r for r in summary if r["batch"] == 8]) == {}


def test_the_import_floor_is_measured_in_a_fresh_process_and_a_failed_import_says_so():
    assert bench_train_step.import_rss_mb(sys.executable, "json") > 0
    with pytest.raises(RuntimeError, match="import no_such_module_here"):
        bench_train_step.import_rss_mb(sys.executable, "no_such_module_here")


def test_an_aot_row_stops_where_the_kernels_do_not_build(monkeypatch):
    from src.infra import aot  # pylint: disable=import-outside-toplevel

    class Args:
        cpu_gelu, layer_norm = "builtin", "aot"

    monkeypatch.setattr(aot, "available", lambda: False)
    with pytest.raises(SystemExit, match="--layer_norm aot: the AOT kernel library did not build"):
        bench_train_step.check_kernels(Args)
    Args.cpu_gelu = "aot"
    with pytest.raises(SystemExit, match="--cpu_gelu and --layer_norm aot"):
        bench_train_step.check_kernels(Args)
    Args.cpu_gelu = Args.layer_norm = "builtin"
    bench_train_step.check_kernels(Args)  # nothing asked of the kernels: no check
    monkeypatch.setattr(aot, "available", lambda: True)
    Args.layer_norm = "aot"
    bench_train_step.check_kernels(Args)


def test_a_round_alternates_the_sides():
    class Args:
        cpu_gelu, views, teacher, student, seq, steps, warmup = "aot,builtin", True, "bert-base", "tinybert4", 128, 5, 2
        torch_python, torch_reference, torch_threads, layer_norm = "/usr/bin/python3", "torch_reference.py", 2, "aot"
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


def breakdown_row(label, pair, ms_by_part, batch=8):
    parts = {part: {"median_ms": value} for part, value in ms_by_part.items()}
    parts["gemm"]["gflops"] = 100.0 / ms_by_part["gemm"]
    return {"label": label, "pair": pair, "batch": batch, "parts": parts}


def test_breakdown_compares_each_part_with_the_pytorch_process_right_after_it():
    ours, torch = "MindSpore GRAPH, GELU aot", "PyTorch"
    parts = lambda teacher, student, update, full, gemm: dict(  # noqa: E731
        teacher_forward=teacher, student_forward_backward=student, update=update, full_step=full, gemm=gemm)
    rows = [breakdown_row(ours, "0-0", parts(800, 150, 50, 1000, 10)),
            breakdown_row(torch, "0-0", parts(400, 300, 100, 800, 5)),     # teacher 0.5x, student 2x, gemm 0.5x
            breakdown_row(ours, "1-0", parts(1000, 100, 50, 1200, 10)),
            breakdown_row(torch, "1-0", parts(600, 300, 100, 1000, 10)),   # teacher 0.6x, student 3x, gemm 1x
            breakdown_row(ours, "2-0", parts(900, 200, 50, 1100, 20)),
            breakdown_row(torch, "2-0", parts(630, 200, 100, 930, 5))]     # teacher 0.7x, student 1x, gemm 0.25x
    summary = {row["part"]: row for row in bench_train_step.summarize_breakdown(rows, [ours, torch])}
    assert sorted(summary) == sorted(bench_train_step.PARTS)
    assert all(row["side"] == ours and row["processes"] == 3 for row in summary.values())
    teacher = summary["teacher_forward"]
    assert teacher["ours_ms"] == 900 and teacher["ours_ms_range"] == [800, 1000]
    assert teacher["torch_ms"] == 600 and teacher["torch_ms_range"] == [400, 630]
    assert teacher["ratio"] == pytest.approx(0.6) and teacher["ratio_range"] == pytest.approx([0.5, 0.7])
    assert teacher["ours_share"] == pytest.approx(900 / 1100) and teacher["torch_share"] == pytest.approx(600 / 1000)
    assert summary["student_forward_backward"]["ratio"] == pytest.approx(2.0)
    assert summary["update"]["ratio"] == pytest.approx(2.0) and summary["full_step"]["ours_share"] == 1.0
    assert summary["gemm"]["ratio"] == pytest.approx(0.5) and summary["gemm"]["ours_gflops"] == 10.0
    assert summary["gemm"]["ratio_range"] == pytest.approx([0.25, 1.0]) and summary["gemm"]["torch_gflops"] == 20.0
    assert not any("share" in key for key in summary["gemm"])
    table = bench_train_step.breakdown_table(list(summary.values()), type("Args", (), dict(
        teacher="bert-base", student="tinybert4", seq=128, rounds=3, steps=5, warmup=2, torch_threads=2)))
    assert "| 8 | (a) teacher forward" in table and "0.60x (0.50-0.70)" in table and "GFLOP/s 10.0 / 20.0" in table
    # ours only: no PyTorch figures, no ratios
    alone = bench_train_step.summarize_breakdown([r for r in rows if r["label"] == ours], [ours])
    assert all(row["ratio"] is None and row["torch_ms"] is None for row in alone)


def test_a_breakdown_round_runs_both_sides_on_the_same_threads():
    class Args:
        cpu_gelu, views, teacher, student, seq, steps, warmup = "aot", True, "bert-base", "tinybert4", 128, 5, 2
        torch_python, torch_reference, torch_threads, breakdown = "/usr/bin/python3", "torch_reference.py", 2, True
        layer_norm = "aot"
    (ours_label, ours), (torch_label, torch) = bench_train_step._commands(Args, 8)  # pylint: disable=W0212
    assert (ours_label, torch_label) == ("MindSpore GRAPH, GELU aot", "PyTorch")
    assert ours[-3:] == ["--breakdown", "--threads", "2"] and torch[-3:] == ["--breakdown", "--threads", "2"]
    assert "--worker" in ours and torch[:3] == ["/usr/bin/python3", bench_train_step.__file__.replace(".pyc", ".py"),
                                                "--torch_worker"]
    assert torch[torch.index("--torch_reference") + 1] == "torch_reference.py"


@pytest.mark.slow
def test_breakdown_times_the_four_parts_on_both_sides(tmp_path):
    """--breakdown at a tiny size (4-layer teacher, batch 2, seq 16, one round): every part timed on both sides on
    the same threads, and our precomputed-teacher loss is the full GD loss. About 45 s on 2 busy cores."""
    needs("torch", HF_HINT)
    reference = os.path.join(os.path.dirname(ROOT), "shared", "bench", "torch_reference.py")
    if not os.path.isfile(reference):
        pytest.skip(f"no PyTorch reference at {reference}")
    out = tmp_path / "breakdown.json"
    command = [sys.executable, os.path.join(ROOT, "bench", "bench_train_step.py"), "--breakdown", "--teacher", "zoo4",
               "--student", "tinybert4", "--batch", "2", "--seq", "16", "--steps", "1", "--warmup", "1", "--rounds",
               "1", "--cpu_gelu", "builtin", "--no_views", "--torch_python", sys.executable, "--torch_threads", "2",
               "--torch_reference", reference, "--json", str(out)]
    env = dict(os.environ, GLOG_v="3", MS_COMPILER_CACHE_ENABLE="0")
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env, check=False)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["mode"] == "breakdown" and report["threads"] == 2
    rows = {row["label"]: row for row in report["rows"]}
    assert sorted(rows) == ["MindSpore GRAPH, GELU builtin, no views", "PyTorch"]
    for row in rows.values():
        assert row["threads"] == 2 and (row["batch"], row["seq"]) == (2, 16)
        for part in bench_train_step.REQUIRED_PARTS:
            assert row["parts"][part]["median_ms"] > 0 and all(t > 0 for t in row["parts"][part]["times_ms"])
        assert row["parts"]["gemm"]["gflops"] > 0 and row["parts"]["gemm"]["shape"] == [32, 768, 3072]
    ours = rows["MindSpore GRAPH, GELU builtin, no views"]
    # the adapter's loss against the precomputed teacher outputs is the full step's loss (same weights: the
    # learning rate is 0 at step 0; loose because the student runs dropout, a new draw in each call)
    assert ours["student_losses"][0] == pytest.approx(ours["losses"][0], rel=0.05)
    assert ours["skipped_updates"] == 0
    summary = {row["part"]: row for row in report["summary"]}
    for part in bench_train_step.REQUIRED_PARTS:
        assert summary[part]["ours_ms"] > 0 and summary[part]["torch_ms"] > 0 and summary[part]["ratio"] > 0
    assert "| 2 | (d) GEMM probe" in proc.stdout
