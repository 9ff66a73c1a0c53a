"""run_general_distill.py and run_task_distill.py end to end on tiny models and real data slices (GRAPH mode):
run directories and manifests, exact resumption after a crash, skipping finished stages, phase 2 starting from
the phase-1 checkpoint named in the manifest, evaluation on every dev example, and a 2-worker msrun GD run."""
import hashlib
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import yaml

from src.model import checkpoint as ckpt
from src.config import BertConfig
from src.model.bert import BertModel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CRASH_EXIT_CODE = 75
CRASH_HELPER = os.path.join(ROOT, "tests", "helpers", "crash")


def crash_at(step):
    """Environment of a run that dies (exit CRASH_EXIT_CODE, nothing saved) when it asks for optimizer step `step`."""
    return {"CRASH_AT_STEP": str(step), "CRASH_EXIT_CODE": str(CRASH_EXIT_CODE),
            "PYTHONPATH": CRASH_HELPER + os.pathsep + ROOT}
TINY = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=48,
            max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
STUDENT = dict(TINY, num_hidden_layers=2, hidden_size=24, intermediate_size=40)


def run(args, cwd, check=True, timeout=900, env_extra=None):
    # msrun starts workers with `python` from PATH: make that this interpreter.
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    env = dict(os.environ, PYTHONPATH=ROOT, GLOG_v="3", MS_COMPILER_CACHE_ENABLE="0", PATH=path)
    env.update(env_extra or {})
    proc = subprocess.run([sys.executable] + args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\n"
                             f"stderr:\n{proc.stderr[-5000:]}")
    return proc


def weights(path):
    return ckpt.read_checkpoint(path)


@pytest.fixture(scope="module")
def gd_setup(tmp_path_factory, shared_data):
    """A tiny BERT teacher checkpoint and GD records made from real text by create_pretraining_data.py."""
    root = tmp_path_factory.mktemp("gd")
    import mindspore as ms

    ms.set_seed(11)
    teacher = BertModel(BertConfig(**TINY))
    ckpt.save_model(teacher, str(root / "teacher.ckpt"))
    run([os.path.join(ROOT, "scripts", "create_pretraining_data.py"),
         "--input_file", os.path.join(shared_data, "corpus", "en", "bert_sample_text.txt"),
         "--output_file", str(root / "gd.mindrecord"),
         "--vocab_file", os.path.join(shared_data, "vocab", "bert-base-uncased-vocab.txt"),
         "--max_seq_length", "32", "--dupe_factor", "2", "--random_seed", "3"], cwd=root)
    return root


