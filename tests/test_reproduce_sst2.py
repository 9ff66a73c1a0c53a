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
    assert list(rows) == ["teacher", "labels", "td", "td_aug", "td_aug_nogd", "td_aug_3l384", "td_aug_sel"]
    for name, row in rows.items():
        assert row["seeds"] == [1], name
        run = row["runs"]["1"]
        # scored on the dev slice at the checkpoint chosen on the held-out train slice
        assert run["dev_examples"] == 96 and 0.0 <= run["dev"] <= 1.0 and 0.0 <= run["holdout"] <= 1.0, name
        assert row["dev_mean"] == run["dev"] and row["dev_std"] is None, name  # one seed: no spread
        assert row["train_seconds"] > 0 and row["latency_ms"] > 0, name
    shapes = {name: (row["layers"], row["hidden"], row["parameters"]) for name, row in rows.items()}
    assert shapes["teacher"][:2] == (6, 384) and shapes["td_aug_3l384"][:2] == (3, 384)
    for name in ("labels", "td", "td_aug", "td_aug_nogd", "td_aug_sel"):  # TinyBERT-4: 4 x 312, 14.4 M parameters
        assert shapes[name][:2] == (4, 312) and 14.0e6 < shapes[name][2] < 14.8e6, name
    assert rows["td_aug"]["speedup"] > 1.0 and rows["teacher"]["of_teacher"] == 1.0
    assert set(results["latency"]["seconds"]) == {"teacher", "4l312", "3l384"}
    assert results["complete"] is True and results["steps"]["phase1"] == 6 and results["steps"]["gd"] == 4
    # what each row started from: GD (itself from weight selection of the pre-trained MiniLM's layers 2, 3, 5, 6)
    # for rows 2-4, random for 5, teacher layers 2/4/6 for 6, weight selection of the fine-tuned teacher for 7
    gd = json.loads((out / "gd" / "manifest.json").read_text())
    assert gd["started_from"]["student"] == {"init": "teacher_selected", "teacher_layers": [2, 3, 5, 6]}
    for row, expected in (("labels", "gd"), ("td", "gd"), ("td_aug", "gd")):
        first = "student_labels" if row == "labels" else "phase1"
        manifest = json.loads((out / row / "s1" / first / "manifest.json").read_text())
        assert os.path.basename(os.path.dirname(manifest["started_from"]["student"]["path"])) == expected, row
    nogd = json.loads((out / "td_aug_nogd" / "s1" / "phase1" / "manifest.json").read_text())
    assert nogd["started_from"]["student"]["init"] == "random"
    showcase = json.loads((out / "td_aug_3l384" / "s1" / "phase1" / "manifest.json").read_text())
    assert showcase["started_from"]["student"]["teacher_layers"] == [2, 4, 6]
    selected = json.loads((out / "td_aug_sel" / "s1" / "phase1" / "manifest.json").read_text())
    assert selected["started_from"]["student"] == {"init": "teacher_selected", "teacher_layers": [2, 3, 5, 6]}
    # the augmented rows train on the augmented pool, the others on the train slice
    pool = json.loads((out / "td_aug" / "s1" / "phase1" / "manifest.json").read_text())["config"]["data"]
    plain = json.loads((out / "td" / "s1" / "phase1" / "manifest.json").read_text())["config"]["data"]
    assert pool["train_files"][0].endswith("aug/train.mindrecord") and plain["train_files"][0].endswith(
        "train/train.mindrecord")
    table = (out / "results.md").read_text()
    numbered = [line for line in table.splitlines() if re.match(r"\| \d \| ", line)]
    assert len(numbered) == 7 and numbered[3].startswith("| 4 | TinyBERT-4, GD init, TD + augmentation (the recipe) | "
                                                         "4 x 312 | 14.4 M | ")
    assert "Machine: " in table and "Row 4 - row 2: " in table
    assert (out / "results.png").stat().st_size > 10_000
    assert "starting" in proc.stdout and "about" in proc.stdout  # progress with an ETA
    assert "Code: " in table and "Teacher: every student distils from the seed-1 teacher (dev " in table


