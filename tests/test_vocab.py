"""A vocabulary paired with a model or records that are not its own is refused (src/data/vocab.py): the
fingerprint itself, the converters that record it (records' schema, converted checkpoints), and each command that
pairs a vocab.txt with a model: predict.py, preprocess.py, the augmentation's masked LM. The training stages'
checks are in test_stages.py."""
import json
import os
import subprocess
import sys

import pytest

from src.data import vocab
from src.data.augment import AugmentError, load_masked_lm
from src.data.records import records_vocab
from src.data.task_data import convert_task_data
from src.model.checkpoint import read_metadata, save_model
from src.model.convert import convert_hf
from src.model.heads import BertForMaskedLM, BertForSequenceClassification
from src.config import BertConfig
from src.ship import export, offline
from tests.conftest import ROOT, SHARED_DATA

EN_VOCAB = os.path.join(SHARED_DATA, "vocab", "bert-base-uncased-vocab.txt")
ZH_VOCAB = os.path.join(SHARED_DATA, "vocab", "bert-base-chinese-vocab.txt")
ENV = dict(os.environ, MS_COMPILER_CACHE_ENABLE="0", GLOG_v="3")
pytestmark = pytest.mark.skipif(not os.path.isdir(SHARED_DATA), reason="shared data folder not present")


def tiny(vocab_size):
    return BertConfig(vocab_size=vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=24, max_position_embeddings=64, type_vocab_size=2)


@pytest.fixture(scope="module")
def swapped_vocab(tmp_path_factory):
    """The uncased vocabulary with two tokens swapped: the same size, another vocabulary (ids of 'good' and
    'bad' exchanged)."""
    with open(EN_VOCAB, encoding="utf-8", newline="\n") as f:
        tokens = f.read().split("\n")
    a, b = tokens.index("good"), tokens.index("bad")
    tokens[a], tokens[b] = tokens[b], tokens[a]
    path = tmp_path_factory.mktemp("vocab") / "swapped-vocab.txt"
    path.write_text("\n".join(tokens), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def english_classifier(tmp_path_factory):
    """A tiny classifier whose sidecar records the uncased vocabulary, and one saved without a fingerprint."""
    base = tmp_path_factory.mktemp("vocab_models")
    net = BertForSequenceClassification(tiny(30522), num_labels=2)
    recorded = save_model(net, str(base / "recorded.ckpt"), extra={"vocab": vocab.fingerprint(EN_VOCAB)})
    plain = save_model(net, str(base / "plain.ckpt"))
    return {"dir": base, "recorded": recorded, "plain": plain}


def test_the_fingerprint_is_the_tokens_in_order_not_the_file_bytes(tmp_path, swapped_vocab):
    with open(EN_VOCAB, encoding="utf-8", newline="\n") as f:
        text = f.read()
    crlf = tmp_path / "crlf-vocab.txt"
    crlf.write_bytes(text.replace("\n", "\r\n").encode("utf-8"))
    original = vocab.fingerprint(EN_VOCAB)
    assert original["size"] == 30522 and len(original["sha256"]) == 64
    assert vocab.fingerprint(str(crlf))["sha256"] == original["sha256"]  # line ends and path do not matter
    assert vocab.fingerprint(swapped_vocab)["sha256"] != original["sha256"]  # the token order does
    assert vocab.fingerprint(ZH_VOCAB)["size"] == 21128
    with pytest.raises(vocab.VocabMismatch, match=r"B \(30522 tokens, sha256 .*\) is not the vocabulary of A "
                                                  r"\(30522 tokens"):
        vocab.agree([("A", original), ("C", None), ("B", vocab.fingerprint(swapped_vocab))])
    assert vocab.agree([("A", None), ("B", original)]) == original and vocab.agree([("A", None)]) is None


def test_tfrecord_shards_carry_their_vocabulary_and_keep_a_schema_mindspore_reads(tmp_path):
    import mindspore.dataset as ds

    tsv = tmp_path / "train.tsv"
    tsv.write_text("sentence\tlabel\na fine film\t1\na dull film\t0\nfine\t1\n", encoding="utf-8")
    files = convert_task_data("sst2", str(tsv), str(tmp_path / "train.tfrecord"), EN_VOCAB, seq_length=16,
                              fmt="tfrecord", num_shards=2).files
    assert len(files) == 2 and all(records_vocab(f) == vocab.fingerprint(EN_VOCAB) for f in files)
    # the model zoo hands our schema JSON to MindSpore, which refuses keys it does not know
    rows = ds.TFRecordDataset(files[0], schema=files[0] + ".schema.json", shuffle=False)
    assert rows.get_dataset_size() == 2


def test_converted_records_carry_their_vocabulary(tmp_path):
    tsv = tmp_path / "train.tsv"
    tsv.write_text("sentence\tlabel\na fine film\t1\na dull film\t0\n", encoding="utf-8")
    convert_task_data("sst2", str(tsv), str(tmp_path / "train.mindrecord"), EN_VOCAB, seq_length=16)
    recorded = records_vocab(str(tmp_path / "train.mindrecord"))
    assert recorded == vocab.fingerprint(EN_VOCAB)
    side = tmp_path / "train.mindrecord.vocab.json"
    assert json.loads(side.read_text()) == {"vocab": recorded}
    assert "vocab" not in json.loads((tmp_path / "train.mindrecord.schema.json").read_text())
    side.write_text(json.dumps({"vocab": "bert-base-uncased"}))
    with pytest.raises(ValueError, match=r"train\.mindrecord\.vocab\.json: key 'vocab' is 'bert-base-uncased'"):
        records_vocab(str(tmp_path / "train.mindrecord"))
    assert records_vocab(str(tmp_path / "elsewhere.mindrecord")) is None  # no schema: nothing recorded


def test_a_converted_checkpoint_records_the_vocab_beside_it_and_refuses_one_of_another_size(tmp_path):
    from tests.test_convert import write_safetensors, params_of  # the HF folder writer of the converter tests

    source = BertForSequenceClassification(tiny(30522), 2, pooled_activation="none")
    folder = write_safetensors(tmp_path / "hf", params_of(source), tiny(30522),
                               architectures=["BertForSequenceClassification"])
    with open(EN_VOCAB, "rb") as f:
        (folder / "vocab.txt").write_bytes(f.read())
    out = convert_hf(str(folder), str(tmp_path / "out" / "en.ckpt"))
    assert read_metadata(out)["vocab"]["sha256"] == vocab.fingerprint(EN_VOCAB)["sha256"]
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "convert_checkpoint.py"), "hf",
                           "--input", str(folder), "--output", str(tmp_path / "zh" / "zh.ckpt"),
                           "--vocab_file", ZH_VOCAB], capture_output=True, text=True, env=ENV, timeout=600)
    assert proc.returncode == 2
    assert f"vocab file {ZH_VOCAB} has 21128 tokens but the vocab_size of" in proc.stderr
    assert "is 30522" in proc.stderr and not (tmp_path / "zh").exists()