def gd_config(root, out, **gd):
    cfg = {
        # aot, not auto: one worker must compute like two, and data-parallel auto is always aot
        "run": {"output_dir": str(out), "seed": 5, "data_seed": 6, "mode": "graph", "cpu_gelu": "aot"},
        "data": {"train_files": [str(root / "gd.mindrecord")], "seq_length": 32},
        "checkpoint": {"teacher": str(root / "teacher.ckpt")},
        "teacher": TINY, "student": STUDENT,
        "gd": {"batch_size": 8, "epochs": 2, "lr": 1e-3, "warmup_ratio": 0.1, "log_steps": 2, "save_steps": 3,
               **gd},
    }
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.mark.slow
def test_gd_runs_resumes_exactly_and_skips_when_finished(gd_setup, tmp_path):
    root = gd_setup
    straight = tmp_path / "straight"
    run([os.path.join(ROOT, "run_general_distill.py"), "--config", gd_config(root, straight), "--no_progress"],
        cwd=tmp_path)
    manifest = json.loads((straight / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["step"] == manifest["total_steps"] > 6
    assert manifest["started_from"]["teacher"]["sha256"] == ckpt.read_metadata(str(root / "teacher.ckpt"))["sha256"]
    assert manifest["layer_map"] == [[0, 0], [1, 2], [2, 4]]
    rows = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r["type"] == "train"]
    assert losses[-1] < losses[0] and all(r["attention"] > 0 and r["hidden"] > 0 for r in rows)
    assert {"lr", "loss_scale", "overflow_steps", "samples_per_s", "eta_s", "embedding"} <= set(rows[0])
    student = ckpt.load_model(str(straight / "last.ckpt"))  # a plain backbone checkpoint, loads strictly
    assert isinstance(student, BertModel) and student.config.num_hidden_layers == 2
    assert set(weights(str(straight / "fit_dense.ckpt"))) == {"layers.0.weight", "layers.0.bias"}

    # Crash mid-epoch (dies when asking for step 5, after 4 steps; state saved at step 3: saves are synchronous here,
    # which changes no result), then re-run the same command: it resumes.
    crashed = tmp_path / "crashed"
    config = gd_config(root, crashed)
    proc = run([os.path.join(ROOT, "run_general_distill.py"), "--config", config, "--no_progress",
                "--run.async_checkpoints=false"], cwd=tmp_path, check=False, env_extra=crash_at(5))
    assert proc.returncode == CRASH_EXIT_CODE, proc.stderr[-2000:]
    assert json.loads((crashed / "manifest.json").read_text())["step"] == 3
    proc = run([os.path.join(ROOT, "run_general_distill.py"), "--config", config, "--no_progress"], cwd=tmp_path)
    assert "resuming at step 3" in proc.stderr
    a, b = weights(str(straight / "state.ckpt")), weights(str(crashed / "state.ckpt"))
    assert set(a) == set(b)
    for name in a:  # weights, fit_dense, Adam moments, optimizer step, loss scale: all identical
        np.testing.assert_allclose(b[name], a[name], rtol=1e-5, atol=1e-7, err_msg=name)

    # Finished: the same command returns at once; a changed config is refused with the differing key.
    proc = run([os.path.join(ROOT, "run_general_distill.py"), "--config", config, "--no_progress"], cwd=tmp_path)
    assert "finished earlier" in proc.stderr
    proc = run([os.path.join(ROOT, "run_general_distill.py"), "--config", config, "--gd.lr=0.01"], cwd=tmp_path,
               check=False)
    assert proc.returncode != 0 and "gd.lr: 0.001 -> 0.01" in proc.stderr


@pytest.mark.slow
def test_gd_killed_during_a_save_resumes_from_the_previous_state_and_lists_every_step_once(gd_setup, tmp_path):
    """kill -9 while the second state.ckpt is being written (its temporary file complete, not yet renamed): the
    re-run removes the temporary, resumes from the first save, and metrics.jsonl lists each step once, in order."""
    root = gd_setup
    run_dir = tmp_path / "killed"
    config = gd_config(root, run_dir)
    proc = run([os.path.join(ROOT, "run_general_distill.py"), "--config", config, "--no_progress",
                "--run.async_checkpoints=false"], cwd=tmp_path, check=False,
               env_extra={"CRASH_IN_SAVE": "2", "CRASH_EXIT_CODE": str(CRASH_EXIT_CODE),
                          "PYTHONPATH": CRASH_HELPER + os.pathsep + ROOT})
    assert proc.returncode == CRASH_EXIT_CODE, proc.stderr[-2000:]
    left = [p for p in run_dir.rglob("*") if ".tmp-" in p.name]
    assert left and all(p.name.startswith("state.ckpt") for p in left), left
    assert json.loads((run_dir / "manifest.json").read_text())["step"] == 3
    before = [r["step"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
              if r["type"] == "train"]
    assert max(before) > 3  # logged by the killed run after its last saved state: done again on resume

    proc = run([os.path.join(ROOT, "run_general_distill.py"), "--config", config, "--no_progress"], cwd=tmp_path)
    assert "resuming at step 3" in proc.stderr
    assert "left by an interrupted save" in proc.stderr and left[0].name in proc.stderr
    assert not [p for p in run_dir.rglob("*") if ".tmp-" in p.name]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if r["type"] == "train"]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "finished"
    assert steps == sorted(set(steps)) and steps[-1] == manifest["total_steps"], steps
    assert steps == list(range(2, manifest["total_steps"] + 1, 2)), steps  # log_steps 2: none lost, none twice


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def msrun(args, tmp_path, name):
    """`args` on 2 msrun workers on this CPU (MCCL); returns the folder of the workers' logs."""
    log_dir = tmp_path / f"{name}_msrun_log"
    run(["-m", "mindspore.parallel.cluster.run", "--worker_num=2", "--local_worker_num=2",
         f"--master_port={free_port()}", f"--log_dir={log_dir}", "--join=True", "--cluster_time_out=300", *args],
        cwd=tmp_path)
    return log_dir


def train_losses(run_dir, key="loss"):
    return [r[key] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
            if r["type"] == "train"]


def assert_same_training(one, two, loss_keys=("loss",)):
    """Run directories `one` (1 worker, batch 2B) and `two` (2 workers, batch B): the same steps, the same loss at
    every step and the same final weights, within fp32 tolerance."""
    for key in loss_keys:
        a, b = train_losses(one, key), train_losses(two, key)
        assert len(a) == len(b) > 0, (key, len(a), len(b))
        np.testing.assert_allclose(b, a, rtol=2e-4, atol=1e-5, err_msg=f"{two}: {key}")
    a, b = weights(str(one / "last.ckpt")), weights(str(two / "last.ckpt"))
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-3, atol=2e-5, err_msg=f"{two}: {name}")