@pytest.mark.slow
def test_smoke_holds_out_whole_sentences_scores_dev_once_and_pools_each_original_once(smoke):
    out, _ = smoke
    data = out / "data"
    split = json.loads((data / "split.json").read_text())
    assert split["holdout_sentences"] == 64 and split["train_rows"] == 384 and split["dropped_inside_holdout"] > 0

    def texts(name):
        return [" " + " ".join(line.split("\t")[0].split()) + " " for line in
                (data / f"{name}.tsv").read_text(encoding="utf-8").splitlines()[1:]]

    held, train = texts("holdout"), texts("train")
    assert len(held) == 64 and len(train) == 384
    # no train row is inside a held-out sentence, and no held-out sentence is inside a train row
    assert not [t for t in train if any(t in h for h in held)]
    assert not [h for h in held if any(h in t for t in train)]
    for row in ("teacher", "labels", "td", "td_aug", "td_aug_nogd", "td_aug_3l384"):
        run_dir = out / (os.path.join("teacher_s1", "teacher") if row == "teacher" else os.path.join(
            row, "s1", "student_labels" if row == "labels" else "phase2"))
        manifest = json.loads((run_dir / "manifest.json").read_text())
        # evaluations during training: the held-out sentences only; dev once, on best.ckpt, after training
        assert [os.path.basename(f) for f in manifest["config"]["data"]["eval_files"]] == ["holdout.mindrecord"], row
        dev = json.loads((run_dir / "dev.json").read_text())
        assert set(dev["sets"]) == {"dev"} and dev["checkpoint"] == str(run_dir / "best.ckpt"), row
        best = json.loads((run_dir / "best.json").read_text())
        assert set(best["metrics"]["sets"]) == {"holdout"}, row
    # the augmented pool: every train row exactly once (128 augmented ones, followed by their variants, and the 256
    # others), plus the new sentences
    pool = json.loads((data / "aug" / "pool.json").read_text())
    assert pool["originals"] == 384 and pool["new"] > 0 and pool["rows"] == 384 + pool["new"]


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
    # a seed below the folder's first would change the teacher every student distils from
    proc = reproduce(out, shared_data, "--seeds", "0")
    assert proc.returncode == 2 and "every student here distils from the seed-1 teacher" in proc.stderr
    # an edited config is another knob
    plan_path = out / "plan.json"
    saved = plan_path.read_text()
    try:
        plan_path.write_text(saved.replace('"config_sha256": "', '"config_sha256": "0'))
        proc = reproduce(out, shared_data)
        assert proc.returncode == 2 and "config_sha256" in proc.stderr
    finally:
        plan_path.write_text(saved)


