"""Evaluation during training: every example scored, several eval sets (MNLI matched / mismatched), entity F1
for NER on real CLUENER records, and teacher fine-tuning of the real all-MiniLM-L6-v2 on SST-2."""
import json
import os
import subprocess
import sys

import numpy as np
import mindspore as ms
from mindspore import nn
from mindspore.mindrecord import FileReader
import pytest
import yaml

from src.model import checkpoint as ckpt
from src.config import BertConfig, DataConfig
from src.metrics import evaluate
from src.model.heads import BertForSequenceClassification, BertForTokenClassification
from src.data.task_data import convert_task_data, load_label_map
from src.training.evaluation import Evaluator, eval_sets_from

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def head_lines(src, dst, count):
    with open(src, encoding="utf-8") as f:
        lines = f.read().splitlines()[:count]
    dst.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(dst)


def test_evaluator_scores_every_example_of_each_set(tmp_path, shared_data):
    vocab = os.path.join(shared_data, "vocab", "bert-base-uncased-vocab.txt")
    dev = os.path.join(shared_data, "glue", "SST-2", "dev.tsv")
    lines = open(dev, encoding="utf-8").read().splitlines()
    (tmp_path / "m").mkdir()
    (tmp_path / "mm").mkdir()
    (tmp_path / "m" / "dev_matched.tsv").write_text("\n".join(lines[:38]) + "\n", encoding="utf-8")
    (tmp_path / "mm" / "dev_mismatched.tsv").write_text("\n".join([lines[0]] + lines[40:61]) + "\n",
                                                        encoding="utf-8")
    for name, folder in (("dev_matched", "m"), ("dev_mismatched", "mm")):
        convert_task_data("sst2", str(tmp_path / folder / f"{name}.tsv"),
                          str(tmp_path / folder / f"{name}.mindrecord"), vocab, seq_length=24)
    ms.set_seed(1)
    net = BertForSequenceClassification(BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1,
                                                   num_attention_heads=2, intermediate_size=20), 2)
    files = [str(tmp_path / "m" / "dev_matched.mindrecord"), str(tmp_path / "mm" / "dev_mismatched.mindrecord")]
    sets = eval_sets_from(files)
    assert [s.name for s in sets] == ["dev_matched", "dev_mismatched"]
    evaluator = Evaluator(net, sets, DataConfig(seq_length=24), batch_size=8, metric="accuracy")
    net.set_train(True)
    result = evaluator()
    assert net.training  # restored after evaluation
    assert result["select_set"] == "dev_matched" and result["score"] == result["sets"]["dev_matched"]["score"]
    assert result["sets"]["dev_matched"]["examples"] == 37  # 4 full batches + 5: nothing dropped
    assert result["sets"]["dev_mismatched"]["examples"] == 21
    logits, labels = evaluator.logits_and_labels([files[1]])
    assert logits.shape == (21, 2)
    assert result["sets"]["dev_mismatched"]["accuracy"] == pytest.approx(np.mean(logits.argmax(-1) == labels))


class ShapeSpy(nn.Cell):
    """The wrapped network, recording the input shapes it is called with."""

    def __init__(self, net):
        super().__init__()
        self.net = net
        self.shapes = []

    def construct(self, ids, segments, mask):
        self.shapes.append(tuple(ids.shape))
        return self.net(ids, segments, mask)


@pytest.mark.slow
def test_evaluator_buckets_and_short_last_batches_give_each_example_its_own_logits(tmp_path, shared_data):
    """With length buckets, each batch is trimmed to its bucket and the last (short) batch of each bucket is padded
    to the full batch size with copies of a row, so graph mode compiles one graph per length; every example still
    gets exactly the logits it gets alone at full length."""
    vocab = os.path.join(shared_data, "vocab", "bert-base-uncased-vocab.txt")
    dev = os.path.join(shared_data, "glue", "SST-2", "dev.tsv")
    head_lines(dev, tmp_path / "dev.tsv", 30)
    convert_task_data("sst2", str(tmp_path / "dev.tsv"), str(tmp_path / "dev.mindrecord"), vocab, seq_length=32)
    ms.set_seed(3)
    net = BertForSequenceClassification(BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1,
                                                   num_attention_heads=2, intermediate_size=20), 2)
    net.set_train(False)
    spy = ShapeSpy(net)
    evaluator = Evaluator(spy, eval_sets_from([str(tmp_path / "dev.mindrecord")]),
                          DataConfig(seq_length=32, bucket_boundaries=(8, 16)), batch_size=8, metric="accuracy")
    logits, labels = evaluator.logits_and_labels([str(tmp_path / "dev.mindrecord")])
    assert logits.shape == (29, 2) and labels.shape == (29,)
    assert {s[0] for s in spy.shapes} == {8}  # full batches only, short ones padded
    assert len({s[1] for s in spy.shapes}) > 1 and {s[1] for s in spy.shapes} <= {8, 16, 32}

    reader = FileReader(str(tmp_path / "dev.mindrecord"))
    alone = []
    for row in reader.get_next():
        one = [ms.Tensor(np.asarray(row[k], np.int32).reshape(1, -1)) for k in ("input_ids", "segment_ids",
                                                                              "input_mask")]
        alone.append((net(*one)[0].asnumpy()[0], int(np.asarray(row["label_ids"]).reshape(-1)[0])))
    reader.close()
    # bucketing reorders the examples: compare (logits, label) pairs as sorted sets
    order = np.lexsort((logits[:, 1], logits[:, 0]))
    expected = sorted(alone, key=lambda item: (item[0][0], item[0][1]))
    np.testing.assert_allclose(logits[order], np.stack([e[0] for e in expected]), rtol=1e-5, atol=1e-6)
    assert list(labels[order]) == [e[1] for e in expected]


