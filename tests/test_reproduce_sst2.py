"""scripts/reproduce_sst2.py: every row of the SST-2 reproduction on a tiny slice (--smoke), the report it writes,
that a second run skips every finished stage, and that a run folder refuses other knobs."""
import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "reproduce_sst2.py")


def load_script():
    spec = importlib.util.spec_from_file_location("reproduce_sst2", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reproduce(out, shared_data, *extra):
    args = [sys.executable, SCRIPT, "--smoke", "--out", str(out), "--data_dir", shared_data, "--no_progress", *extra]
    env = dict(os.environ, GLOG_v="3", MS_COMPILER_CACHE_ENABLE="0")
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=1800, env=env, check=False)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, shared_data):
    out = tmp_path_factory.mktemp("reproduce") / "run"
    proc = reproduce(out, shared_data)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-4000:]}"
    return out, proc


@pytest.mark.slow
def test_smoke_runs_every_row_and_reports(smoke):
    out, proc = smoke
    results = json.loads((out / "results.json").read_text())
    rows = results["rows"]
    assert list(rows) == ["teacher", "labels", "td", "td_aug", "td_aug_nogd", "td_aug_3l384"]
    for name, row in rows.items():
        assert row["seeds"] == [1], name
        run = row["runs"]["1"]
        # scored on the dev slice at the checkpoint chosen on the held-out train slice
        assert run["dev_examples"] == 96 and 0.0 <= run["dev"] <= 1.0 and 0.0 <= run["holdout"] <= 1.0, name
        assert row["dev_mean"] == run["dev"] and row["dev_std"] is None, name  # one seed: no spread
        assert row["train_seconds"] > 0 and row["latency_ms"] > 0, name
    shapes = {name: (row["layers"], row["hidden"], row["parameters"]) for name, row in rows.items()}
    assert shapes["teacher"][:2] == (6, 384) and shapes["td_aug_3l384"][:2] == (3, 384)
    for name in ("labels", "td", "td_aug", "td_aug_nogd"):  # TinyBERT-4: 4 x 312, 14.4 M parameters
        assert shapes[name][:2] == (4, 312) and 14.0e6 < shapes[name][2] < 14.8e6, name
    assert rows["td_aug"]["speedup"] > 1.0 and rows["teacher"]["of_teacher"] == 1.0
    assert set(results["latency"]["seconds"]) == {"teacher", "4l312", "3l384"}
    assert results["complete"] is True and results["steps"]["phase1"] == 6 and results["steps"]["gd"] == 4
    # what each row started from: GD for rows 2-4, random for 5, teacher layers 2/4/6 for 6
    for row, expected in (("labels", "gd"), ("td", "gd"), ("td_aug", "gd")):
        first = "student_labels" if row == "labels" else "phase1"
        manifest = json.loads((out / row / "s1" / first / "manifest.json").read_text())
        assert os.path.basename(os.path.dirname(manifest["started_from"]["student"]["path"])) == expected, row
    nogd = json.loads((out / "td_aug_nogd" / "s1" / "phase1" / "manifest.json").read_text())
    assert nogd["started_from"]["student"]["init"] == "random"
    showcase = json.loads((out / "td_aug_3l384" / "s1" / "phase1" / "manifest.json").read_text())
    assert showcase["started_from"]["student"]["teacher_layers"] == [2, 4, 6]
    # the augmented rows train on the augmented pool, the others on the train slice
    pool = json.loads((out / "td_aug" / "s1" / "phase1" / "manifest.json").read_text())["config"]["data"]
    plain = json.loads((out / "td" / "s1" / "phase1" / "manifest.json").read_text())["config"]["data"]
    assert pool["train_files"][0].endswith("aug/train.mindrecord") and plain["train_files"][0].endswith(
        "train/train.mindrecord")
    table = (out / "results.md").read_text()
    numbered = [line for line in table.splitlines() if re.match(r"\| \d \| ", line)]
    assert len(numbered) == 6 and numbered[3].startswith("| 4 | TinyBERT-4, GD init, TD + augmentation (the recipe) | "
                                                         "4 x 312 | 14.4 M | ")
    assert "Machine: " in table and "Row 4 - row 2: " in table
    assert (out / "results.png").stat().st_size > 10_000
    assert "starting" in proc.stdout and "about" in proc.stdout  # progress with an ETA


