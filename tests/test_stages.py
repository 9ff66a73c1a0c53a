"""The stages in-process on a tiny model and a real SST-2 slice (the fast tier's end-to-end test): fine-tuning the
teacher, phase 1, phase 2 (with the teacher-logit store), evaluation, the run directories they write, resuming a
finished stage, the command-line plumbing, and the offline .bin contract of the same records."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from src.config import ConfigError, load_config
from src.data.task_data import convert_task_data
from src.infra.runtime import Runtime
from src.model.heads import BertForSequenceClassification, build_model
from src.model import checkpoint as ckpt
from src.ship import offline
from src.training import cli, stages
from src.training.manifest import Manifest
from src.training.networks import stage_dirs
from src.data.records import records_vocab
from src.data.vocab import VocabMismatch, fingerprint
from conftest import ROOT, SHARED_DATA

TINY = dict(vocab_size=30522, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
            max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
STUDENT = dict(TINY, num_hidden_layers=1)
RUNTIME = Runtime(rank=0, world_size=1, device_target="CPU", graph=False)


def lines(src, dst, rows):
    with open(src, encoding="utf-8") as f:
        dst.write_text("".join(f.readline() for _ in range(rows + 1)), encoding="utf-8")
    return str(dst)


@pytest.fixture(scope="module")
def td_run(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("stages")
    vocab = os.path.join(shared_data, "vocab", "bert-base-uncased-vocab.txt")
    for split, rows in (("train", 48), ("dev", 20)):
        src = lines(os.path.join(shared_data, "glue", "SST-2", f"{split}.tsv"), root / f"{split}.tsv", rows)
        convert_task_data("sst2", src, str(root / f"{split}.mindrecord"), vocab, seq_length=24)
    pretrained = build_model(load_config_dict(root, {}).teacher, "backbone")
    ckpt.save_model(pretrained, str(root / "pretrained.ckpt"))
    return root


def load_config_dict(root, extra):
    cfg = {
        "task": {"name": "SST-2", "num_labels": 2, "labels": ["0", "1"]},
        "run": {"output_dir": str(root / "out"), "mode": "pynative", "seed": 3, "data_seed": 4},
        "data": {"train_files": [str(root / "train.mindrecord")], "eval_files": [str(root / "dev.mindrecord")],
                 "seq_length": 24, "bucket_boundaries": [16]},
        "checkpoint": {"pretrained": str(root / "pretrained.ckpt")},
        "teacher": TINY, "student": STUDENT,
        "distill": {"layer_map": [[0, 0], [1, 2]]},
        "td": {"finetune": {"epochs": 1, "batch_size": 8, "lr": 1e-3, "log_steps": 2},
               "phase1": {"epochs": 1, "batch_size": 8, "lr": 1e-3, "log_steps": 2, "save_steps": 4},
               "phase2": {"epochs": 1, "batch_size": 8, "lr": 1e-3, "log_steps": 2}},
    }
    for key, value in extra.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    path = root / "td.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return load_config(str(path), kind="td")


def test_every_td_stage_runs_in_process_and_writes_its_run_directory(td_run, capsys):
    cfg = load_config_dict(td_run, {})
    teacher = stages.run_finetune(cfg, RUNTIME, "teacher", progress=False)
    assert isinstance(teacher, Manifest) and teacher.finished and teacher.step == teacher.total_steps >= 4
    phase1 = stages.run_phase1(cfg, RUNTIME, progress=False)
    assert phase1.layer_map == [[0, 0], [1, 2]] and phase1.checkpoints.fit_dense == "fit_dense.ckpt"
    assert phase1.teacher_logits["rows"] == 48  # every training row, the dropped last batches included
    phase2 = stages.run_phase2(cfg, RUNTIME, progress=False)
    assert phase2.teacher_logits["from_phase1"] == 48 and phase2.checkpoints.best == "best.ckpt"
    dirs = stage_dirs(cfg)
    for name in ("teacher", "phase1", "phase2"):
        written = Manifest.read(dirs[name])
        assert written.finished and written.student_sha256 and written.schema_version == 1
        rows = [json.loads(line) for line in open(os.path.join(dirs[name], "metrics.jsonl"), encoding="utf-8")]
        train = [r for r in rows if r["type"] == "train"]
        assert train and all(np.isfinite(r["loss"]) and r["samples_per_s"] > 0 for r in train)
    # the labels of the dev set are scored for every example, with the task's metric
    result = stages.run_eval(cfg, dirs["phase2"])
    assert result["sets"]["dev"]["examples"] == 20 and 0.0 <= result["score"] <= 1.0
    assert result["score"] == phase2.metrics.best["score"]
    # a finished stage is not run again; the command-line summary names its files
    again = stages.run_phase2(cfg, RUNTIME, progress=False)
    assert again.step == phase2.step and again.student_sha256 == phase2.student_sha256
    cli.finish(dirs["phase2"], again, RUNTIME)
    out = capsys.readouterr().out
    assert "finished phase2" in out and "best eval:  accuracy" in out
    student = ckpt.load_model(os.path.join(dirs["phase2"], "best.ckpt"))
    assert isinstance(student, BertForSequenceClassification) and student.config.num_hidden_layers == 1
    # every student checkpoint names the records' vocabulary, for predict.py and export to check
    records = records_vocab(str(td_run / "train.mindrecord"))
    assert records["size"] == 30522
    for name in ("teacher", "phase1", "phase2"):
        assert ckpt.read_metadata(os.path.join(dirs[name], "last.ckpt"))["vocab"] == records, name
    assert ckpt.read_metadata(os.path.join(dirs["phase2"], "best.ckpt"))["vocab"] == records


def test_resume_reads_the_config_saved_in_the_manifest(td_run):
    path = cli._config_from_run(os.path.join(str(td_run), "out", "teacher"), "td")  # pylint: disable=protected-access
    assert load_config(path, kind="td").td.finetune.lr == 1e-3
    with pytest.raises(FileNotFoundError, match="no manifest.json there"):
        cli._config_from_run(str(td_run), "td")  # pylint: disable=protected-access


def test_a_finished_run_directory_goes_out_to_hugging_face(td_run, tmp_path, capsys):
    """scripts/convert_checkpoint.py to-hf on the phase-2 run of the first test: TinyBERT's ReLU head is refused
    by name; its encoder goes out as BertModel with the records' vocabulary."""
    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    try:
        import convert_checkpoint  # pylint: disable=import-outside-toplevel
    finally:
        sys.path.pop(0)
    run_dir = os.path.join(str(td_run), "out", "phase2")
    assert convert_checkpoint.main(["to-hf", "--input", run_dir, "--output", str(tmp_path / "cls")]) == 2
    assert "ReLU(pooled output)" in capsys.readouterr().err and not (tmp_path / "cls").exists()
    assert convert_checkpoint.main(["to-hf", "--input", run_dir, "--output", str(tmp_path / "enc"),
                                    "--head", "backbone"]) == 0
    printed = capsys.readouterr().out
    assert "config.json, model.safetensors" in printed
    from src.ship.hf import _hf_available  # pylint: disable=import-outside-toplevel
    missing = _hf_available()  # torch + transformers (requirements-hf.txt): installed by setup.sh and in CI
    assert ("check: max |transformers BertModel - ours| = " in printed) if not missing else \
        (f"check: skipped ({missing})" in printed)
    config = json.loads((tmp_path / "enc" / "config.json").read_text())
    assert config["architectures"] == ["BertModel"] and config["num_hidden_layers"] == 1
    assert (tmp_path / "enc" / "vocab.txt").read_bytes() == open(os.path.join(SHARED_DATA, "vocab",
                                                                              "bert-base-uncased-vocab.txt"),
                                                                 "rb").read()


