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


def rank_table(path, devices):
    """A rank table in the format hccl_tools.py writes (version 1.0, one server)."""
    path.write_text(json.dumps({
        "version": "1.0", "server_count": "1", "status": "completed",
        "server_list": [{"server_id": "10.0.0.1", "host_nic_ip": "reserve", "device": [
            {"device_id": str(i), "device_ip": f"192.98.{i}.10", "rank_id": str(i)} for i in range(devices)]}]}))
    return path


def test_ascend_launcher_sets_rank_environment_and_passes_arguments(tmp_path):
    folder = fake_bin(tmp_path, ["python"])
    table = rank_table(tmp_path / "hccl_2p.json", 2)
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


def test_ascend_launcher_takes_the_model_zoo_form_and_checks_the_rank_table(tmp_path):
    """bash scripts/run_distributed_gd_ascend.sh DEVICE_NUM EPOCH_SIZE RANK_TABLE_FILE [CONFIG] (DRY_RUN=1 prints
    each rank's environment and command); a table listing another number of devices is refused."""
    script = os.path.join(ROOT, "scripts", "run_distributed_gd_ascend.sh")
    table = rank_table(tmp_path / "hccl_8p.json", 8)
    env = dict(os.environ, DRY_RUN="1", LOG_DIR=str(tmp_path / "logs"))
    proc = subprocess.run(["bash", script, "8", "3", str(table), "gd_config.yaml"], env=env, capture_output=True,
                          text=True, check=True)
    lines = proc.stdout.splitlines()
    assert len(lines) == 8
    for rank, line in enumerate(lines):
        assert line.startswith(f"rank {rank}: DEVICE_ID={rank} RANK_ID={rank} RANK_SIZE=8 RANK_TABLE_FILE={table}")
        assert line.endswith("run_general_distill.py --run.device_target=Ascend --epoch_size=3 --device_num=8 "
                             "--distribute=true --config_path=gd_config.yaml")
    proc = subprocess.run(["bash", script, "4", "3", str(table)], env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "lists 8 devices, but RANK_SIZE/DEVICE_NUM is 4" in proc.stderr
    (tmp_path / "broken.json").write_text("{not json")
    proc = subprocess.run(["bash", script, "2", str(tmp_path / "broken.json")], env=env, capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "not valid JSON" in proc.stderr


def test_gpu_launcher_takes_the_model_zoo_form(tmp_path):
    script = os.path.join(ROOT, "scripts", "run_distributed_gd_gpu.sh")
    env = dict(os.environ, DRY_RUN="1", LOG_DIR=str(tmp_path / "logs"), PYTHON="python3")
    proc = subprocess.run(["bash", script, "8", "3", "/data/gd", "/data/schema.json", "/ckpt/teacher.ckpt",
                           "gd_config.yaml"], env=env, capture_output=True, text=True, check=True)
    assert proc.stdout.startswith("mpirun --allow-run-as-root -n 8 ")
    assert proc.stdout.strip().endswith(
        "python3 run_general_distill.py --run.device_target=GPU --epoch_size=3 --data_dir=/data/gd "
        "--schema_dir=/data/schema.json --load_teacher_ckpt_path=/ckpt/teacher.ckpt --dataset_type=tfrecord "
        "--device_num=8 --distribute=true --config_path=gd_config.yaml")
    proc = subprocess.run(["bash", script, "8", "3", "/data/gd"], env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "DEVICE_NUM EPOCH_SIZE DATA_DIR SCHEMA_DIR TEACHER_CKPT" in proc.stderr


def test_standalone_td_takes_a_config_first_as_the_model_zoo(tmp_path):
    """bash scripts/run_standalone_td.sh td_config/td_config_sst2.yaml: the zoo's YAML name, ours behind it."""
    folder = fake_bin(tmp_path, ["python"])
    record = tmp_path / "calls.jsonl"
    env = dict(os.environ, PATH=f"{folder}:{os.environ['PATH']}", RECORD=str(record))
    script = os.path.join(ROOT, "scripts", "run_standalone_td.sh")
    subprocess.run(["bash", script, "td_config/td_config_sst2.yaml", "--task_name=SST-2"], env=env, check=True)
    subprocess.run(["bash", script, "--config", "td_config/sst2.yaml", "--phase", "finetune"], env=env, check=True)
    assert [c["argv"] for c in records(record)] == [
        "run_task_distill.py --config_path=td_config/td_config_sst2.yaml --task_name=SST-2",
        "run_task_distill.py --config td_config/sst2.yaml --phase finetune"]
    from src.training.zoo_flags import resolve_config_path

    assert resolve_config_path("td_config/td_config_sst2.yaml") == os.path.join(ROOT, "td_config", "sst2.yaml")
    assert resolve_config_path("../../gd_config.yaml") == os.path.join(ROOT, "gd_config.yaml")  # zoo's default


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
                          ("obs://bucket/ckpt", str(tmp_path / "cache" / "checkpoint")),
                          ("obs://bucket/out", str(tmp_path / "out"))]  # an earlier attempt's outputs (resume)
    assert copies[-1] == (str(tmp_path / "out"), "obs://bucket/out")
    assert (tmp_path / "out" / "logs" / "rank_0.log").is_file()
    # Rank 1 (second device of the node) copies nothing in (the first one did) and uploads nothing.
    copies.clear()
    with ModelArtsSync(run, LocalEnv(1, 1, 2), cache_root=str(tmp_path / "cache")):
        pass
    assert copies == []


def test_modelarts_failed_copy_fails_the_waiting_devices_instead_of_hanging(tmp_path, monkeypatch):
    def copy_parallel(src_url, dst_url):
        raise OSError(f"OBS says no: {src_url}")

    fake = types.ModuleType("moxing")
    fake.file = types.SimpleNamespace(copy_parallel=copy_parallel)
    monkeypatch.setitem(sys.modules, "moxing", fake)
    run = RunConfig(enable_modelarts=True, data_url="obs://bucket/data", output_dir=str(tmp_path / "out"))
    cache = str(tmp_path / "cache")
    with pytest.raises(OSError, match="OBS says no"):
        ModelArtsSync(run, LocalEnv(0, 0, 2), cache_root=cache).download()
    with pytest.raises(RuntimeError, match="the node's first device failed to copy the inputs: OSError: OBS says no"):
        ModelArtsSync(run, LocalEnv(1, 1, 2), cache_root=cache).download()


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


def test_plot_metrics_names_runs_apart_by_their_parent_folders():
    import importlib.util  # pylint: disable=import-outside-toplevel

    spec = importlib.util.spec_from_file_location("plot_metrics", os.path.join(ROOT, "scripts", "plot_metrics.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.run_names(["/r/td/s1/phase2/metrics.jsonl", "/r/td_aug/s1/phase2/metrics.jsonl",
                             "/r/labels/s1/student_labels/metrics.jsonl"]) == \
        ["td/s1/phase2", "td_aug/s1/phase2", "labels/s1/student_labels"]
    assert module.run_names(["/r/a/phase1/metrics.jsonl", "/r/a/phase2/metrics.jsonl"]) == ["phase1", "phase2"]


def test_task_distillation_launchers_start_run_task_distill(tmp_path):
    table = rank_table(tmp_path / "hccl_2p.json", 2)
    env = dict(os.environ, DRY_RUN="1", LOG_DIR=str(tmp_path / "logs"), PYTHON="python3")
    proc = subprocess.run(["bash", os.path.join(ROOT, "scripts", "run_distributed_td_ascend.sh"), "2", str(table),
                           "--config", "td_config/sst2.yaml", "--phase", "both"], env=env, capture_output=True,
                          text=True, check=True)
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and all(l.endswith("python3 run_task_distill.py --run.device_target=Ascend --config "
                                              "td_config/sst2.yaml --phase both") for l in lines), lines
    proc = subprocess.run(["bash", os.path.join(ROOT, "scripts", "run_distributed_td_gpu.sh"), "4", "--config",
                           "td_config/sst2.yaml"], env=env, capture_output=True, text=True, check=True)
    assert proc.stdout.strip().endswith("python3 run_task_distill.py --run.device_target=GPU --config "
                                        "td_config/sst2.yaml")