@pytest.mark.slow
def test_gd_data_parallel_two_workers_equal_one_worker_with_the_doubled_batch(gd_setup, tmp_path):
    """msrun on CPU (MCCL): 2 workers with batch 4 train exactly like 1 worker with batch 8 (same global batches,
    losses normalised over the global batch); both workers end with identical weights; only rank 0 writes."""
    one, two = tmp_path / "one", tmp_path / "two"
    run([os.path.join(ROOT, "run_general_distill.py"), "--config",
         gd_config(gd_setup, one, batch_size=8, epochs=1, log_steps=1), "--no_progress"], cwd=tmp_path)
    log_dir = msrun([os.path.join(ROOT, "run_general_distill.py"), "--config",
                     gd_config(gd_setup, two, batch_size=4, epochs=1, log_steps=1), "--no_progress"], tmp_path, "gd")
    digests = {}
    for rank in (0, 1):
        text = (log_dir / f"worker_{rank}.log").read_text()
        line = next(l for l in text.splitlines() if "student weights sha256" in l)
        digests[rank] = line.split()[-1]
        assert f"rank {rank}/2" in line
    assert digests[0] == digests[1]
    manifest = json.loads((two / "manifest.json").read_text())
    assert manifest["world_size"] == 2 and manifest["status"] == "finished"
    assert manifest["total_steps"] == json.loads((one / "manifest.json").read_text())["total_steps"]
    last = weights(str(two / "last.ckpt"))
    digest = hashlib.sha256(b"".join(last[n].tobytes() for n in sorted(last))).hexdigest()
    assert digest == digests[0]
    assert_same_training(one, two)


@pytest.fixture(scope="module")
def sst2_records(tmp_path_factory, shared_data):
    """Real SST-2 rows: 160 train rows and the first 100 dev rows, as MindRecord with labels.json."""
    root = tmp_path_factory.mktemp("sst2")
    lines = open(os.path.join(shared_data, "glue", "SST-2", "train.tsv"), encoding="utf-8").read().splitlines()
    (root / "train.tsv").write_text("\n".join(lines[:161]) + "\n", encoding="utf-8")
    lines = open(os.path.join(shared_data, "glue", "SST-2", "dev.tsv"), encoding="utf-8").read().splitlines()
    (root / "dev.tsv").write_text("\n".join(lines[:101]) + "\n", encoding="utf-8")
    vocab = os.path.join(shared_data, "vocab", "bert-base-uncased-vocab.txt")
    for split in ("train", "dev"):
        run([os.path.join(ROOT, "scripts", "convert_task_data.py"), "--task", "sst2", "--input",
             str(root / f"{split}.tsv"), "--output", str(root / f"{split}.mindrecord"), "--vocab_file", vocab,
             "--max_seq_length", "32"], cwd=root)
    import mindspore as ms

    ms.set_seed(12)
    ckpt.save_model(BertModel(BertConfig(**TINY)), str(root / "pretrained.ckpt"))
    return root


def td_config(root, out):
    stage = {"batch_size": 16, "epochs": 2, "lr": 1e-3, "log_steps": 5, "save_steps": 7}
    cfg = {
        "task": {"name": "SST-2", "num_labels": 2, "labels": ["0", "1"], "metric": "accuracy"},
        "run": {"output_dir": str(out), "seed": 7, "data_seed": 8, "cpu_gelu": "aot"},  # as in gd_config
        "data": {"train_files": [str(root / "train.mindrecord")], "eval_files": [str(root / "dev.mindrecord")],
                 "seq_length": 32},
        "checkpoint": {"pretrained": str(root / "pretrained.ckpt")},
        "teacher": TINY, "student": STUDENT, "eval": {"batch_size": 32},
        "td": {"finetune": stage, "phase1": stage, "phase2": stage},
    }
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