@pytest.mark.slow
def test_a_record_keeps_the_results_and_a_fresh_folder_trains_only_what_it_lacks(smoke, shared_data, tmp_path):
    """--record: the finished smoke folder's results go into a small folder (no checkpoints); a fresh run folder with
    that record (a new machine) trains only the stage the record lacks, and the checkpoint it starts from (GD for
    labels-only; not the teacher) again, comparing its final weights with the recorded ones."""
    out, _ = smoke
    record = tmp_path / "record"
    rows_before = json.loads((out / "results.json").read_text())["rows"]
    proc = reproduce(out, shared_data, "--record", str(record))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "starting" not in proc.stdout  # everything was finished: recorded, not trained
    names = sorted(p.name for p in (record / "stages").iterdir())
    assert names == ["gd.json", "labels_s1.json", "td_aug_3l384_s1.json", "td_aug_nogd_s1.json", "td_aug_s1.json",
                     "td_aug_sel_s1.json", "td_s1.json", "teacher_s1.json"]
    assert not [p for p in record.rglob("*") if p.suffix in (".ckpt", ".mindrecord", ".mindir", ".tsv")]
    recorded = json.loads((record / "results.json").read_text())
    assert recorded["rows"] == rows_before  # the same table, now made from the record
    for name in ("latency.json", "split.json", "pool.json", "results.md", "results.png"):
        assert (record / name).is_file(), name
    td = json.loads((record / "stages" / "td_s1.json").read_text())
    assert td["out"] == str(out) and td["run_id"] == (out / "run_id").read_text().strip()
    assert td["code"] and td["dev"]["sets"]["dev"]["examples"] == 96
    assert "full_config" not in td["manifest"] and td["manifest"]["status"] == "finished"

    # a new machine: a fresh run folder, the record without one stage
    (record / "stages" / "labels_s1.json").unlink()
    fresh = tmp_path / "fresh"
    proc = reproduce(fresh, shared_data, "--record", str(record))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    started = sorted(re.findall(r"\] (\S+): starting", proc.stdout))
    assert started == ["gd", "labels/s1"], started  # labels-only starts from GD and needs no teacher
    assert not (fresh / "teacher_s1").exists() and not (fresh / "td").exists()
    assert not (fresh / "data" / "aug" / "train.mindrecord").exists()
    assert "teacher/s1: in the record (" in proc.stdout and "td/s1: in the record (" in proc.stdout
    assert json.loads((record / "stages" / "labels_s1.json").read_text())["out"] == str(fresh)
    assert json.loads((record / "stages" / "teacher_s1.json").read_text())["rebuilds"] == []
    entry = json.loads((record / "stages" / "gd.json").read_text())
    assert entry["out"] == str(out) and len(entry["rebuilds"]) == 1
    rebuild, manifest = entry["rebuilds"][0], json.loads((fresh / "gd" / "manifest.json").read_text())
    assert rebuild["out"] == str(fresh) and rebuild["student_sha256"] == manifest["student_sha256"]
    assert isinstance(rebuild["identical"], bool) and rebuild["run_id"] == (fresh / "run_id").read_text().strip()
    table = (record / "results.md").read_text()
    assert "Sessions: the stages were trained in 2 run folders" in table and "gd (" in table
    after = json.loads((record / "results.json").read_text())
    assert all(row["seeds"] == [1] for row in after["rows"].values()) and after["complete"] is True
    # the rows the fresh folder did not train keep their recorded results; labels/s1 is the fresh folder's
    assert after["rows"]["td"] == recorded["rows"]["td"]
    trained = json.loads((fresh / "labels" / "s1" / "student_labels" / "dev.json").read_text())["sets"]["dev"]["score"]
    assert after["rows"]["labels"]["runs"]["1"]["dev"] == trained

    # a record refuses other knobs, as a run folder does
    proc = reproduce(tmp_path / "other", shared_data, "--record", str(record), "--aug_n", "3")
    assert proc.returncode == 2 and "plan.json: this folder was run with other knobs: aug_n 1 there, 3 now. Give " \
        "--record another folder" in proc.stderr, proc.stderr
    assert not (tmp_path / "other" / "plan.json").exists()  # refused before anything was written


