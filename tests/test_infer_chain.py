"""The offline-inference chain on CPU: preprocess.py -> scripts/run_infer_cpu.py -> postprocess.py.

A tiny classifier (SST-2 dev rows) and a tiny NER tagger (CLUENER dev rows) are trained for a few steps on real
task records, saved, exported to MINDIR with src.ship.export, and run through the three commands as subprocesses
(and once through scripts/run_infer_310.sh with INFER_RUNNER=cpu). postprocess.py's metric must equal the metric
computed directly from the checkpoint's logits on the same records, including the padded last batch; the NER
results are read in the [B*S, C] layout the Ascend 310 program writes. Bad inputs (missing or truncated .bin
files, wrong task type, contradicting shapes) must fail with messages naming the file and the expected size.
"""
import dataclasses
import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor, nn, ops

from src.ship import export
from src.model.checkpoint import load_model, save_model
from src.data.dataset import create_tinybert_dataset
from src.metrics import evaluate
from src.model.heads import BertForSequenceClassification, BertForTokenClassification
from src.data.task_data import convert_task_data, load_label_map
from src.metrics import IGNORE_INDEX
from tests.conftest import ROOT, SHARED_DATA


EN_VOCAB = os.path.join(SHARED_DATA, "vocab", "bert-base-uncased-vocab.txt")
ZH_VOCAB = os.path.join(SHARED_DATA, "vocab", "bert-base-chinese-vocab.txt")
SST2_DEV = os.path.join(SHARED_DATA, "glue", "SST-2", "dev.tsv")
CLUENER_DEV = os.path.join(SHARED_DATA, "clue", "cluener", "dev.json")
COLUMNS = ["input_ids", "input_mask", "segment_ids", "label_ids"]
SEQ = 32
ENV = dict(os.environ, MS_COMPILER_CACHE_ENABLE="0", GLOG_v="3")
needs_data = pytest.mark.skipif(not os.path.isdir(SHARED_DATA), reason="shared data folder not present")


def run(script, *args, cwd, ok=True, env=None):
    """Run one of the project's commands as a user would; returns the CompletedProcess."""
    command = ["bash" if script.endswith(".sh") else sys.executable, os.path.join(ROOT, script), *map(str, args)]
    proc = subprocess.run(command, cwd=cwd, env=env or ENV, capture_output=True, text=True, timeout=900)
    if ok:
        assert proc.returncode == 0, f"{script} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    else:
        assert proc.returncode != 0, f"{script} should have failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def head_of_file(src, dst, lines):
    with open(src, encoding="utf-8") as f, open(dst, "w", encoding="utf-8") as out:
        out.writelines(itertools.islice(f, lines))
    return str(dst)


def batches(files, batch_size):
    """Eval batches as the records give them (no shuffling, last batch kept): (ids, types, mask, labels)."""
    dataset = create_tinybert_dataset(files, COLUMNS, batch_size, SEQ, shuffle=False, drop_remainder=False)
    return [(b["input_ids"], b["segment_ids"], b["input_mask"], b["label_ids"])
            for b in dataset.create_dict_iterator(output_numpy=True)]


def trainable(config, vocab_size):
    """The tiny config with a real vocabulary and no dropout, so a few steps already fit the rows."""
    return dataclasses.replace(config, vocab_size=vocab_size, hidden_dropout_prob=0.0,
                               attention_probs_dropout_prob=0.0)


def train_a_little(net, data, steps, lr=1e-2):
    """A few jit-compiled Adam steps so the model predicts something better than chance (token CE, -1 ignored)."""
    ms.set_seed(0)
    net.set_train(True)
    optimizer = nn.Adam(net.trainable_params(), learning_rate=lr)

    def loss_fn(ids, types, mask, labels):
        logits = net(ids, types, mask)[0]
        return ops.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX)

    grad_fn = ms.value_and_grad(loss_fn, None, optimizer.parameters)

    @ms.jit
    def step(ids, types, mask, labels):
        loss, grads = grad_fn(ids, types, mask, labels)
        optimizer(grads)
        return loss

    tensors = [tuple(Tensor(a) for a in batch) for batch in data]
    for index in range(steps):
        step(*tensors[index % len(tensors)])
    net.set_train(False)


