"""predict.py: raw text -> BertTokenizer -> exported MINDIR (or a checkpoint) -> label names and probabilities.

A tiny classifier with the real uncased vocabulary is saved and exported once (fixed shape [2, 16], so three
sentences need two padded batches); every prediction is compared with the checkpoint's own logits for the same
encoding. A tiny CLUENER tagger covers the NER output (entities from the predicted BIOES tags).
"""
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor

import predict
from src.ship import export
from src.model.checkpoint import load_model, save_model
from src.config import BertConfig
from src.model.heads import BertForSequenceClassification, BertForTokenClassification
from src.data.tokenization import BertTokenizer
from tests.conftest import ROOT, SHARED_DATA


EN_VOCAB = os.path.join(SHARED_DATA, "vocab", "bert-base-uncased-vocab.txt")
ZH_VOCAB = os.path.join(SHARED_DATA, "vocab", "bert-base-chinese-vocab.txt")
ENV = dict(os.environ, MS_COMPILER_CACHE_ENABLE="0", GLOG_v="3")
SENTENCES = ["a gripping , funny and moving film .", "the plot is a tedious mess", "it 's fine"]
LABELS = ["negative", "positive"]
TAGS = ["O", "B-name", "I-name", "E-name", "S-name", "B-address", "I-address", "E-address", "S-address"]
pytestmark = pytest.mark.skipif(not os.path.isdir(SHARED_DATA), reason="shared data folder not present")


def tiny(vocab_size):
    """conftest's tiny_config geometry (hidden 32, 2 layers, 4 heads, FFN 37) with a real vocabulary; built here
    because these models are made once per module."""
    return BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=37, max_position_embeddings=64, type_vocab_size=2)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    base = tmp_path_factory.mktemp("predict")
    cwd = os.getcwd()
    os.chdir(base)  # a failed graph compile writes rank_0/ into the working directory
    try:
        ms.set_seed(1)
        cls = save_model(BertForSequenceClassification(tiny(30522), num_labels=2), str(base / "cls.ckpt"))
        mindir = export.export_checkpoint(cls, "MINDIR", str(base / "cls"), batch_size=2, seq_length=16)
        ner = save_model(BertForTokenClassification(tiny(21128), num_labels=len(TAGS)), str(base / "ner.ckpt"))
    finally:
        os.chdir(cwd)
    for name, labels in (("labels.json", LABELS), ("tags.json", TAGS)):
        (base / name).write_text(json.dumps({"task": "test", "labels": labels, "num_labels": len(labels)}))
    return {"dir": base, "ckpt": cls, "mindir": mindir, "ner": ner, "labels": str(base / "labels.json"),
            "tags": str(base / "tags.json")}


def expected_probabilities(checkpoint, examples, seq_length):
    """Softmax of the checkpoint's logits for (text_a, text_b) examples encoded as the converters do."""
    tokenizer = BertTokenizer(EN_VOCAB, do_lower_case=True)
    encoded = [tokenizer.encode(a, b, seq_length) for a, b in examples]
    ids, types, mask = (Tensor(np.array([getattr(e, k) for e in encoded], np.int32))
                        for k in ("input_ids", "token_type_ids", "attention_mask"))
    net = load_model(checkpoint)
    net.set_train(False)
    logits = net(ids, types, mask)[0].asnumpy().astype(np.float64)
    z = np.exp(logits - logits.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def run_cli(*args, stdin=None, ok=True, cwd):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "predict.py"), *map(str, args)], input=stdin,
                          cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)
    assert (proc.returncode == 0) == ok, proc.stderr
    return proc


@pytest.mark.slow
def test_three_sentences_give_label_names_and_probabilities(models, tmp_path):
    out = run_cli("--model", models["mindir"], "--vocab_file", EN_VOCAB, "--labels_file", models["labels"],
                  *SENTENCES, cwd=tmp_path).stdout
    lines = out.splitlines()
    assert len(lines) == 3
    probs = expected_probabilities(models["ckpt"], [(s, None) for s in SENTENCES], 16)
    for line, sentence, p in zip(lines, SENTENCES, probs):
        label, probability, text = line.split("\t")
        assert text == sentence and label == LABELS[int(p.argmax())]
        assert abs(float(probability) - p.max()) < 1e-4  # printed with 4 decimals