@pytest.mark.slow
def test_paired_dev_predicts_every_run_as_the_table_scored_it_and_works_from_the_record_alone(smoke, tmp_path):
    """scripts/paired_dev.py on the smoke folder: one prediction string per finished run, each with the accuracy of
    that run's dev.json (the script refuses otherwise); the record keeps them and gives the same report alone."""
    out, _ = smoke
    record = tmp_path / "record"
    command = [sys.executable, os.path.join(ROOT, "scripts", "paired_dev.py")]
    env = dict(os.environ, GLOG_v="3")
    proc = subprocess.run(command + ["--out", str(out), "--record", str(record)], cwd=ROOT, capture_output=True,
                          text=True, timeout=900, env=env, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    kept = json.loads((record / "dev_predictions.json").read_text())
    assert sorted(kept["runs"]) == ["labels/s1", "td/s1", "td_aug/s1", "td_aug_3l384/s1", "td_aug_nogd/s1",
                                    "td_aug_sel/s1", "teacher/s1"]
    labels = kept["labels"]
    assert len(labels) == 96 and set(labels) <= {"0", "1"}
    results = json.loads((out / "results.json").read_text())["rows"]
    for key, predicted in kept["runs"].items():
        row = key.split("/")[0]
        accuracy = sum(p == y for p, y in zip(predicted, labels)) / len(labels)
        assert accuracy == pytest.approx(results[row]["runs"]["1"]["dev"], abs=1e-9), key
        assert f"| {key} | {100 * accuracy:.2f} |" in proc.stdout
    assert "| td_aug | labels | 1 |" in proc.stdout
    report = (record / "paired_dev.md").read_text()
    assert report == (out / "paired_dev.md").read_text()

    alone = subprocess.run(command + ["--record", str(record)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                           env=env, check=False)
    assert alone.returncode == 0, alone.stderr[-3000:]
    assert alone.stdout == report and "mindspore" not in alone.stderr.lower()


def _finished_stage(run_dir, digest, dev=None):
    """A finished run directory as the commands leave it: manifest, best.json, dev.json (dev accuracy `dev`)."""
    from src.training.manifest import Manifest  # pylint: disable=import-outside-toplevel

    os.makedirs(run_dir, exist_ok=True)
    Manifest(stage="finetune", config={}, started_from={}, status="finished", step=10, student_sha256=digest).write(
        str(run_dir))
    if dev is not None:
        (run_dir / "best.json").write_text(json.dumps({"step": 5, "metrics": {"score": 0.8}, "num_parameters": 100,
                                                       "model": {"num_hidden_layers": 4, "hidden_size": 312}}))
        (run_dir / "dev.json").write_text(json.dumps({"sets": {"dev": {"score": dev, "examples": 872}}}))


def test_a_record_tells_run_folders_apart_by_their_id_not_their_path(tmp_path):
    """A replaced machine makes its run folder at the same path: the record still sees another folder, records the
    rebuild of a stage it holds (identical or not), once, and counts two folders; entries without results do not
    count as recorded; stray files in stages/ are ignored."""
    module = load_script()
    record = module.Record(str(tmp_path / "record"))
    out = str(tmp_path / "run")
    first, second = module.run_id(out), None
    teacher = tmp_path / "run" / "teacher_s1" / "teacher"
    _finished_stage(teacher, "aaa", dev=0.88)
    record.keep("teacher/s1", str(teacher), {"kind": "teacher", "samples": 32, "seconds": 9.0}, out, first, ["c1"])
    record.keep("teacher/s1", str(teacher), None, out, first, ["c1"])  # the same folder again: nothing new
    assert record.has("teacher/s1") and record.entry("teacher/s1")["rebuilds"] == []
    assert record.progress() == {"teacher/s1": {"kind": "teacher", "samples": 32, "seconds": 9.0}}

    import shutil  # pylint: disable=import-outside-toplevel

    shutil.rmtree(out)  # the machine is replaced; the new folder has the same path and another id
    second = module.run_id(out)
    assert second != first
    _finished_stage(teacher, "bbb", dev=0.87)
    record.keep("teacher/s1", str(teacher), None, out, second, ["c2"])
    record.keep("teacher/s1", str(teacher), None, out, second, ["c2"])
    (tmp_path / "record" / "stages" / ".gitkeep").write_text("")
    entry = record.entry("teacher/s1")
    assert entry["run_id"] == first and entry["dev"]["sets"]["dev"]["score"] == 0.88  # the recorded result stays
    assert [(r["run_id"], r["identical"], r["dev"]) for r in entry["rebuilds"]] == [(second, False, 0.87)]
    assert record.rebuilds() == [{"stage": "teacher/s1", "identical": False, "dev": 0.87, "recorded_dev": 0.88}]
    assert record.outs() == sorted([first, second])

    # an entry written before run ids names its folder by path: that path is this folder, not a rebuild
    legacy = dict(record.entry("teacher/s1"), run_id=None, rebuilds=[])
    assert module.Record.folder(legacy, out, second) == second
    assert module.Record.folder(legacy, str(tmp_path / "elsewhere"), second) == out
    (tmp_path / "record" / "stages" / "teacher_s1.json").write_text(json.dumps(legacy))
    record.keep("teacher/s1", str(teacher), None, out, second, ["c2"])  # takes this folder's id: no rebuild
    assert record.entry("teacher/s1")["run_id"] == second and record.entry("teacher/s1")["rebuilds"] == []
    # a student entry without dev.json is not a result: its stage is trained again
    gd, labels = tmp_path / "run" / "gd", tmp_path / "run" / "labels" / "s1" / "student_labels"
    _finished_stage(gd, "ggg")
    _finished_stage(labels, "lll")
    record.keep("gd", str(gd), None, out, second, ["c2"])
    record.keep("labels/s1", str(labels), None, out, second, ["c2"])
    assert record.has("gd") and not record.has("labels/s1")
    assert record.row_runs({"seeds": [1]}, "labels") == {}
    # each entry names the machine that trained it (two "AMD EPYC" may differ in AVX-512); the table lists them
    here = module.machine()
    assert set(here) == {"cpu", "cpus", "isa", "python", "mindspore"}
    assert [(m["machine"], sorted(m["stages"])) for m in record.machines()] == [(here, ["gd", "labels/s1",
                                                                                          "teacher/s1"])]
    other = dict(record.entry("gd"), machine=dict(here, isa=["avx2"]), recorded="2099-01-01 00:00:00")
    (tmp_path / "record" / "stages" / "gd.json").write_text(json.dumps(other))
    assert [sorted(m["stages"]) for m in record.machines()] == [["labels/s1", "teacher/s1"], ["gd"]]
    line = next(line for line in module.markdown({
        "plan": {"seeds": [1], "holdout_sentences": 1, "config": "c", "labels_lr": 5e-5}, "rows": {}, "latency": None,
        "steps": {"teacher": 1, "gd": 1, "labels": 1, "phase1": 1, "phase2": 1}, "machine": here,
        "record": {"run_folders": record.outs(), "rebuilds": record.rebuilds(),
                   "machines": record.machines()}}).splitlines() if line.startswith("Machines: "))
    assert line.endswith(", avx2, Python {}, MindSpore {} (gd).".format(here["python"], here["mindspore"])), line


def test_each_row_waits_only_for_the_checkpoints_it_starts_from():
    module = load_script()
    assert module.needs("labels", "teacher/s1") == {"gd"}
    assert module.needs("td", "teacher/s1") == module.needs("td_aug", "teacher/s1") == {"gd", "teacher/s1"}
    for row in ("td_aug_nogd", "td_aug_3l384", "td_aug_sel"):
        assert module.needs(row, "teacher/s1") == {"teacher/s1"}, row
    assert module.needs("teacher", "teacher/s1") == set()


def test_latency_takes_any_finished_run_of_each_shape(tmp_path):
    """Latency needs the teacher and one finished run per student shape of the plan, from any row and seed (a folder
    whose seed-1 rows are in a record times seed 2's)."""
    module = load_script()
    layout = module.Layout(str(tmp_path))
    plan = {"rows": ["teacher", "labels", "td_aug", "td_aug_3l384"], "seeds": [1, 2]}
    teacher = layout.teacher(1)
    assert module.latency_models(layout, plan, teacher) is None
    _finished_stage(tmp_path / "teacher_s1" / "teacher", "t")
    _finished_stage(tmp_path / "labels" / "s2" / "student_labels", "l")
    assert module.latency_models(layout, plan, teacher) is None  # no 3 x 384 run yet
    _finished_stage(tmp_path / "td_aug_3l384" / "s2" / "phase2", "s")
    assert module.latency_models(layout, plan, teacher) == {
        "teacher": teacher, "4l312": layout.final_dir("labels", 2), "3l384": layout.final_dir("td_aug_3l384", 2)}
    _finished_stage(tmp_path / "td_aug" / "s1" / "phase2", "a")  # the recipe's own run is preferred when there
    assert module.latency_models(layout, plan, teacher)["4l312"] == layout.final_dir("td_aug", 1)


def _write_sst2(path, rows):
    path.write_text("sentence\tlabel\n" + "".join(f"{text} \t{label}\n" for text, label in rows), encoding="utf-8")


def test_split_holds_out_whole_sentences_and_drops_their_phrases(tmp_path):
    """Made-up SST-2 rows: two sentences with their phrases. The held-out sentence is one inside no other row;
    every train row inside it goes; a phrase of the other sentence stays; word boundaries count ("good" is not in
    "goods")."""
    module = load_script()
    train, dev = tmp_path / "train.tsv", tmp_path / "dev.tsv"
    _write_sst2(train, [("a good film", 1), ("good", 1), ("a good", 1), ("film", 1), ("the goods were bad", 0),
                        ("the goods", 0), ("were bad", 0), ("bad", 0)])
    _write_sst2(dev, [("fine", 1)])
    plan = {"holdout_sentences": 1, "train_rows": 0, "dev_rows": 0}
    paths = module.split_train(str(train), str(dev), str(tmp_path / "data"), plan)
    held = [l.split("\t")[0].strip() for l in open(paths["holdout"], encoding="utf-8").read().splitlines()[1:]]
    kept = [l.split("\t")[0].strip() for l in open(paths["train"], encoding="utf-8").read().splitlines()[1:]]
    assert held in (["a good film"], ["the goods were bad"])
    if held == ["a good film"]:
        assert kept == ["the goods were bad", "the goods", "were bad", "bad"]
    else:
        assert kept == ["a good film", "good", "a good", "film"]
    split = json.loads((tmp_path / "data" / "split.json").read_text())
    assert split == {"source_rows": 8, "holdout_sentences": 1, "dropped_inside_holdout": 3, "train_rows": 4,
                     "dev_rows": 1}
    with pytest.raises(SystemExit, match="only 2 whole sentences"):
        module.split_train(str(train), str(dev), str(tmp_path / "data2"), dict(plan, holdout_sentences=3))


def test_pool_keeps_each_train_row_once(tmp_path):
    module = load_script()
    train, aug_source = tmp_path / "train.tsv", tmp_path / "source.tsv"
    _write_sst2(train, [("a", 1), ("b", 0), ("b", 0), ("c", 1)])
    _write_sst2(aug_source, [("b", 0)])
    module.tsv_difference(str(train), str(aug_source), str(tmp_path / "rest.tsv"))
    assert (tmp_path / "rest.tsv").read_text(encoding="utf-8") == "sentence\tlabel\na \t1\nb \t0\nc \t1\n"
    augmented = tmp_path / "aug.tsv"
    _write_sst2(augmented, [("b", 0), ("bee", 0)])  # the original first, then a variant
    module.concat_tsv([str(augmented), str(tmp_path / "rest.tsv")], str(tmp_path / "pool.tsv"))
    module.write_pool_stats(str(train), str(tmp_path / "pool.tsv"), str(tmp_path / "pool.json"))
    assert json.loads((tmp_path / "pool.json").read_text()) == {"rows": 5, "originals": 4, "new": 1}


def test_bad_knobs_are_refused(tmp_path, shared_data):
    for extra, message in ((["--rows", "td,tdx"], "--rows: unknown ['tdx']"), (["--budget", "0"], "--budget: got 0"),
                           (["--seeds", ","], "--seeds: empty"), (["--aug_n", "0"], "--aug_n: got 0")):
        proc = reproduce(tmp_path / "x", shared_data, *extra)
        assert proc.returncode == 2 and message in proc.stderr, (extra, proc.stderr)


def test_summary_mean_std_gap_and_table():
    """Aggregation over seeds on made-up runs: sample std, share of the teacher, the row 4 - row 2 gap."""
    module = load_script()

    def runs(*accs, hidden=312, params=14.4e6, layers=4):
        return {str(i + 1): {"dev": a, "holdout": a, "best_step": 1, "steps": 2, "dev_examples": 872,
                             "parameters": params, "layers": layers, "hidden": hidden} for i, a in enumerate(accs)}

    made = {"teacher": runs(0.90, 0.92, 0.91, hidden=384, params=22.7e6, layers=6),
            "labels": runs(0.84, 0.85, 0.86), "td_aug": runs(0.88, 0.89, 0.87)}
    plan = {"seeds": [1, 2, 3], "rows": list(made), "holdout_sentences": 500, "aug_n": 2, "aug_rows": 0,
            "config": "td_config/sst2_tinybert4.yaml", "labels_lr": 5e-5, "code": ["abc123"]}

    class FakeLayout:
        pass

    module.row_runs = lambda layout, plan, row: {int(k): v for k, v in made[row].items()}
    latency = {"seconds": {"teacher": 0.030, "4l312": 0.010}, "repeats": 100, "cpus": 2, "load_average": [1.0],
               "format": "MINDIR"}
    rows = module.summarize(FakeLayout(), plan, {"labels/s1": {"seconds": 60.0, "kind": "labels", "samples": 1}},
                            latency)
    assert rows["teacher"]["dev_mean"] == pytest.approx(0.91) and rows["teacher"]["dev_std"] == pytest.approx(0.01)
    # against the teacher the students distilled from (seed 1's: 0.90), not the teachers' mean
    assert rows["td_aug"]["of_teacher"] == pytest.approx(0.88 / 0.90)
    assert rows["td_aug"]["speedup"] == pytest.approx(3.0) and rows["labels"]["train_seconds"] == 60.0
    assert rows["td_aug"]["vs_labels"]["gap"] == pytest.approx(0.03)
    assert rows["td_aug"]["vs_labels"]["larger_than_spread"] is True
    results = {"plan": plan, "rows": rows, "latency": latency, "machine": {"cpu": "x", "cpus": 2, "python": "3",
                                                                            "mindspore": "2"},
               "steps": {"teacher": 1, "gd": 1, "labels": 1, "phase1": 1, "phase2": 1}}
    table = module.markdown(results)
    assert "| 88.00 ± 1.00 (3) | 97.78% | 10.0 ms | 3.0x | 0m00s |" in table
    assert ("Row 4 - row 2: +3.00 points (larger than the larger of their stds; a rough guide over 3 seeds, not a "
            "significance test).") in table
    assert "Teacher: every student distils from the seed-1 teacher (dev 90.00)" in table and "Code: abc123." in table
    assert "Latency: exported MINDIR, batch 1, seq 64, median of 100 alternating calls" in table
    # one seed finished: a std of None is no spread, not a spread of zero
    made["labels"], made["td_aug"] = runs(0.84), runs(0.88)
    rows = module.summarize(FakeLayout(), plan, {}, latency)
    assert rows["td_aug"]["vs_labels"] == {"gap": pytest.approx(0.04), "larger_than_spread": None, "seeds": 1}
    table = module.markdown(dict(results, rows=rows))
    assert "Row 4 - row 2: +4.00 points (one seed so far: no spread to compare it with)." in table


def test_a_folder_takes_more_seeds_above_its_first_only(tmp_path):
    module = load_script()
    args = module.build_parser().parse_args(["--smoke", "--seeds", "2"])
    plan = module.check_plan(str(tmp_path), module.make_plan(args))
    assert plan["seeds"] == [2] and plan["code"]
    more = module.check_plan(str(tmp_path), module.make_plan(module.build_parser().parse_args(["--smoke", "--seeds", "3"])))
    assert more["seeds"] == [2, 3]
    with pytest.raises(ValueError, match="every student here distils from the seed-2 teacher, the folder's first seed"):
        module.check_plan(str(tmp_path), module.make_plan(module.build_parser().parse_args(["--smoke", "--seeds", "1"])))


def test_the_stopwatch_leaves_out_the_time_its_process_was_stopped(tmp_path):
    """A child times 3 s of sleep with ticks of 50 ms; this test stops it (SIGSTOP) for 2 s in the middle."""
    child = (f"import importlib.util, json, time\n"
             f"spec = importlib.util.spec_from_file_location('r', {SCRIPT!r})\n"
             f"m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
             f"m.Stopwatch.TICK, m.Stopwatch.STOP_GAP = 0.05, 0.5\n"
             f"saves = []\n"
             f"m.Stopwatch.SAVE_EVERY = 0.2\n"
             f"print('ready', flush=True)\n"
             f"with m.Stopwatch(lambda s, x: saves.append((s, x))) as w:\n"
             f"    end = time.monotonic() + 3.0\n"
             f"    while time.monotonic() < end:\n"
             f"        time.sleep(0.01)\n"
             f"print(json.dumps({{'wall': w.wall, 'seconds': w.seconds, 'stopped': w.stopped, 'saves': len(saves)}}))\n")
    proc = subprocess.Popen([sys.executable, "-c", child], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    import signal  # pylint: disable=import-outside-toplevel
    import time  # pylint: disable=import-outside-toplevel

    time.sleep(0.8)
    proc.send_signal(signal.SIGSTOP)
    time.sleep(2.0)
    proc.send_signal(signal.SIGCONT)
    out, _ = proc.communicate(timeout=60)
    timed = json.loads(out.strip().splitlines()[-1])
    # the loop ends 3 s after it began whatever happened (its deadline passed during the stop): wall ~3 s, of which
    # ~2 s stopped; without the stop-detection the stage would count 3 s
    assert 1.6 < timed["stopped"] < 2.3, timed
    assert timed["seconds"] == pytest.approx(timed["wall"] - timed["stopped"], abs=0.05)
    assert timed["seconds"] < 1.5 and timed["saves"] >= 2


def test_progress_adds_up_every_attempt_of_a_stage_and_keeps_an_interrupted_one(tmp_path):
    module = load_script()
    stages = [("labels/s1", "labels", 100, str(tmp_path / "labels"))]
    progress = module.Progress(str(tmp_path), stages)
    watch = progress.stopwatch("labels/s1")
    watch.on_save(40.0, 5.0)  # what the stopwatch's thread saves a minute in; then the attempt is killed (-9)
    assert json.loads((tmp_path / "attempts.json").read_text())["labels/s1"] == {
        "seconds": 40.0, "stopped_seconds": 5.0, "attempts": 1}

    class Timed:  # the second attempt's stopwatch, finished
        seconds, stopped = 60.0, 1.5

    again = module.Progress(str(tmp_path), stages)
    second = again.stopwatch("labels/s1")
    second.on_save(30.0, 1.0)  # the second attempt's own saves go to attempts.json too; record must not add them
    assert json.loads((tmp_path / "attempts.json").read_text())["labels/s1"]["seconds"] == 70.0
    again.record("labels/s1", "labels", 100, Timed())
    done = json.loads((tmp_path / "progress.json").read_text())["labels/s1"]
    assert done == {"kind": "labels", "samples": 100, "seconds": 100.0, "stopped_seconds": 6.5, "attempts": 2}
    assert json.loads((tmp_path / "attempts.json").read_text()) == {}
    assert again.rate("labels") == pytest.approx(1.0)
