"""Hugging Face out (src/ship/hf.py): a Hugging Face folder converted in and written back out gives the same
tensors and config; the heads HF cannot express are refused by name; the vocabulary written is the model's. The
logits check against `transformers` itself needs torch (tests/test_hf_parity.py, in the dev extra)."""
import json
import os

import numpy as np
import pytest
from safetensors.numpy import load_file

from src.config import BertConfig
from src.data import vocab
from src.model.checkpoint import save_model
from src.model.convert import convert_hf
from src.model.heads import BertForMaskedLM, BertForSequenceClassification, BertForTokenClassification
from src.ship.hf import HFExportError, export_hf
from tests.conftest import SHARED_DATA
from tests.test_convert import params_of, write_safetensors

EN_VOCAB = os.path.join(SHARED_DATA, "vocab", "bert-base-uncased-vocab.txt")


def tiny(**kw):
    return BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=24, max_position_embeddings=64, type_vocab_size=2, **kw)


def hf_folder(tmp_path, net, architecture):
    folder = write_safetensors(tmp_path / "hf_in", params_of(net), net.config, architectures=[architecture])
    with open(EN_VOCAB, "rb") as f:
        (folder / "vocab.txt").write_bytes(f.read())
    return folder


def test_hf_in_and_out_again_gives_the_same_tensors_and_config(tmp_path):
    source = BertForSequenceClassification(tiny(), 3, pooled_activation="none")
    folder = hf_folder(tmp_path, source, "BertForSequenceClassification")
    ours = convert_hf(str(folder), str(tmp_path / "ours" / "cls.ckpt"))
    out = export_hf(ours, str(tmp_path / "hf_out"), labels=["contradiction", "entailment", "neutral"])
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors", "special_tokens_map.json",
                                       "tokenizer_config.json", "vocab.txt"]
    before, after = load_file(str(folder / "model.safetensors")), load_file(os.path.join(out, "model.safetensors"))
    assert before.keys() == after.keys()
    for name in before:
        assert before[name].dtype == after[name].dtype == np.float32
        np.testing.assert_array_equal(after[name], before[name], err_msg=name)
    config_in = json.loads((folder / "config.json").read_text())
    config_out = json.loads(open(os.path.join(out, "config.json"), encoding="utf-8").read())
    for key, value in config_in.items():
        if key != "architectures":
            assert config_out[key] == value, key
    assert config_out["architectures"] == ["BertForSequenceClassification"]
    assert config_out["id2label"] == {"0": "contradiction", "1": "entailment", "2": "neutral"}
    assert config_out["label2id"]["neutral"] == 2 and config_out["problem_type"] == "single_label_classification"
    assert vocab.fingerprint(os.path.join(out, "vocab.txt")) == dict(vocab.fingerprint(EN_VOCAB),
                                                                     file=os.path.join(out, "vocab.txt"))
    tok = json.loads(open(os.path.join(out, "tokenizer_config.json"), encoding="utf-8").read())
    assert tok["tokenizer_class"] == "BertTokenizer" and tok["do_lower_case"] is True
    assert tok["model_max_length"] == 64


def test_tinybert_relu_head_is_refused_and_its_encoder_can_go_out_as_bert_model(tmp_path):
    net = BertForSequenceClassification(tiny(hidden_act="gelu_tanh"), 2, pooled_activation="relu")
    ckpt = save_model(net, str(tmp_path / "tinybert.ckpt"), extra={"vocab": vocab.fingerprint(EN_VOCAB)})
    with pytest.raises(HFExportError, match=r"ReLU\(pooled output\).*--head backbone"):
        export_hf(ckpt, str(tmp_path / "refused"))
    assert not (tmp_path / "refused").exists()
    out = export_hf(ckpt, str(tmp_path / "encoder"), head="backbone")  # vocab.txt from the recorded fingerprint
    tensors = load_file(os.path.join(out, "model.safetensors"))
    assert "pooler.dense.weight" in tensors and not any(n.startswith(("bert.", "classifier")) for n in tensors)
    np.testing.assert_array_equal(tensors["embeddings.word_embeddings.weight"],
                                  net.bert.embeddings.word_embeddings.weight.asnumpy())
    config = json.loads(open(os.path.join(out, "config.json"), encoding="utf-8").read())
    assert config["architectures"] == ["BertModel"] and config["hidden_act"] == "gelu_new"
    assert "id2label" not in config


@pytest.mark.parametrize("cls,architecture", [(BertForTokenClassification, "BertForTokenClassification"),
                                              (BertForMaskedLM, "BertForMaskedLM")])
def test_models_without_a_pooler_in_hf_leave_it_out(tmp_path, cls, architecture):
    net = cls(tiny(), 5) if cls is BertForTokenClassification else cls(tiny())
    ckpt = save_model(net, str(tmp_path / "m.ckpt"))
    out = export_hf(ckpt, str(tmp_path / "out"), vocab_file=EN_VOCAB)
    tensors = load_file(os.path.join(out, "model.safetensors"))
    assert not any(n.startswith("bert.pooler.") for n in tensors)
    assert not any("decoder" in n for n in tensors)  # tied to the word embeddings in both
    assert json.loads(open(os.path.join(out, "config.json"), encoding="utf-8").read())["architectures"] == \
        [architecture]


def test_another_vocabulary_missing_labels_or_a_full_folder_are_refused(tmp_path):
    net = BertForSequenceClassification(tiny(), 2, pooled_activation="none")
    plain = save_model(net, str(tmp_path / "plain.ckpt"))
    with pytest.raises(HFExportError, match="names no vocabulary; pass --vocab_file"):
        export_hf(plain, str(tmp_path / "a"))
    zh = os.path.join(SHARED_DATA, "vocab", "bert-base-chinese-vocab.txt")
    with pytest.raises(vocab.VocabMismatch, match="has 21128 tokens but the vocab_size of .* is 30522"):
        export_hf(plain, str(tmp_path / "b"), vocab_file=zh)
    recorded = save_model(net, str(tmp_path / "recorded.ckpt"), extra={"vocab": vocab.fingerprint(EN_VOCAB)})
    with pytest.raises(vocab.VocabMismatch, match="is not the vocabulary of"):
        export_hf(recorded, str(tmp_path / "c"), vocab_file=zh)
    with pytest.raises(HFExportError, match="3 label names for a classifier of 2 labels"):
        export_hf(recorded, str(tmp_path / "d"), labels=["a", "b", "c"])
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("x")
    with pytest.raises(HFExportError, match="exists and is not empty"):
        export_hf(recorded, str(full))
    assert (full / "keep.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-hf-")]


def test_a_check_asked_for_without_transformers_is_refused_before_writing(tmp_path, monkeypatch):
    from src.ship import hf as hf_module
    monkeypatch.setattr(hf_module, "_hf_available", lambda: "No module named 'torch' (pip install -r "
                                                            "requirements-hf.txt)")
    net = BertForSequenceClassification(tiny(), 2, pooled_activation="none")
    ckpt = save_model(net, str(tmp_path / "m.ckpt"), extra={"vocab": vocab.fingerprint(EN_VOCAB)})
    with pytest.raises(HFExportError, match="the check needs torch and transformers: No module named 'torch'"):
        hf_module.write_hf_folder(ckpt, str(tmp_path / "out"), verify=True)
    assert not (tmp_path / "out").exists()
    written = hf_module.write_hf_folder(ckpt, str(tmp_path / "out"))  # default: written, the check skipped
    assert written.check == {"skipped": "No module named 'torch' (pip install -r requirements-hf.txt)"}
    assert os.path.isfile(os.path.join(written.path, "model.safetensors"))