def direct_metric(checkpoint, data, metric, names):
    """The metric from the checkpoint itself (training graph, eval mode) on every record, and its logits."""
    net = load_model(checkpoint)
    net.set_train(False)
    logits = np.concatenate([net(Tensor(i), Tensor(t), Tensor(m))[0].asnumpy() for i, t, m, _ in data])
    labels = np.concatenate([batch[3] for batch in data])
    return evaluate(metric, logits, labels, names), logits


def read_result_logits(result_dir, batch_size, num_batches, shape):
    return np.concatenate([np.fromfile(os.path.join(result_dir, f"tinybert_bs{batch_size}_{i}_0.bin"),
                                       np.float32).reshape(shape) for i in range(num_batches)])


@pytest.mark.slow
@needs_data
def test_classification_chain_matches_checkpoint_metric(tiny_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a failed graph compile writes rank_0/ into the working directory
    # 37 SST-2 dev rows in batches of 8: 4 full batches and one of 5 rows padded with 3.
    src = head_of_file(SST2_DEV, tmp_path / "dev.tsv", 38)
    summary = convert_task_data("sst2", src, str(tmp_path / "data" / "dev.mindrecord"), EN_VOCAB, SEQ)
    config = trainable(tiny_config, vocab_size=30522)  # the real uncased vocabulary
    ms.set_seed(0)
    net = BertForSequenceClassification(config, num_labels=2)
    data = batches(summary.files, 8)
    train_a_little(net, data, steps=25)
    checkpoint = save_model(net, str(tmp_path / "cls.ckpt"))
    mindir = export.export_checkpoint(checkpoint, "MINDIR", str(tmp_path / "cls"), batch_size=8, seq_length=SEQ)

    out = run("preprocess.py", "--eval_data_file", summary.files[0], "--task_type", "classification",
              "--model_file", mindir, "--result_path", "pre", cwd=tmp_path)
    assert "5 batches of 8 x 32 (37 rows, 3 padding rows in the last batch)" in out.stdout
    meta = json.load(open(tmp_path / "pre" / "meta.json"))
    assert (meta["num_rows"], meta["num_batches"], meta["pad_rows_last_batch"]) == (37, 5, 3)
    assert meta["metric"] == "accuracy" and meta["num_labels"] == 2
    last_ids = np.fromfile(tmp_path / "pre" / "00_input_ids" / "tinybert_bs8_4.bin", np.int32).reshape(8, SEQ)
    assert (last_ids[:5] == data[4][0]).all() and (last_ids[5:] == 0).all()
    last_mask = np.fromfile(tmp_path / "pre" / "02_attention_mask" / "tinybert_bs8_4.bin", np.int32).reshape(8, SEQ)
    assert (last_mask[:5] == data[4][2]).all()
    last_labels = np.fromfile(tmp_path / "pre" / "label_ids" / "tinybert_bs8_4.bin", np.int32)
    assert last_labels[:5].tolist() == data[4][3].tolist() and last_labels[5:].tolist() == [IGNORE_INDEX] * 3

    out = run("scripts/run_infer_cpu.py", "--mindir_path", mindir, "--input_path", "pre", "--result_path", "res",
              cwd=tmp_path)
    assert "NN inference cost average time:" in out.stdout and "infer_count 5" in out.stdout
    out = run("postprocess.py", "--preprocess_path", "pre", "--result_path", "res", "--output", "metric.json",
              cwd=tmp_path)
    result = json.load(open(tmp_path / "metric.json"))

    expected, logits = direct_metric(checkpoint, data, "accuracy", ["0", "1"])
    assert result["examples"] == expected["examples"] == 37  # padding rows dropped, no real row dropped
    assert result["score"] == expected["score"], (result, expected)
    assert f"accuracy: {expected['score']:.6f} (37 examples, 5 batches)" in out.stdout
    assert expected["score"] > 0.6  # the few training steps did something, so a misaligned row would show
    written = read_result_logits(tmp_path / "res", 8, 5, (8, 2))
    np.testing.assert_allclose(written[:37], logits, atol=1e-5)

    # The same chain through the 310 launcher, with the CPU runner standing in for the C++ program.
    env = dict(ENV, INFER_RUNNER="cpu", PYTHON=sys.executable, INFER_OUTPUT_DIR=str(tmp_path / "sh"))
    out = run("scripts/run_infer_310.sh", mindir, summary.files[0], "classification", cwd=tmp_path, env=env)
    assert f"accuracy: {expected['score']:.6f} (37 examples, 5 batches)" in open(tmp_path / "sh" / "acc.log").read()
    assert json.load(open(tmp_path / "sh" / "metric.json"))["score"] == expected["score"]
    # The model zoo's eight arguments: MINDIR DATASET_PATH (a folder) SCHEMA_DIR DATASET_TYPE TASK_NAME
    # ASSESSMENT_METHOD NEED_PREPROCESS DEVICE_ID; then n reuses the preprocessed batches.
    env = dict(env, INFER_OUTPUT_DIR=str(tmp_path / "zoo"))
    folder = os.path.dirname(summary.files[0])
    for need in ("y", "n"):
        out = run("scripts/run_infer_310.sh", mindir, folder, "", "mindrecord", "SST-2", "accuracy", need, "0",
                  cwd=tmp_path, env=env)
        assert ("== preprocess" in out.stdout) == (need == "y")
        assert json.load(open(tmp_path / "zoo" / "metric.json"))["score"] == expected["score"]
    proc = subprocess.run(["bash", os.path.join(ROOT, "scripts", "run_infer_310.sh"), mindir, folder, "", "mindrecord",
                           "COLA", "accuracy", "y"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert proc.returncode == 1 and "TASK_NAME 'COLA'; expected SST-2, QNLI, MNLI, TNEWS or CLUENER" in proc.stderr


@pytest.mark.slow
@needs_data
def test_ner_chain_reads_bs_times_seq_logits(tiny_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # 13 CLUENER dev rows in batches of 4: the last batch has 1 real row and 3 padding rows.
    src = head_of_file(CLUENER_DEV, tmp_path / "dev.json", 13)
    summary = convert_task_data("cluener", src, str(tmp_path / "data" / "dev.mindrecord"), ZH_VOCAB, SEQ)
    names = load_label_map(summary.labels_file)
    config = trainable(tiny_config, vocab_size=21128)  # bert-base-chinese vocabulary
    ms.set_seed(0)
    net = BertForTokenClassification(config, num_labels=len(names))
    data = batches(summary.files, 4)
    train_a_little(net, data, steps=60)  # seed 0: entity F1 about 0.7, neither 0 nor a perfect fit
    checkpoint = save_model(net, str(tmp_path / "ner.ckpt"))
    mindir = export.export_checkpoint(checkpoint, "MINDIR", str(tmp_path / "ner"), batch_size=4, seq_length=SEQ)

    run("preprocess.py", "--eval_data_file", summary.files[0], "--task_type", "ner", "--model_file", mindir,
        "--result_path", "pre", cwd=tmp_path)
    meta = json.load(open(tmp_path / "pre" / "meta.json"))
    assert (meta["num_rows"], meta["num_batches"], meta["metric"], meta["labels"]["shape"]) == (13, 4, "entity_f1",
                                                                                              [4, SEQ])
    run("scripts/run_infer_cpu.py", "--mindir_path", mindir, "--input_path", "pre", "--result_path", "res",
        cwd=tmp_path)
    # What a runner writes for NER is B*S rows of C float32 logits (the 310 layout that broke the reference).
    assert os.path.getsize(tmp_path / "res" / "tinybert_bs4_0_0.bin") == 4 * SEQ * len(names) * 4
    out = run("postprocess.py", "--preprocess_path", "pre", "--result_path", "res", cwd=tmp_path)
    result = json.load(open(tmp_path / "res" / "metric.json"))

    expected, logits = direct_metric(checkpoint, data, "entity_f1", names)
    for key in ("score", "precision", "recall", "token_accuracy", "examples"):
        assert result[key] == expected[key], (key, result[key], expected[key])
    assert result["examples"] == 13 and expected["score"] > 0  # entities found, so the spans really are compared
    assert f"entity_f1: {expected['score']:.6f} (13 examples, 4 batches)" in out.stdout

    import postprocess  # pylint: disable=import-outside-toplevel
    collected = postprocess.collect(str(tmp_path / "pre"), str(tmp_path / "res"))
    assert collected["logits"].shape == (13 * SEQ, len(names)) and collected["labels"].shape == (13, SEQ)
    np.testing.assert_allclose(collected["logits"], logits.reshape(13 * SEQ, -1), atol=1e-5)


@pytest.fixture(scope="module")
def sst2_bins(tmp_path_factory):
    """SST-2 records (21 rows, seq 32) and their preprocess output in batches of 8 (3 batches, 3 padding rows)."""
    base = tmp_path_factory.mktemp("bins")
    src = head_of_file(SST2_DEV, base / "dev.tsv", 22)
    summary = convert_task_data("sst2", src, str(base / "data" / "dev.mindrecord"), EN_VOCAB, SEQ)
    run("preprocess.py", "--eval_data_file", summary.files[0], "--task_type", "classification", "--batch_size", 8,
        "--seq_length", SEQ, "--result_path", "pre", cwd=base)
    return base, summary.files[0]


def fake_results(base, name="res", rows=8, classes=2):
    """Result files as a runner would write them (random logits), one per batch."""
    result_dir = base / name
    result_dir.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        rng.standard_normal((rows, classes)).astype(np.float32).tofile(result_dir / f"tinybert_bs8_{i}_0.bin")
    return result_dir


@pytest.mark.slow
@needs_data
def test_postprocess_missing_and_truncated_result_files(sst2_bins):
    base, _ = sst2_bins
    result_dir = fake_results(base)
    out = run("postprocess.py", "--preprocess_path", "pre", "--result_path", "res", cwd=base)
    assert "accuracy:" in out.stdout and "(21 examples, 3 batches)" in out.stdout

    (result_dir / "tinybert_bs8_1_0.bin").unlink()
    err = run("postprocess.py", "--preprocess_path", "pre", "--result_path", "res", cwd=base, ok=False).stderr
    assert "tinybert_bs8_1_0.bin: missing" in err
    assert "float32 logits of batch 1 of 3: float32 [8x2] = 64 bytes" in err

    np.zeros(8 * 2 - 3, np.float32).tofile(result_dir / "tinybert_bs8_1_0.bin")  # 52 bytes
    err = run("postprocess.py", "--preprocess_path", "pre", "--result_path", "res", cwd=base, ok=False).stderr
    assert "tinybert_bs8_1_0.bin: 52 bytes; expected float32 logits of batch 1 of 3: float32 [8x2] = 64 bytes" in err

    # Logits written for another label count are refused, not silently reshaped.
    fake_results(base, "res3", classes=3)
    err = run("postprocess.py", "--preprocess_path", "pre", "--result_path", "res3", cwd=base, ok=False).stderr
    assert "tinybert_bs8_0_0.bin: 96 bytes; expected" in err and "= 64 bytes" in err

    err = run("postprocess.py", "--preprocess_path", "nowhere", "--result_path", "res", cwd=base, ok=False).stderr
    assert "meta.json: missing" in err


@pytest.mark.slow
@needs_data
def test_cpu_runner_rejects_truncated_input_and_wrong_shapes(sst2_bins, tiny_config, tmp_path, monkeypatch):
    base, _ = sst2_bins
    monkeypatch.chdir(tmp_path)
    checkpoint = save_model(BertForSequenceClassification(dataclasses.replace(tiny_config, vocab_size=30522), 2),
                            str(tmp_path / "cls.ckpt"))
    pre = tmp_path / "pre"
    subprocess.run(["cp", "-r", str(base / "pre"), str(pre)], check=True)
    # A .ckpt runs through the same contract (any batch size), which keeps this test free of an export.
    run("scripts/run_infer_cpu.py", "--mindir_path", checkpoint, "--input_path", pre, "--result_path", "ok",
        cwd=tmp_path)
    assert sorted(os.listdir(tmp_path / "ok")) == [f"tinybert_bs8_{i}_0.bin" for i in range(3)]

    victim = pre / "01_token_type_ids" / "tinybert_bs8_2.bin"
    victim.write_bytes(victim.read_bytes()[:100])
    err = run("scripts/run_infer_cpu.py", "--mindir_path", checkpoint, "--input_path", pre, "--result_path", "bad",
              cwd=tmp_path, ok=False).stderr
    assert f"{victim}: 100 bytes; expected int32 token_type_ids batch: int32 [8x32] = 1024 bytes" in err

    victim.unlink()
    err = run("scripts/run_infer_cpu.py", "--mindir_path", checkpoint, "--input_path", pre, "--result_path", "bad",
              cwd=tmp_path, ok=False).stderr
    assert "01_token_type_ids: its .bin files differ from those of" in err and "tinybert_bs8_2.bin" in err

    err = run("scripts/run_infer_cpu.py", "--mindir_path", tmp_path / "absent.mindir", "--input_path", pre,
              cwd=tmp_path, ok=False).stderr
    assert "--mindir_path" in err and "absent.mindir does not exist" in err


@needs_data
def test_preprocess_refuses_inconsistent_flags(sst2_bins, tmp_path):
    base, records = sst2_bins
    err = run("preprocess.py", "--eval_data_file", records, "--task_type", "ner", "--seq_length", SEQ,
              "--result_path", "x", cwd=tmp_path, ok=False).stderr
    assert "--task_type ner: label_ids in" in err and "use --task_type classification" in err

    err = run("preprocess.py", "--eval_data_file", records, "--task_type", "classification", "--seq_length", 64,
              "--result_path", "x", cwd=tmp_path, ok=False).stderr
    assert "column 'input_ids' has shape [32]; expected [64]" in err

    info = tmp_path / "m.mindir.json"  # what export.py writes beside a batch-8, seq-32 export
    info.write_text(json.dumps({"format": "tinybert-mindspore-export", "batch_size": 8, "seq_length": SEQ,
                                "head": {"type": "sequence_classification", "num_labels": 3}}))
    err = run("preprocess.py", "--eval_data_file", records, "--task_type", "classification", "--model_file",
              tmp_path / "m.mindir", "--batch_size", 16, "--result_path", "x", cwd=tmp_path, ok=False).stderr
    assert "--batch_size 16 contradicts" in err and "batch_size 8" in err
    err = run("preprocess.py", "--eval_data_file", records, "--task_type", "classification", "--model_file",
              tmp_path / "m.mindir", "--result_path", "x", cwd=tmp_path, ok=False).stderr
    assert "has 3 labels" in err and "has 2: they are not for the same task" in err

    err = run("preprocess.py", "--eval_data_file", records, "--task_type", "classification", "--seq_length", SEQ,
              "--labels_file", tmp_path / "none.json", "--result_path", "x", cwd=tmp_path, ok=False).stderr
    assert "--labels_file" in err and "none.json does not exist" in err