@pytest.mark.slow
def test_task_distillation_pipeline(sst2_records, tmp_path):
    out = tmp_path / "sst2"
    config = td_config(sst2_records, out)
    script = os.path.join(ROOT, "run_task_distill.py")
    proc = run([script, "--config", config, "--phase", "1", "--no_progress"], cwd=tmp_path, check=False)
    assert proc.returncode != 0 and "holds no finished fine-tuning run" in proc.stderr

    run([script, "--config", config, "--phase", "finetune", "--no_progress"], cwd=tmp_path)
    teacher = json.loads((out / "teacher" / "manifest.json").read_text())
    best = teacher["metrics"]["best"]
    assert best["sets"]["dev"]["examples"] == 100  # every dev row, the last partial batch included
    assert (out / "teacher" / "best.ckpt").is_file() and teacher["checkpoints"]["best"] == "best.ckpt"

    proc = run([script, "--config", config, "--phase", "both", "--no_progress"], cwd=tmp_path)
    phase1 = json.loads((out / "phase1" / "manifest.json").read_text())
    phase2 = json.loads((out / "phase2" / "manifest.json").read_text())
    assert phase1["status"] == phase2["status"] == "finished"
    teacher_sha = ckpt.read_metadata(str(out / "teacher" / "best.ckpt"))["sha256"]
    assert phase1["started_from"]["teacher"]["sha256"] == teacher_sha
    assert phase2["started_from"]["student"]["path"] == str(out / "phase1" / "last.ckpt")
    assert phase2["started_from"]["student"]["sha256"] == ckpt.read_metadata(str(out / "phase1" / "last.ckpt"))["sha256"]
    assert phase1["metrics"]["best"] is None  # phase 1 trains no logits, so it does not evaluate
    rows = [json.loads(l) for l in (out / "phase2" / "metrics.jsonl").read_text().splitlines()]
    assert [r["type"] for r in rows].count("eval") == 2 and rows[0]["prediction"] > 0
    assert "final eval: accuracy" in proc.stdout and "best eval:" in proc.stdout
    assert {"fit_dense.ckpt", "state.ckpt", "last.ckpt"} <= set(os.listdir(out / "phase1"))

    # Evaluate the result alone; re-running skips every finished stage.
    proc = run([script, "--config", config, "--phase", "eval", "--checkpoint", str(out / "phase2")], cwd=tmp_path)
    result = json.loads(proc.stdout)
    assert result["sets"]["dev"]["examples"] == 100
    assert result["score"] == pytest.approx(phase2["metrics"]["best"]["score"])
    proc = run([script, "--config", config, "--phase", "both", "--no_progress"], cwd=tmp_path)
    assert proc.stderr.count("finished earlier") == 2


@pytest.mark.slow
def test_task_distillation_data_parallel_two_workers_equal_one_worker_with_the_doubled_batch(sst2_records,
                                                                                              tmp_path):
    """Fine-tuning, phase 1 and phase 2 (stored teacher logits) and the evaluation on 2 msrun workers with batch 8
    train like 1 worker with batch 16: same loss at every step, same final weights; rank 0 alone evaluates and
    writes; every stage's manifest says world_size 2."""
    script = os.path.join(ROOT, "run_task_distill.py")
    one, two = tmp_path / "one", tmp_path / "two"
    small = ["--td.finetune.epochs=1", "--td.phase1.epochs=1", "--td.phase2.epochs=1", "--td.finetune.log_steps=1",
             "--td.phase1.log_steps=1", "--td.phase2.log_steps=1", "--data.bucket_boundaries=[16]"]
    config = td_config(sst2_records, one)
    for phase in ("finetune", "both"):
        run([script, "--config", config, "--phase", phase, "--no_progress", *small], cwd=tmp_path)
    halves = [f"--td.{s}.batch_size=8" for s in ("finetune", "phase1", "phase2")]
    config = td_config(sst2_records, two)
    for phase in ("finetune", "both"):
        msrun([script, "--config", config, "--phase", phase, "--no_progress", *small, *halves], tmp_path, phase)
    assert_same_training(one / "teacher", two / "teacher")
    assert_same_training(one / "phase1", two / "phase1")
    assert_same_training(one / "phase2", two / "phase2", loss_keys=("loss", "prediction"))
    for stage in ("teacher", "phase1", "phase2"):
        assert json.loads((two / stage / "manifest.json").read_text())["world_size"] == 2
    best = [json.loads((out / "phase2" / "manifest.json").read_text())["metrics"]["best"] for out in (one, two)]
    assert best[1]["sets"]["dev"]["examples"] == 100
    assert best[1]["score"] == pytest.approx(best[0]["score"], abs=0.011)  # at most one dev row of 100 flips
    assert (two / "teacher_logits" / "rank_1" / "train.mindrecord").is_file()