@pytest.mark.slow
def test_stdin_jsonl_with_a_pair_and_a_blank_line(models, tmp_path):
    stdin = f"{SENTENCES[0]}\n\n{SENTENCES[1]}\tbut the acting is superb\n"
    out = run_cli("--model", models["mindir"], "--vocab_file", EN_VOCAB, "--labels_file", models["labels"],
                  "--format", "jsonl", stdin=stdin, cwd=tmp_path).stdout
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 2 and "text_pair" not in records[0]
    assert records[1]["text"] == SENTENCES[1] and records[1]["text_pair"] == "but the acting is superb"
    probs = expected_probabilities(models["ckpt"], [(SENTENCES[0], None), (SENTENCES[1], "but the acting is superb")],
                                   16)
    for record, p in zip(records, probs):
        assert set(record["probabilities"]) == set(LABELS)
        np.testing.assert_allclose([record["probabilities"][n] for n in LABELS], p, atol=1e-5)
        assert record["label"] == LABELS[record["label_id"]] and record["label_id"] == int(p.argmax())
        assert abs(sum(record["probabilities"].values()) - 1.0) < 1e-9
    # The pair is really encoded as a pair: the single sentence alone gives other probabilities.
    alone = expected_probabilities(models["ckpt"], [(SENTENCES[1], None)], 16)[0]
    assert not np.allclose(alone, probs[1], atol=1e-6)


def test_checkpoint_input_file_ids_without_labels_and_batching(models, tmp_path):
    """A .ckpt takes any batch and --seq_length; without --labels_file the labels are ids. In-process call."""
    path = tmp_path / "in.txt"
    path.write_text("\n".join(SENTENCES * 3) + "\n", encoding="utf-8")  # 9 lines, batches of 4
    out = io.StringIO()
    assert predict.main(["--model", models["ckpt"], "--vocab_file", EN_VOCAB, "--input_file", str(path),
                         "--seq_length", "24", "--batch_size", "4", "--format", "jsonl"], stdout=out) == 0
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [r["text"] for r in records] == SENTENCES * 3
    probs = expected_probabilities(models["ckpt"], [(s, None) for s in SENTENCES], 24)
    for record, p in zip(records, np.concatenate([probs] * 3)):
        assert set(record["probabilities"]) == {"0", "1"} and record["label"] == str(int(p.argmax()))
        np.testing.assert_allclose([record["probabilities"]["0"], record["probabilities"]["1"]], p, atol=1e-5)


def test_ner_prints_entities_from_predicted_tags(models, tmp_path):
    text = "彭小军认为，国内银行现在走的是台湾的发卡模式"
    out = io.StringIO()
    assert predict.main(["--model", models["ner"], "--vocab_file", ZH_VOCAB, "--labels_file", models["tags"],
                         "--seq_length", "32", "--format", "jsonl", text], stdout=out) == 0
    record = json.loads(out.getvalue())
    # Recompute the tags from the checkpoint: [CLS] + one token per character + [SEP].
    tokenizer = BertTokenizer(ZH_VOCAB)
    ids = [tokenizer.vocab["[CLS]"]] + [tokenizer.vocab.get(c, tokenizer.vocab["[UNK]"]) for c in text] + \
          [tokenizer.vocab["[SEP]"]]
    ids += [0] * (32 - len(ids))
    mask = [1] * (len(text) + 2) + [0] * (32 - len(text) - 2)
    net = load_model(models["ner"])
    net.set_train(False)
    logits = net(Tensor([ids], ms.int32), Tensor(np.zeros((1, 32), np.int32)), Tensor([mask], ms.int32))[0]
    tags = [TAGS[i] for i in logits.asnumpy()[0].argmax(-1)[1:len(text) + 1]]
    assert record["text"] == text and record["tags"] == tags
    entities, _ = predict.decode_entities(text, [TAGS.index(t) for t in tags], TAGS)
    assert record["entities"] == entities
    for entity in record["entities"]:
        assert text[entity["start"]:entity["end"] + 1] == entity["text"]


def test_decode_entities_bioes_spans():
    text = "彭小军认为台湾好"
    tags = ["B-name", "I-name", "E-name", "O", "O", "B-address", "E-address", "S-name"]
    entities, decoded = predict.decode_entities(text, [TAGS.index(t) for t in tags], TAGS)
    assert decoded == tags
    assert entities == [{"type": "name", "text": "彭小军", "start": 0, "end": 2},
                        {"type": "address", "text": "台湾", "start": 5, "end": 6},
                        {"type": "name", "text": "好", "start": 7, "end": 7}]
    # An I-/E- without its B- and a B- never closed are not entities (strict BIOES, as the metric).
    broken = ["I-name", "E-name", "S-address", "B-name", "O"]
    assert predict.decode_entities("abcde", [TAGS.index(t) for t in broken], TAGS)[0] == [
        {"type": "address", "text": "c", "start": 2, "end": 2}]
    assert predict.format_text({"text": text, "entities": entities}) == \
        f"{text}\tname:彭小军[0,2] address:台湾[5,6] name:好[7,7]"