def predict(model, vocab_file, cwd):
    return subprocess.run([sys.executable, os.path.join(ROOT, "predict.py"), "--model", str(model),
                           "--vocab_file", vocab_file, "a fine movie"], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=600)


def test_predict_refuses_a_vocabulary_the_model_was_not_trained_with(english_classifier, swapped_vocab):
    cwd = english_classifier["dir"]
    recorded, plain = english_classifier["recorded"], english_classifier["plain"]
    proc = predict(recorded, ZH_VOCAB, cwd)  # the case: an English model, the Chinese vocabulary
    assert proc.returncode != 0 and proc.stdout == ""
    assert f"--vocab_file {ZH_VOCAB} (21128 tokens" in proc.stderr
    assert f"is not the vocabulary of {recorded} (30522 tokens" in proc.stderr and EN_VOCAB in proc.stderr
    proc = predict(recorded, swapped_vocab, cwd)  # the same size: only the fingerprint tells
    assert proc.returncode != 0 and "is not the vocabulary of" in proc.stderr and swapped_vocab in proc.stderr
    proc = predict(plain, ZH_VOCAB, cwd)  # a checkpoint saved without a fingerprint: the size still tells
    assert proc.returncode != 0
    assert f"--vocab_file {ZH_VOCAB} has 21128 tokens but the vocab_size of {plain} is 30522" in proc.stderr
    proc = predict(recorded, EN_VOCAB, cwd)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\t")[0] in ("0", "1")


def test_an_export_keeps_the_vocabulary_and_preprocess_checks_the_records_against_it(english_classifier,
                                                                                     swapped_vocab, tmp_path):
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        mindir = export.export_checkpoint(english_classifier["recorded"], "MINDIR", str(tmp_path / "cls"),
                                          batch_size=2, seq_length=16)
    finally:
        os.chdir(cwd)
    with open(mindir + ".json", encoding="utf-8") as f:
        assert json.load(f)["vocab"] == read_metadata(english_classifier["recorded"])["vocab"]
    proc = predict(mindir, swapped_vocab, tmp_path)
    assert proc.returncode != 0 and f"is not the vocabulary of {mindir}" in proc.stderr

    tsv = tmp_path / "dev.tsv"
    tsv.write_text("sentence\tlabel\na fine film\t1\na dull film\t0\n", encoding="utf-8")
    for name, vocab_file in (("good", EN_VOCAB), ("bad", swapped_vocab)):
        convert_task_data("sst2", str(tsv), str(tmp_path / name / "dev.mindrecord"), vocab_file, seq_length=16)
    meta = offline.write_bins([str(tmp_path / "good" / "dev.mindrecord")], str(tmp_path / "bins"), 2, 16,
                              "classification", str(tmp_path / "good" / "labels.json"), "accuracy",
                              model_num_labels=2, model_file=mindir)
    assert meta["num_rows"] == 2
    bad = str(tmp_path / "bad" / "dev.mindrecord")
    with pytest.raises(vocab.VocabMismatch, match=f"--eval_data_file {bad} .* is not the vocabulary of {mindir}"):
        offline.write_bins([bad], str(tmp_path / "bad_bins"), 2, 16, "classification",
                           str(tmp_path / "bad" / "labels.json"), "accuracy", model_num_labels=2,
                           model_file=mindir)
    assert not (tmp_path / "bad_bins").exists()


def test_the_augmentation_masked_lm_refuses_another_vocabulary(tmp_path, swapped_vocab):
    net = BertForMaskedLM(tiny(30522))
    recorded = save_model(net, str(tmp_path / "mlm.ckpt"), extra={"vocab": vocab.fingerprint(EN_VOCAB)})
    with pytest.raises(AugmentError, match=f"--vocab_file {swapped_vocab} .* is not the vocabulary of {recorded}"):
        load_masked_lm(recorded, swapped_vocab, m=3)
    with pytest.raises(AugmentError, match=f"--vocab_file {ZH_VOCAB} .* is not the vocabulary of {recorded}"):
        load_masked_lm(recorded, ZH_VOCAB, m=3)
    scorer = load_masked_lm(recorded, EN_VOCAB, m=3)
    assert scorer.tokenizer.vocab_fingerprint["sha256"] == vocab.fingerprint(EN_VOCAB)["sha256"]