def test_offline_bins_hold_every_row_and_round_trip(td_run, tmp_path):
    meta = offline.write_bins([str(td_run / "dev.mindrecord")], str(tmp_path), 8, 24, "classification",
                              str(td_run / "labels.json"), "accuracy")
    assert (meta["num_rows"], meta["num_batches"], meta["pad_rows_last_batch"]) == (20, 3, 4)
    assert offline.read_meta(str(tmp_path))["num_rows"] == 20
    ids = offline.read_bin(os.path.join(str(tmp_path), offline.INPUT_DIRS[0], offline.batch_file_name(8, 2)),
                           np.int32, [8, 24], "input_ids")
    labels = offline.read_bin(os.path.join(str(tmp_path), offline.LABEL_DIR, offline.batch_file_name(8, 2)),
                              np.int32, [8], "labels")
    assert ids[:4].any() and not ids[4:].any() and (labels[4:] == -1).all()  # padding rows: 0 inputs, label -1


def test_missing_or_mismatched_records_are_refused_before_the_run_directory_exists(td_run, tmp_path):
    out = tmp_path / "out"
    cfg = load_config_dict(td_run, {"run": {"output_dir": str(out)},
                                    "data": {"train_files": [str(td_run / "absent.mindrecord")]}})
    with pytest.raises(FileNotFoundError, match=r"record file '.*absent\.mindrecord' does not exist"):
        stages.run_finetune(cfg, RUNTIME, "teacher", progress=False)
    cfg = load_config_dict(td_run, {"run": {"output_dir": str(out)}, "data": {"seq_length": 32}})
    with pytest.raises(ValueError, match=r"train\.mindrecord: column 'input_ids' has shape \[24\]; expected \[32\]"):
        stages.run_finetune(cfg, RUNTIME, "teacher", progress=False)
    cfg = load_config_dict(td_run, {"run": {"output_dir": str(out)},
                                    "data": {"eval_files": [str(td_run / "absent_dev.mindrecord")]}})
    with pytest.raises(FileNotFoundError, match=r"absent_dev\.mindrecord' does not exist"):
        stages.run_finetune(cfg, RUNTIME, "teacher", progress=False)
    assert not out.exists()  # no empty OUT/teacher/ left behind