def test_errors_name_the_problem(models, capsys):
    def error(*argv, stdin=""):
        assert predict.main(list(map(str, argv)), stdin=io.StringIO(stdin), stdout=io.StringIO()) == 1
        return capsys.readouterr().err

    common = ["--model", models["mindir"], "--vocab_file", EN_VOCAB]
    assert "has 9 labels but" in error(*common, "--labels_file", models["tags"], "good")
    assert "exported for seq_length 16 (fixed)" in error(*common, "--seq_length", 32, "good")
    assert "<stdin>:2: 3 tab-separated fields" in error(*common, stdin="fine\na\tb\tc\n")
    assert "no sentences in the input" in error(*common, stdin="\n \n")
    assert "--input_file" in error(*common, "--input_file", models["dir"] / "absent.txt")
    latin = models["dir"] / "latin1.txt"
    latin.write_bytes("fine\ncaf\xe9 au lait\n".encode("latin-1"))
    assert "latin1.txt:2: not UTF-8 text (invalid continuation byte at byte 3)" in error(*common, "--input_file",
                                                                                         latin)
    assert "a sentence pair was given to a token-classification (NER) model" in error(
        "--model", models["ner"], "--vocab_file", ZH_VOCAB, "--labels_file", models["tags"], "甲\t乙")
    assert "--labels_file (the labels.json" in error("--model", models["ner"], "--vocab_file", ZH_VOCAB, "甲")
    assert "exported model not found" in error("--model", models["dir"] / "absent.mindir", "--vocab_file",
                                               EN_VOCAB, "good")


def test_a_regression_head_prints_its_score_not_a_softmax(tmp_path, capsys):
    """A one-output head (STS-B) gives its prediction as is, for pairs; a classification labels.json is refused."""
    ms.set_seed(2)
    net = BertForSequenceClassification(tiny(30522), num_labels=1, pooled_activation="none")
    ckpt = save_model(net, str(tmp_path / "stsb.ckpt"))
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"task": "stsb", "type": "regression", "labels": ["score"], "num_labels": 1}))
    pairs = [("a man is playing a guitar .", "a man plays the guitar ."), ("a cat sleeps .", "the stock market fell .")]
    out = io.StringIO()
    assert predict.main(["--model", ckpt, "--vocab_file", EN_VOCAB, "--labels_file", str(labels), "--seq_length", "24",
                         "--format", "jsonl", *(f"{a}\t{b}" for a, b in pairs)], stdout=out) == 0
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    tokenizer = BertTokenizer(EN_VOCAB, do_lower_case=True)
    encoded = [tokenizer.encode(a, b, 24) for a, b in pairs]
    ids, types, mask = (Tensor(np.array([getattr(e, k) for e in encoded], np.int32))
                        for k in ("input_ids", "token_type_ids", "attention_mask"))
    net.set_train(False)
    expected = net(ids, types, mask)[0].asnumpy().reshape(-1)
    assert [(r["text"], r["text_pair"]) for r in records] == pairs and all("probability" not in r for r in records)
    np.testing.assert_allclose([r["score"] for r in records], expected, atol=1e-5)
    text = io.StringIO()
    assert predict.main(["--model", ckpt, "--vocab_file", EN_VOCAB, "--seq_length", "24", "\t".join(pairs[0])],
                        stdout=text) == 0
    score, a, b = text.getvalue().rstrip("\n").split("\t")
    assert (a, b) == pairs[0] and abs(float(score) - expected[0]) < 1e-4
    classes = tmp_path / "classes.json"
    classes.write_text(json.dumps({"task": "sst2", "labels": ["0", "1"], "num_labels": 2}))
    assert predict.main(["--model", ckpt, "--vocab_file", EN_VOCAB, "--labels_file", str(classes), "one sentence"],
                        stdout=io.StringIO()) != 0
    assert "is a classification task's labels.json, but" in capsys.readouterr().err