def test_evaluator_entity_f1_on_cluener(tmp_path, shared_data):
    vocab = os.path.join(shared_data, "vocab", "bert-base-chinese-vocab.txt")
    src = head_lines(os.path.join(shared_data, "clue", "cluener", "dev.json"), tmp_path / "dev.json", 30)
    convert_task_data("cluener", src, str(tmp_path / "dev.mindrecord"), vocab, seq_length=64)
    names = load_label_map(str(tmp_path / "labels.json"))
    ms.set_seed(2)
    net = BertForTokenClassification(BertConfig(vocab_size=21128, hidden_size=16, num_hidden_layers=1,
                                                num_attention_heads=2, intermediate_size=20), len(names))
    evaluator = Evaluator(net, eval_sets_from([str(tmp_path / "dev.mindrecord")]), DataConfig(seq_length=64),
                          batch_size=8, metric="entity_f1", label_names=names)
    result = evaluator()["sets"]["dev"]
    logits, labels = evaluator.logits_and_labels([str(tmp_path / "dev.mindrecord")])
    assert logits.shape == (30, 64, len(names)) and result["examples"] == 30
    assert result["f1"] == evaluate("entity_f1", logits, labels, names)["f1"]
    # The gold labels scored against themselves: F1 1.0 over exactly the entities in the JSON.
    gold = np.eye(len(names))[np.maximum(labels, 0)]
    perfect = evaluate("entity_f1", gold, labels, names)
    entities = sum(len(spans) for line in open(src, encoding="utf-8")
                   for kinds in json.loads(line)["label"].values() for spans in kinds.values())
    assert perfect["f1"] == 1.0 and perfect["support"] == entities


@pytest.mark.slow
def test_finetune_real_minilm_teacher_on_sst2(tmp_path, shared_data, minilm_dir):
    """The teacher path users take: the pretrained MiniLM from its wheel, converted, fine-tuned on SST-2."""
    env = dict(os.environ, PYTHONPATH=ROOT, GLOG_v="3", MS_COMPILER_CACHE_ENABLE="0")

    def run(args):
        proc = subprocess.run([sys.executable] + args, cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=1200)
        assert proc.returncode == 0, proc.stderr[-4000:]
        return proc

    run([os.path.join(ROOT, "scripts", "convert_checkpoint.py"), "hf", "--input", minilm_dir, "--output",
         str(tmp_path / "minilm.ckpt")])
    vocab = os.path.join(minilm_dir, "vocab.txt")
    train = open(os.path.join(shared_data, "glue", "SST-2", "train.tsv"), encoding="utf-8").read().splitlines()
    (tmp_path / "train.tsv").write_text("\n".join(train[:641]) + "\n", encoding="utf-8")
    head_lines(os.path.join(shared_data, "glue", "SST-2", "dev.tsv"), tmp_path / "dev.tsv", 201)
    for split in ("train", "dev"):
        convert_task_data("sst2", str(tmp_path / f"{split}.tsv"), str(tmp_path / f"{split}.mindrecord"), vocab,
                          seq_length=32)
    config = {
        "task": {"name": "SST-2", "num_labels": 2, "labels": ["0", "1"], "pooled_activation": "none"},
        "data": {"seq_length": 32, "train_files": [str(tmp_path / "train.mindrecord")],
                 "eval_files": [str(tmp_path / "dev.mindrecord")]},
        "checkpoint": {"pretrained": str(tmp_path / "minilm.ckpt")},
        "teacher": {"preset": "all-minilm-l6-v2"}, "student": {"preset": "all-minilm-l6-v2", "num_hidden_layers": 3},
        "run": {"output_dir": str(tmp_path / "out")},
        "td": {"finetune": {"epochs": 2, "lr": 1e-4, "batch_size": 32, "log_steps": 5, "warmup_ratio": 0.1}},
    }
    (tmp_path / "sst2.yaml").write_text(yaml.safe_dump(config))
    proc = run([os.path.join(ROOT, "run_task_distill.py"), "--config", str(tmp_path / "sst2.yaml"),
                "--phase", "finetune", "--no_progress"])
    manifest = json.loads((tmp_path / "out" / "teacher" / "manifest.json").read_text())
    rows = [json.loads(l) for l in (tmp_path / "out" / "teacher" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r["type"] == "train"]
    best = manifest["metrics"]["best"]
    print(f"MiniLM fine-tuned on 640 SST-2 sentences, 40 steps: dev accuracy {best['score']:.3f} "
          f"(200 sentences), train loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    assert best["sets"]["dev"]["examples"] == 200
    assert losses[-1] < losses[0]
    assert best["score"] > 0.7  # clearly above chance (0.5) after 40 steps on 640 sentences
    teacher = ckpt.load_model(str(tmp_path / "out" / "teacher" / "best.ckpt"))
    assert teacher.config.num_hidden_layers == 6 and teacher.num_labels == 2
    assert "best eval:  accuracy" in proc.stdout
