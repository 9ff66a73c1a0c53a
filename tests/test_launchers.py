"""Launch plumbing that cannot run for real here: the Ascend / GPU shell launchers (with fake python and
mpirun on PATH that record what they receive), rank detection, the ModelArts adapter with a fake moxing,
and the metrics plot."""
import json
import os
import subprocess
import sys
import types

import pytest

from src.config import RunConfig
from src.infra.modelarts import LocalEnv, ModelArtsSync, import_moxing
from src.infra.runtime import launched_distributed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORDER = """#!/usr/bin/env bash
# Records its arguments and the rank environment, one JSON line per call.
printf '{"argv": "%s", "DEVICE_ID": "%s", "RANK_ID": "%s", "RANK_SIZE": "%s", "RANK_TABLE_FILE": "%s"}\\n' \
  "$*" "${DEVICE_ID:-}" "${RANK_ID:-}" "${RANK_SIZE:-}" "${RANK_TABLE_FILE:-}" >> "$RECORD"
"""


def fake_bin(tmp_path, names):
    folder = tmp_path / "bin"
    folder.mkdir()
    for name in names:
        (folder / name).write_text(RECORDER)
        (folder / name).chmod(0o755)
    return folder


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_ascend_launcher_sets_rank_environment_and_passes_arguments(tmp_path):
    folder = fake_bin(tmp_path, ["python"])
    table = tmp_path / "hccl_2p.json"
    table.write_text("{}")
    record = tmp_path / "calls.jsonl"
    env = dict(os.environ, PATH=f"{folder}:{os.environ['PATH']}", RECORD=str(record), LOG_DIR=str(tmp_path / "logs"))
    subprocess.run(["bash", os.path.join(ROOT, "scripts", "run_distributed_gd_ascend.sh"), "2", str(table),
                    "--config", "gd_config.yaml", "--gd.epochs=1"], env=env, check=True, capture_output=True)
    calls = sorted(records(record), key=lambda c: c["RANK_ID"])
    assert [(c["DEVICE_ID"], c["RANK_ID"], c["RANK_SIZE"]) for c in calls] == [("0", "0", "2"), ("1", "1", "2")]
    for call in calls:
        assert call["RANK_TABLE_FILE"] == str(table)
        assert call["argv"] == "run_general_distill.py --run.device_target=Ascend --config gd_config.yaml --gd.epochs=1"
    assert sorted(os.listdir(tmp_path / "logs")) == ["rank_0.log", "rank_1.log"]


def test_ascend_launcher_usage_and_missing_rank_table(tmp_path):
    script = os.path.join(ROOT, "scripts", "run_distributed_gd_ascend.sh")
    proc = subprocess.run(["bash", script], capture_output=True, text=True)
    assert proc.returncode == 2 and "RANK_SIZE RANK_TABLE_FILE" in proc.stderr
    proc = subprocess.run(["bash", script, "2", str(tmp_path / "missing.json")], capture_output=True, text=True)
    assert proc.returncode == 2 and "rank table not found" in proc.stderr


def test_gpu_launcher_uses_mpirun(tmp_path):
    folder = fake_bin(tmp_path, ["mpirun"])
    record = tmp_path / "calls.jsonl"
    env = dict(os.environ, PATH=f"{folder}:{os.environ['PATH']}", RECORD=str(record), LOG_DIR=str(tmp_path / "logs"),
               PYTHON="python3")
    subprocess.run(["bash", os.path.join(ROOT, "scripts", "run_distributed_gd_gpu.sh"), "4", "--config", "x.yaml"],
                   env=env, check=True, capture_output=True)
    (call,) = records(record)
    assert call["argv"].startswith("--allow-run-as-root -n 4 ")
    assert call["argv"].endswith("python3 run_general_distill.py --run.device_target=GPU --config x.yaml")


@pytest.mark.parametrize("env,expected", [
    ({}, False),
    ({"MS_ROLE": "MS_WORKER", "MS_WORKER_NUM": "2"}, True),
    ({"MS_ROLE": "MS_SCHED", "MS_WORKER_NUM": "2"}, True),
    ({"MS_ROLE": "MS_WORKER", "MS_WORKER_NUM": "1"}, False),
    ({"RANK_TABLE_FILE": "t.json", "RANK_SIZE": "8"}, True),
    ({"RANK_TABLE_FILE": "t.json", "RANK_SIZE": "1"}, False),
    ({"OMPI_COMM_WORLD_SIZE": "4"}, True),
])
def test_rank_detection(env, expected):
    assert launched_distributed(env) is expected


def test_local_env_reads_device_and_rank():
    assert LocalEnv.from_environ({"DEVICE_ID": "3", "RANK_ID": "5", "RANK_SIZE": "8"}) == LocalEnv(3, 5, 8)
    assert LocalEnv.from_environ({}) == LocalEnv(0, 0, 1)
    with pytest.raises(ValueError, match="RANK_SIZE='eight': expected an integer"):
        LocalEnv.from_environ({"RANK_SIZE": "eight"})


def test_modelarts_adapter_with_a_fake_moxing(tmp_path, monkeypatch):
    copies = []
    fake = types.ModuleType("moxing")
    fake.file = types.SimpleNamespace(copy_parallel=lambda src_url, dst_url: copies.append((src_url, dst_url)))
    monkeypatch.setitem(sys.modules, "moxing", fake)
    run = RunConfig(enable_modelarts=True, data_url="obs://bucket/data", checkpoint_url="obs://bucket/ckpt",
                    train_url="obs://bucket/out", output_dir=str(tmp_path / "out"))
    with ModelArtsSync(run, LocalEnv(0, 0, 1), cache_root=str(tmp_path / "cache")):
        assert copies == [("obs://bucket/data", str(tmp_path / "cache" / "data")),
                          ("obs://bucket/ckpt", str(tmp_path / "cache" / "checkpoint"))]
    assert copies[-1] == (str(tmp_path / "out"), "obs://bucket/out")
    # Rank 1 uploads nothing.
    copies.clear()
    with ModelArtsSync(run, LocalEnv(1, 1, 2), cache_root=str(tmp_path / "cache")):
        pass
    assert copies == []


def test_modelarts_disabled_never_imports_moxing(monkeypatch):
    monkeypatch.setitem(sys.modules, "moxing", None)  # importing it would raise
    with ModelArtsSync(RunConfig()) as sync:
        assert sync.mox is None
    with pytest.raises(RuntimeError, match="exists only inside ModelArts training images. Do not `pip install moxing`"):
        import_moxing()


def test_plot_metrics(tmp_path):
    run_dir = tmp_path / "phase2"
    run_dir.mkdir()
    rows = [{"type": "train", "step": s, "loss": 1.0 / s, "prediction": 1.0 / s} for s in (10, 20, 30)]
    rows += [{"type": "eval", "step": 30, "metric": "accuracy", "score": 0.8, "sets": {"dev": {"score": 0.8}}}]
    (run_dir / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = tmp_path / "curves.png"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "plot_metrics.py"), str(run_dir),
                           "--output", str(out)], capture_output=True, text=True, check=True)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    assert "wrote" in proc.stdout
    (run_dir / "metrics.jsonl").write_text('{"type": "train"}\nnot json\n')
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "plot_metrics.py"), str(run_dir),
                           "--output", str(out)], capture_output=True, text=True)
    assert proc.returncode != 0 and "metrics.jsonl:2: not a JSON object" in proc.stderr
