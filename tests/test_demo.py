"""scripts/demo.py (the quick start's main job) end to end on real data with a tiny budget, then re-run.

The full-size demo is what `bash scripts/quickstart.sh` runs (and CI with it); this test runs the same code
path with a few steps per stage, so a broken stage fails here with its own message, and checks that a second
run skips every finished stage.

When TINYBERT_DEMO_RUN names the folder of a full-size demo the quick start just made (with its default sizes) and
TINYBERT_DEMO_LOG the quick start's output (stdout and stderr), the tests check that run instead of making a tiny
one: `.ci/run` does this, so CI checks the run a new user gets and does not train the pipeline twice.
"""
import json
import os
import pathlib
import subprocess
import sys
import types

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


TINY = ["--train_rows", "96", "--teacher_epochs", "1", "--gd_steps", "3", "--aug_n", "1", "--phase1_steps", "3",
        "--phase2_steps", "3"]


def given_run():
    """(folder, log) of the quick start's demo when the environment names them, else None."""
    folder, log = os.environ.get("TINYBERT_DEMO_RUN"), os.environ.get("TINYBERT_DEMO_LOG")
    if not folder:
        return None
    folder = pathlib.Path(ROOT, folder)  # relative paths are from the repository (absolute ones stay)
    if not log or not pathlib.Path(ROOT, log).is_file():
        pytest.fail(f"TINYBERT_DEMO_RUN={folder} needs TINYBERT_DEMO_LOG, the quick start's output; got {log!r}")
    if not (folder / "results.json").is_file():
        pytest.fail(f"TINYBERT_DEMO_RUN={folder}: no results.json there (the quick start did not finish)")
    return folder, pathlib.Path(ROOT, log)


def run_demo(out, shared_data, sizes=TINY):
    args = [sys.executable, os.path.join(ROOT, "scripts", "demo.py"), "--data_dir", shared_data, "--out", str(out),
            *sizes, "--no_progress", "--no_download"]
    env = dict(os.environ, GLOG_v="3", MS_COMPILER_CACHE_ENABLE="0")
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=1800, env=env)
    assert proc.returncode == 0, f"demo failed\nstdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def demo(tmp_path_factory, shared_data):
    given = given_run()
    if given:  # the quick start's full-size run: its output is what it printed
        folder, log = given
        return folder, types.SimpleNamespace(stdout=log.read_text(errors="replace"), stderr="")
    out = tmp_path_factory.mktemp("demo") / "run"
    return out, run_demo(out, shared_data)


@pytest.mark.slow
def test_demo_runs_every_stage_and_reports(demo):
    out, proc = demo
    for stage in ("1/7 data", "2/7 teacher", "3/7 general distillation", "4/7 data augmentation",
                  "5/7 task distillation", "6/7 export", "7/7 report"):
        assert stage in proc.stdout
    results = json.loads((out / "results.json").read_text())
    teacher, student = results["teacher"], results["student"]
    assert results["examples"] == 872  # the whole SST-2 dev set
    assert teacher["layers"] == 6 and student["layers"] == 3 and teacher["hidden"] == student["hidden"] == 384
    assert student["parameters"] < teacher["parameters"]
    assert 0.0 <= student["accuracy_best"] <= 1.0 and 0.0 <= teacher["accuracy_best"] <= 1.0
    # the offline chain scores exactly what MindSpore's evaluation of the same checkpoint scores
    assert results["offline_chain_accuracy"] == results["in_framework_accuracy"]
    # training evaluated with the fast GELU kernel (same function to 2.4e-7): at most a near-tie may flip
    assert abs(results["in_framework_accuracy"] - student["accuracy_best"]) <= 1 / 872 + 1e-12
    assert results["speedup_batch1"] > 1.0 and student["latency_ms_batch1"] > 0
    assert results["gd_loss"]["first"] > 0
    table = (out / "results.md").read_text()
    assert "| teacher: all-MiniLM-L6-v2 fine-tuned | 6 x 384 |" in table and "student: TinyBERT" in table
    assert (out / "curves.png").stat().st_size > 10_000
    assert (out / "deploy" / "student.mindir").is_file()
    # README "Deploy": the Hugging Face folder, checked against transformers (installed by setup.sh), and the
    # dynamic-shape ONNX file, checked against MindSpore; predict.py on it labelled the sentences as the MINDIR did.
    hf = out / "deploy" / "hf-sst2"
    assert json.loads((hf / "config.json").read_text())["architectures"] == ["BertForSequenceClassification"]
    assert "check: max |transformers BertForSequenceClassification - ours| = " in proc.stdout
    assert "check: max |logits - MindSpore network|" in proc.stdout and (out / "deploy" / "student.onnx").is_file()
    assert set(results["deploy"]) == {"hugging_face", "onnx"}  # paths as the demo prints them: from the repository
    assert os.path.samefile(os.path.join(ROOT, results["deploy"]["hugging_face"]), hf)
    assert os.path.samefile(os.path.join(ROOT, results["deploy"]["onnx"]), out / "deploy" / "student.onnx")
    # predict.py ran on the three example sentences: one line each, label, probability, sentence.
    lines = [l for l in proc.stdout.splitlines() if l.endswith(("moving film .", "is worse .", "worth seeing ."))]
    assert len(lines) == 3 and all(l.split("\t")[0] in ("0", "1") for l in lines)
    # Every run directory has its manifest; GD trained from the teacher's mapped layers.
    gd = json.loads((out / "gd" / "manifest.json").read_text())
    assert gd["started_from"]["student"] == {"init": "teacher_mapped_layers", "teacher_layers": [2, 4, 6]}
    phase1 = json.loads((out / "phase1" / "manifest.json").read_text())
    assert phase1["started_from"]["student"]["path"].endswith(os.path.join("gd", "last.ckpt"))


@pytest.mark.slow
def test_demo_rerun_skips_finished_stages(demo, shared_data):
    out, _ = demo
    before = (out / "results.json").read_text()
    proc = run_demo(out, shared_data, sizes=[] if given_run() else TINY)  # the quick start ran the default sizes
    assert proc.stderr.count("finished earlier") == 4  # teacher, GD, phase 1, phase 2
    for command in ("convert_task_data.py", "create_pretraining_data.py", "convert_checkpoint.py",
                    "augment_data.py", "export.py", "preprocess.py"):
        assert f"+ python scripts/{command}" not in proc.stdout and f"+ python {command}" not in proc.stdout
    assert json.loads((out / "results.json").read_text())["student"] == json.loads(before)["student"]