@pytest.mark.slow
def test_second_run_skips_every_finished_stage(smoke, shared_data):
    out, _ = smoke
    before = (out / "results.json").read_text()
    proc = reproduce(out, shared_data)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "starting" not in proc.stdout and "run_task_distill.py" not in proc.stdout
    after = json.loads((out / "results.json").read_text())
    assert after["rows"] == json.loads(before)["rows"]


@pytest.mark.slow
def test_other_knobs_in_the_same_folder_are_refused(smoke, shared_data):
    out, _ = smoke
    proc = reproduce(out, shared_data, "--aug_n", "3")
    assert proc.returncode == 2
    assert "plan.json: this folder was run with other knobs: aug_n 1 there, 3 now" in proc.stderr


def test_bad_knobs_are_refused(tmp_path, shared_data):
    for extra, message in ((["--rows", "td,tdx"], "--rows: unknown ['tdx']"), (["--budget", "0"], "--budget: got 0"),
                           (["--seeds", ","], "--seeds: empty"), (["--aug_n", "0"], "--aug_n: got 0")):
        proc = reproduce(tmp_path / "x", shared_data, *extra)
        assert proc.returncode == 2 and message in proc.stderr, (extra, proc.stderr)


def test_summary_mean_std_gap_and_table():
    """Aggregation over seeds on made-up runs: sample std, share of the teacher, the row 4 - row 2 gap."""
    module = load_script()

    def runs(*accs, hidden=312, params=14.4e6, layers=4):
        return {str(i + 1): {"dev": a, "holdout": a, "dev_final": a, "best_step": 1, "steps": 2, "dev_examples": 872,
                             "parameters": params, "layers": layers, "hidden": hidden} for i, a in enumerate(accs)}

    made = {"teacher": runs(0.90, 0.92, 0.91, hidden=384, params=22.7e6, layers=6),
            "labels": runs(0.84, 0.85, 0.86), "td_aug": runs(0.88, 0.89, 0.87)}
    plan = {"seeds": [1, 2, 3], "rows": list(made), "holdout_rows": 2000, "aug_n": 2, "aug_rows": 0}

    class FakeLayout:
        pass

    module.row_runs = lambda layout, plan, row: {int(k): v for k, v in made[row].items()}
    latency = {"seconds": {"teacher": 0.030, "4l312": 0.010}, "repeats": 100, "cpus": 2, "load_average": [1.0],
               "format": "MINDIR"}
    rows = module.summarize(FakeLayout(), plan, {"labels/s1": {"seconds": 60.0, "kind": "labels", "samples": 1}},
                            latency)
    assert rows["teacher"]["dev_mean"] == pytest.approx(0.91) and rows["teacher"]["dev_std"] == pytest.approx(0.01)
    assert rows["td_aug"]["of_teacher"] == pytest.approx(0.88 / 0.91)
    assert rows["td_aug"]["speedup"] == pytest.approx(3.0) and rows["labels"]["train_seconds"] == 60.0
    assert rows["td_aug"]["vs_labels"]["gap"] == pytest.approx(0.03)
    assert rows["td_aug"]["vs_labels"]["larger_than_spread"] is True
    results = {"plan": plan, "rows": rows, "latency": latency, "machine": {"cpu": "x", "cpus": 2, "python": "3",
                                                                            "mindspore": "2"},
               "steps": {"teacher": 1, "gd": 1, "labels": 1, "phase1": 1, "phase2": 1}}
    table = module.markdown(results)
    assert "| 88.00 ± 1.00 (3) | 96.70% | 10.0 ms | 3.0x | 0m00s |" in table
    assert "Row 4 - row 2: +3.00 points (larger than the larger of their stds)." in table
    assert "Latency: exported MINDIR, batch 1, seq 64, median of 100 alternating calls" in table