@pytest.mark.slow
def test_length_bucketing_trains_and_scores_like_full_padding(sst2_records, tmp_path):
    """data.bucket_boundaries: batches padded to their bucket; training runs (graph mode, one compile per bucket)
    and evaluation gives exactly the score of full-length padding on the same weights."""
    out = tmp_path / "bucketed"
    config = td_config(sst2_records, out)
    script = os.path.join(ROOT, "run_task_distill.py")
    buckets = "--data.bucket_boundaries=[12,20]"
    run([script, "--config", config, "--phase", "finetune", "--no_progress", buckets], cwd=tmp_path)
    manifest = json.loads((out / "teacher" / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["config"]["data"]["bucket_boundaries"] == [12, 20]
    rows = [json.loads(l) for l in (out / "teacher" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r["type"] == "train"]
    assert losses and all(np.isfinite(losses))
    assert manifest["metrics"]["best"]["sets"]["dev"]["examples"] == 100
    scores = {}
    for extra in ([], [buckets]):
        proc = run([script, "--config", config, "--phase", "eval", "--checkpoint", str(out / "teacher"), *extra],
                   cwd=tmp_path)
        result = json.loads(proc.stdout)
        assert result["sets"]["dev"]["examples"] == 100
        scores[bool(extra)] = result["score"]
    assert scores[True] == scores[False]
    assert scores[True] == pytest.approx(manifest["metrics"]["best"]["score"])
    # Bucket lengths outside [2, seq_length] are refused with the key named.
    proc = run([script, "--config", config, "--phase", "eval", "--checkpoint", str(out / "teacher"),
                "--data.bucket_boundaries=[12,40]"], cwd=tmp_path, check=False)
    assert proc.returncode != 0 and "data.bucket_boundaries" in proc.stderr and "seq_length=32" in proc.stderr


@pytest.mark.slow
def test_profiling_writes_a_trace_and_logs_the_costliest_ops(gd_setup, tmp_path):
    out = tmp_path / "profiled"
    proc = run([os.path.join(ROOT, "run_general_distill.py"), "--config", gd_config(gd_setup, out, epochs=0.5),
                "--no_progress", "--run.enable_profiling=true"], cwd=tmp_path)
    folder = out / "profile" / "rank_0"  # run.output_dir/profile/rank_R
    traces = list(folder.rglob("trace_view.json")) + list(folder.rglob("cpu_op_type_info_*.csv"))
    assert traces, sorted(str(p) for p in folder.rglob("*"))[:20]
    assert "profile: MatMul:" in proc.stderr or "profile: BatchMatMul:" in proc.stderr, proc.stderr[-2000:]


@pytest.mark.slow
def test_phase2_with_stored_teacher_logits_equals_the_teacher_in_every_step(sst2_records, tmp_path):
    """distill.store_teacher_logits (the default): the teacher's logits are computed once into
    OUT/teacher_logits/rank_0/train.mindrecord, equal the teacher's own logits for every row, and phase 2 trained on
    them ends with the weights of phase 2 with the teacher in every step (tiny nets without dropout, same seed);
    a current store is reused, and a re-trained teacher makes a new one."""
    import shutil

    from src.distill import teacher_cache
    from src.data.dataset import create_tinybert_dataset

    script = os.path.join(ROOT, "run_task_distill.py")
    stored_out, online_out = tmp_path / "stored", tmp_path / "online"
    config = td_config(sst2_records, stored_out)
    run([script, "--config", config, "--phase", "finetune", "--no_progress"], cwd=tmp_path)
    run([script, "--config", config, "--phase", "1", "--no_progress"], cwd=tmp_path)
    for stage in ("teacher", "phase1"):
        shutil.copytree(stored_out / stage, online_out / stage)
    run([script, "--config", config, "--phase", "2", "--no_progress"], cwd=tmp_path)
    run([script, "--config", config, "--phase", "2", "--no_progress", f"--run.output_dir={online_out}",
         "--distill.store_teacher_logits=false"], cwd=tmp_path)

    store = stored_out / "teacher_logits" / "rank_0" / "train.mindrecord"
    manifest = json.loads((stored_out / "phase2" / "manifest.json").read_text())
    assert manifest["teacher_logits"]["path"] == str(store) and manifest["teacher_logits"]["rows"] == 160
    # Phase 1 (10 full batches of 16 per epoch) kept the teacher logits of all 160 rows, and the store took them all
    # from there: no separate teacher pass.
    kept = json.loads((stored_out / "phase1" / "manifest.json").read_text())["teacher_logits"]
    assert kept["file"] == teacher_cache.BYPRODUCT_FILE and 150 <= kept["rows"] <= 160  # distinct rows
    assert kept["teacher_sha256"] == ckpt.read_metadata(str(stored_out / "teacher" / "best.ckpt"))["sha256"]
    assert manifest["teacher_logits"]["from_phase1"] == 160
    assert json.loads((online_out / "phase2" / "manifest.json").read_text())["teacher_logits"] is None
    assert not (online_out / "teacher_logits").exists()

    # The stored logits are the teacher's, row for row, in the source order.
    teacher = ckpt.load_model(str(stored_out / "teacher" / "best.ckpt"))
    teacher.set_train(False)
    columns = ["input_ids", "input_mask", "segment_ids"]
    batch = next(create_tinybert_dataset(str(sst2_records / "train.mindrecord"), columns, 1000, 32, shuffle=False,
                                         drop_remainder=False).create_dict_iterator(num_epochs=1, output_numpy=True))
    import mindspore as ms

    expected = teacher(ms.Tensor(batch["input_ids"]), ms.Tensor(batch["segment_ids"]),
                       ms.Tensor(batch["input_mask"]))[0].asnumpy()
    np.testing.assert_allclose(teacher_cache.read_logits(str(store)), expected, atol=2e-5)

    # Same training: same losses at every logged step and the same final weights.
    def losses(out):
        return [r["prediction"] for r in map(json.loads, (out / "phase2" / "metrics.jsonl").read_text().splitlines())
                if r["type"] == "train"]
    np.testing.assert_allclose(losses(stored_out), losses(online_out), rtol=1e-4, atol=1e-6)
    a, b = weights(str(stored_out / "phase2" / "last.ckpt")), weights(str(online_out / "phase2" / "last.ckpt"))
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=1e-4, err_msg=name)

    # A current store is reused; another teacher checkpoint makes a new one.
    run([script, "--config", config, "--phase", "2", "--no_progress", "--overwrite"], cwd=tmp_path)
    assert json.loads((stored_out / "phase2" / "manifest.json").read_text())["teacher_logits"]["reused"] is True
    run([script, "--config", config, "--phase", "finetune", "--no_progress", "--overwrite",
         "--td.finetune.epochs=1"], cwd=tmp_path)
    run([script, "--config", config, "--phase", "2", "--no_progress", "--overwrite"], cwd=tmp_path)
    rebuilt = json.loads((stored_out / "phase2" / "manifest.json").read_text())["teacher_logits"]
    assert rebuilt["reused"] is False
    assert rebuilt["from_phase1"] == 0  # phase 1 kept the old teacher's logits: all recomputed
    provenance = json.loads(open(str(store) + teacher_cache.PROVENANCE_SUFFIX, encoding="utf-8").read())
    assert provenance["teacher_sha256"] == ckpt.read_metadata(str(stored_out / "teacher" / "best.ckpt"))["sha256"]


# ---- The model zoo's command lines (README "Coming from the model zoo") --------------------------------------------

def zoo_folder(tmp_path, name, *files):
    """A folder holding `files` (a zoo data flag names a folder; its record files are taken)."""
    import shutil

    folder = tmp_path / name
    folder.mkdir()
    for path in files:
        for extra in ("", ".db"):
            if os.path.exists(str(path) + extra):
                shutil.copy(str(path) + extra, folder)
        labels = os.path.join(os.path.dirname(str(path)), "labels.json")  # written beside converted records
        if os.path.exists(labels):
            shutil.copy(labels, folder)
    return folder


@pytest.mark.slow
def test_gd_with_the_model_zoo_flags(gd_setup, tmp_path):
    """run_general_distill.py as the zoo's run_standalone_gd.sh calls it (its flag syntax: "true"/"false" strings,
    --k v and --k=v), on CPU: every flag lands on its key."""
    out = tmp_path / "zoo_gd"
    config = gd_config(gd_setup, tmp_path / "unused")
    data = zoo_folder(tmp_path, "gd_data", gd_setup / "gd.mindrecord")
    proc = run([os.path.join(ROOT, "run_general_distill.py"), "--config_path", config, "--distribute=false",
                "--device_target=CPU", "--epoch_size=1", "--device_id=0", "--enable_data_sink=true",
                "--data_sink_steps=100", "--save_ckpt_step=4", "--max_ckpt_num=1", f"--save_ckpt_path={out}",
                f"--load_teacher_ckpt_path={gd_setup / 'teacher.ckpt'}", f"--data_dir={data}", "--schema_dir=",
                "--dataset_type=mindrecord", "--do_shuffle", "false", "--no_progress"], cwd=tmp_path)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "finished"
    full = manifest["full_config"]
    assert full["gd"]["epochs"] == 1.0 and full["gd"]["save_steps"] == 4 and full["gd"]["keep_checkpoints"] == 1
    assert full["data"]["train_files"] == [str(data / "gd.mindrecord")] and full["data"]["shuffle"] is False
    assert full["checkpoint"]["teacher"] == str(gd_setup / "teacher.ckpt")
    assert "no dataset sink mode on CPU" in proc.stderr
    # Bad zoo input: one line naming the flag.
    for bad, words in ((["--epoch_sise=1"], "did you mean the model zoo's --epoch_size?"),
                       (["--distribute=true"], "--distribute=true, but no launcher started several processes"),
                       (["--do_shuffle=yes"], "--do_shuffle='yes'; expected true or false"),
                       (["--data_path=/cache/data"], "--data_path: the model zoo's flag has no meaning here"),
                       (["--task_name=SST-2"], "is a flag of the model zoo's run_task_distill.py"),
                       ([f"--data_dir={tmp_path / 'nothing'}"], "no such file or folder"),
                       (["--data_url=obs://bucket/data"], "run.data_url: 'obs://bucket/data' is only read on "
                                                          "ModelArts"),
                       (["--load_teacher_ckpt_path=obs://bucket/t.ckpt"], "checkpoint.teacher: "
                                                                          "'obs://bucket/t.ckpt' is a URL")):
        proc = run([os.path.join(ROOT, "run_general_distill.py"), "--config_path", config, *bad], cwd=tmp_path,
                   check=False)
        assert proc.returncode != 0 and words in proc.stderr, (bad, proc.stderr[-600:])
        assert "Traceback" not in proc.stderr


def fake_modelarts(tmp_path):
    """Environment of a process that sees the fake moxing (tests/helpers/fake_moxing), an OBS bucket folder and a
    local cache folder; returns (env, obs root, log of copies)."""
    obs, cache, log = tmp_path / "obs", tmp_path / "cache", tmp_path / "moxing.jsonl"
    obs.mkdir()
    env = {"PYTHONPATH": os.path.join(ROOT, "tests", "helpers", "fake_moxing") + os.pathsep + ROOT,
           "FAKE_OBS_ROOT": str(obs), "FAKE_MOXING_LOG": str(log), "MODELARTS_CACHE": str(cache)}
    return env, obs, log


@pytest.mark.slow
def test_gd_on_modelarts_copies_in_rebases_the_zoo_paths_and_uploads_even_after_a_failure(gd_setup, tmp_path):
    import shutil

    env, obs, log = fake_modelarts(tmp_path)
    (obs / "bucket" / "data").mkdir(parents=True)
    (obs / "bucket" / "ckpt").mkdir()
    for name in ("gd.mindrecord", "gd.mindrecord.db"):
        shutil.copy(gd_setup / name, obs / "bucket" / "data")
    for path in gd_setup.glob("teacher.*"):
        shutil.copy(path, obs / "bucket" / "ckpt")
    out = tmp_path / "local_out"
    config = gd_config(gd_setup, tmp_path / "unused")
    zoo = ["--enable_modelarts=True", "--data_url=obs://bucket/data", "--checkpoint_url=obs://bucket/ckpt",
           "--train_url=obs://bucket/out", "--data_dir=gd.mindrecord", "--load_teacher_ckpt_path=teacher.ckpt",
           f"--save_ckpt_path={out}", "--epoch_size=1"]
    run([os.path.join(ROOT, "run_general_distill.py"), "--config_path", config, *zoo, "--no_progress"],
        cwd=tmp_path, env_extra=env)
    copies = [json.loads(l) for l in log.read_text().splitlines()]
    cache = tmp_path / "cache"
    assert copies == [{"src": "obs://bucket/data", "dst": str(cache / "data")},
                      {"src": "obs://bucket/ckpt", "dst": str(cache / "checkpoint")},
                      {"src": "obs://bucket/out", "dst": str(out)},  # nothing there yet: a first run
                      {"src": str(out), "dst": "obs://bucket/out"}]
    manifest = json.loads((obs / "bucket" / "out" / "manifest.json").read_text())
    assert manifest["status"] == "finished"
    assert manifest["full_config"]["data"]["train_files"] == [str(cache / "data" / "gd.mindrecord")]
    assert manifest["full_config"]["checkpoint"]["teacher"] == str(cache / "checkpoint" / "teacher.ckpt")
    assert (obs / "bucket" / "out" / "last.ckpt").is_file()
    assert "gd step" in (obs / "bucket" / "out" / "logs" / "rank_0.log").read_text()

    # A run that fails still uploads its log, with the error in it.
    log.unlink()
    shutil.rmtree(cache)
    failed_out = tmp_path / "failed_out"
    bad = [z.replace("teacher.ckpt", "missing.ckpt").replace(str(out), str(failed_out)).replace("bucket/out",
                                                                                                 "bucket/failed")
           for z in zoo]
    proc = run([os.path.join(ROOT, "run_general_distill.py"), "--config_path", config, *bad, "--no_progress"],
               cwd=tmp_path, env_extra=env, check=False)
    assert proc.returncode != 0 and "missing.ckpt" in proc.stderr
    copies = [json.loads(l) for l in log.read_text().splitlines()]
    assert copies[-1] == {"src": str(failed_out), "dst": "obs://bucket/failed"}
    uploaded = (obs / "bucket" / "failed" / "logs" / "rank_0.log").read_text()
    assert "run failed" in uploaded and "missing.ckpt" in uploaded


@pytest.mark.slow
def test_task_distillation_with_the_model_zoo_flags(sst2_records, tmp_path):
    """run_task_distill.py as the zoo's run_standalone_td.sh calls it: --do_train/--do_eval choose the phases,
    the data folders and checkpoints land on their keys; --do_train=false evaluates --load_td1_ckpt_path."""
    out = tmp_path / "zoo_td"
    config = td_config(sst2_records, out)
    script = os.path.join(ROOT, "run_task_distill.py")
    run([script, "--config", config, "--phase", "finetune", "--no_progress", "--td.finetune.epochs=1"],
        cwd=tmp_path)
    train = zoo_folder(tmp_path, "train_data", sst2_records / "train.mindrecord")
    dev = zoo_folder(tmp_path, "eval_data", sst2_records / "dev.mindrecord")
    zoo = [f"--config_path={config}", "--device_target=CPU", "--device_id=0", "--do_train=true", "--do_eval=true",
           "--td_phase1_epoch_size=1", "--td_phase2_epoch_size=1", "--do_shuffle=true", "--enable_data_sink=false",
           "--save_ckpt_step=5", "--max_ckpt_num=1", f"--load_teacher_ckpt_path={out / 'teacher' / 'best.ckpt'}",
           f"--train_data_dir={train}", f"--eval_data_dir={dev}", "--schema_dir=", "--task_type=classification",
           "--task_name=SST-2", "--assessment_method=accuracy", "--dataset_type=mindrecord"]
    proc = run([script, *zoo, "--no_progress"], cwd=tmp_path)
    for stage in ("phase1", "phase2"):
        manifest = json.loads((out / stage / "manifest.json").read_text())
        assert manifest["status"] == "finished"
        full = manifest["full_config"]
        assert full["td"][stage]["epochs"] == 1.0 and full["td"][stage]["save_steps"] == 5
        assert full["td"][stage]["keep_checkpoints"] == 1
        assert full["data"]["train_files"] == [str(train / "train.mindrecord")]
        assert full["data"]["eval_files"] == [str(dev / "dev.mindrecord")]
        assert full["checkpoint"]["teacher"] == str(out / "teacher" / "best.ckpt")
        assert full["task"]["metric"] == "accuracy"
    assert "final eval: accuracy" in proc.stdout
    # --do_train=false: evaluate the zoo's --load_td1_ckpt_path.
    proc = run([script, *[z for z in zoo if not z.startswith("--do_train")], "--do_train=false",
                f"--load_td1_ckpt_path={out / 'phase2' / 'last.ckpt'}"], cwd=tmp_path)
    result = json.loads(proc.stdout)
    assert result["sets"]["dev"]["examples"] == 100
    for bad, words in ((["--do_train=false", "--do_eval=false"], "do train or do eval must have one be true"),
                       (["--task_name=CLUENER", "--task_type=classification"], "is a ner task"),
                       (["--assessment_method=f1"], "expected accuracy, bf1 or mf1"),
                       (["--epoch_size=1"], "is a flag of the model zoo's run_general_distill.py"),
                       (["--do_train=true", "--phase", "eval"], "contradicts the model zoo's --do_train=true")):
        proc = run([script, f"--config_path={config}", *bad], cwd=tmp_path, check=False)
        assert proc.returncode != 0 and words in proc.stderr, (bad, proc.stderr[-600:])
        assert "Traceback" not in proc.stderr