def test_records_or_checkpoints_of_another_vocabulary_are_refused_before_the_run_directory_exists(td_run,
                                                                                                   tmp_path):
    src = os.path.join(SHARED_DATA, "glue", "SST-2", "train.tsv")
    zh_vocab = os.path.join(SHARED_DATA, "vocab", "bert-base-chinese-vocab.txt")
    zh = str(tmp_path / "zh" / "train.mindrecord")
    convert_task_data("sst2", lines(src, tmp_path / "train.tsv", 16), zh, zh_vocab, seq_length=24)
    out = tmp_path / "out"
    cfg = load_config_dict(td_run, {"run": {"output_dir": str(out)}, "data": {"train_files": [zh]}})
    with pytest.raises(VocabMismatch, match=r"data.eval_files .*dev.mindrecord \(30522 tokens.* is not the "
                                            f"vocabulary of data.train_files {zh} \\(21128 tokens.* must come "
                                            f"from one vocab.txt"):
        stages.run_finetune(cfg, RUNTIME, "teacher", progress=False)
    cfg = load_config_dict(td_run, {"run": {"output_dir": str(out)},
                                    "data": {"train_files": [zh], "eval_files": []}})
    with pytest.raises(VocabMismatch, match=f"data.train_files {zh} has 21128 tokens but the config's "
                                            f"teacher.vocab_size is 30522"):
        stages.run_finetune(cfg, RUNTIME, "teacher", progress=False)
    # the same size, another vocabulary: a pre-trained checkpoint recorded with the Chinese one
    other = ckpt.save_model(build_model(cfg.teacher, "backbone"), str(tmp_path / "other.ckpt"),
                            extra={"vocab": fingerprint(zh_vocab)})
    cfg = load_config_dict(td_run, {"run": {"output_dir": str(out)}, "checkpoint": {"pretrained": other}})
    with pytest.raises(VocabMismatch, match=f"the model checkpoint {other} .* is not the vocabulary of "
                                            f"data.train_files .*train.mindrecord"):
        stages.run_finetune(cfg, RUNTIME, "teacher", progress=False)
    assert not out.exists()


def test_an_output_folder_under_a_file_is_refused_at_load(td_run, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match=r"run\.output_dir: .*a_file/out cannot be a folder: .*a_file is a file"):
        load_config_dict(td_run, {"run": {"output_dir": str(blocker / "out")}})


@pytest.mark.slow
def test_commands_report_bad_input_in_one_line(td_run, tmp_path):
    load_config_dict(td_run, {"run": {"output_dir": str(tmp_path / "out")}, "data": {"seq_length": 32}})
    env = dict(os.environ, PYTHONPATH=ROOT, GLOG_v="3")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "run_task_distill.py"), "--config",
                           str(td_run / "td.yaml"), "--phase", "finetune", "--no_progress"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ") and "expected [32]" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_the_student_trains_with_dropout_and_the_teacher_without(td_run, tmp_path, monkeypatch):
    """A Cell starts in eval mode (dropout off): every training step must see the trained network in training mode
    and the frozen teacher in eval mode (before the fix, every stage trained with dropout off)."""
    from src.training.step import TrainStep  # pylint: disable=import-outside-toplevel

    seen = []
    original = TrainStep.step

    def step(self, *batch):
        teacher = getattr(self.loss_net, "teacher", None)
        seen.append((self.loss_net.student.training, None if teacher is None else teacher.training))
        return original(self, *batch)

    monkeypatch.setattr(TrainStep, "step", step)
    cfg = load_config_dict(td_run, {"run": {"output_dir": str(tmp_path / "out")},
                                    "teacher": dict(TINY, hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3),
                                    "student": dict(STUDENT, hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3)})
    stages.run_finetune(cfg, RUNTIME, "teacher", progress=False)  # evaluates between steps (eval mode and back)
    assert seen and set(seen) == {(True, None)}
    seen.clear()
    stages.run_phase1(cfg, RUNTIME, progress=False)
    assert seen and set(seen) == {(True, False)}
    seen.clear()
    stages.run_phase2(cfg, RUNTIME, progress=False)  # stored teacher logits: no teacher in the loss net
    assert seen and set(seen) == {(True, None)}
