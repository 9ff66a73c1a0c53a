"""Hugging Face out, checked by `transformers` itself: a folder written by `convert_checkpoint.py to-hf` loads with
BertModel / BertForSequenceClassification / BertForTokenClassification / BertForMaskedLM, tokenizes real SST-2
sentences to the same ids as our tokenizer, and gives our outputs within 1e-4.

torch (CPU) and transformers come from requirements-hf.txt, which scripts/setup.sh installs by default: CI runs
these tests, and they fail (not skip) there when either is missing (tests/conftest.py, needs).
"""
import csv
import json
import os

import numpy as np
import pytest

from src.config import BertConfig
from src.data import vocab
from src.data.tokenization import BertTokenizer
from src.model.bert import BertModel, POOLED_OUTPUT, SEQUENCE_OUTPUT
from src.model.checkpoint import load_model, save_model
from src.model.convert import convert_hf
from src.model.heads import LOGITS, BertForMaskedLM, BertForSequenceClassification, BertForTokenClassification
from src.ship import hf as hf_module
from src.ship.hf import HFExportError, export_hf, write_hf_folder
from tests.conftest import SHARED_DATA, needs

torch = needs("torch", "pip install -r requirements-hf.txt (scripts/setup.sh installs it)")
transformers = needs("transformers", "pip install -r requirements-hf.txt (scripts/setup.sh installs it)")

import mindspore as ms  # noqa: E402  (after the skips: nothing to do without torch)

TOL = 1e-4
EN_VOCAB = os.path.join(SHARED_DATA, "vocab", "bert-base-uncased-vocab.txt")


def sst2_sentences(count):
    with open(os.path.join(SHARED_DATA, "glue", "SST-2", "dev.tsv"), encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    # the shortest, the longest and some in between: rows are padded to very different lengths
    rows.sort(key=lambda r: len(r["sentence"]))
    picks = [rows[0], rows[-1]] + rows[len(rows) // 3:len(rows) // 3 + count - 2]
    return [r["sentence"] for r in picks]


def encode(tokenizer, pairs, max_len):
    enc = [tokenizer.encode(a, b, max_seq_length=max_len) for a, b in pairs]
    return tuple(np.array([getattr(e, k) for e in enc], np.int32)
                 for k in ("input_ids", "token_type_ids", "attention_mask"))


def batches(tokenizer):
    """Real sentences at two shapes: single sentences (B=5, S=64, one row of a few tokens) and pairs (B=3, S=24)."""
    sentences = sst2_sentences(5)
    singles = encode(tokenizer, [(s, None) for s in sentences], 64)
    pairs = encode(tokenizer, [(sentences[i], sentences[i + 1]) for i in range(3)], 24)
    assert singles[2].sum(axis=1).min() < 8 and pairs[1].max() == 1  # a short row; segment B is used
    return [singles, pairs]


def hf_outputs(model, ids, types, mask):
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(ids.astype(np.int64)),
                     token_type_ids=torch.from_numpy(types.astype(np.int64)),
                     attention_mask=torch.from_numpy(mask.astype(np.int64)))


def ours(net, ids, types, mask):
    net.set_train(False)
    return net(ms.Tensor(ids), ms.Tensor(types), ms.Tensor(mask))


def close(hf, mine, what):
    hf = hf.detach().numpy() if hasattr(hf, "detach") else hf
    mine = mine.asnumpy() if hasattr(mine, "asnumpy") else mine
    assert hf.shape == mine.shape, what
    diff = float(np.max(np.abs(hf.astype(np.float64) - mine.astype(np.float64))))
    assert diff <= TOL, f"{what}: max |HF - ours| = {diff:.2e} > {TOL}"
    return diff


def load_hf(cls, folder):
    return getattr(transformers, cls).from_pretrained(folder, attn_implementation="eager").eval()


@pytest.fixture(scope="module")
def minilm(tmp_path_factory, minilm_dir):
    """all-MiniLM-L6-v2 (real pretrained 6-layer BERT) converted in: (our checkpoint, its HF folder)."""
    root = tmp_path_factory.mktemp("minilm")
    return convert_hf(minilm_dir, str(root / "minilm.ckpt")), minilm_dir


def test_pretrained_bert_goes_out_and_transformers_gives_our_hidden_states_and_pooled_output(minilm, tmp_path):
    ckpt, original = minilm
    out = export_hf(ckpt, str(tmp_path / "hf"))
    tokenizer = BertTokenizer(os.path.join(out, "vocab.txt"))
    net = load_model(ckpt)
    exported, source = load_hf("BertModel", out), load_hf("BertModel", original)
    for ids, types, mask in batches(tokenizer):
        mine = ours(net, ids, types, mask)
        for model in (exported, source):
            hf = hf_outputs(model, ids, types, mask)
            close(hf.last_hidden_state, mine[SEQUENCE_OUTPUT], "last_hidden_state")
            close(hf.pooler_output, mine[POOLED_OUTPUT], "pooler_output")
    # the exported folder is the same model as the one it came from
    config = json.loads(open(os.path.join(out, "config.json"), encoding="utf-8").read())
    source_config = json.loads(open(os.path.join(original, "config.json"), encoding="utf-8").read())
    for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "hidden_act", "layer_norm_eps", "max_position_embeddings", "type_vocab_size"):
        assert config[key] == source_config[key], key


def test_tokenizer_written_out_gives_our_ids_on_real_sentences(minilm, tmp_path):
    out = export_hf(minilm[0], str(tmp_path / "hf"))
    hf_tok = transformers.BertTokenizer.from_pretrained(out)
    tokenizer = BertTokenizer(os.path.join(out, "vocab.txt"))
    sentences = sst2_sentences(40)
    for a, b in zip(sentences, sentences[1:] + [None]):
        want = tokenizer.encode(a, b, max_seq_length=128)
        got = hf_tok(a, b, max_length=128, truncation="longest_first", padding="max_length")
        assert got["input_ids"] == want.input_ids, (a, b)
        assert got["token_type_ids"] == want.token_type_ids and got["attention_mask"] == want.attention_mask


def with_random_head(net, seed, scale=1.0):
    """A classifier head with weights large enough that a wrong head shows in the logits (not ~1e-3 logits)."""
    rng = np.random.default_rng(seed)
    for param in net.get_parameters():
        if not param.name.startswith("bert."):
            param.set_data(ms.Tensor(rng.normal(0.0, scale, param.shape).astype(np.float32)))
    return net


@pytest.mark.parametrize("head,cls,labels", [
    ("sequence_classification", "BertForSequenceClassification", ["negative", "positive"]),
    ("token_classification", "BertForTokenClassification", ["O", "B-PER", "I-PER", "B-ORG", "I-ORG"]),
])
def test_classifiers_go_out_with_the_same_logits_and_label_names(minilm, tmp_path, head, cls, labels):
    net = load_model(minilm[0], head=head, num_labels=len(labels),
                     **({"pooled_activation": "none"} if head == "sequence_classification" else {}))
    net = with_random_head(net, seed=len(labels))
    ckpt = save_model(net, str(tmp_path / f"{head}.ckpt"), extra={"vocab": vocab.fingerprint(EN_VOCAB)})
    out = export_hf(ckpt, str(tmp_path / "hf"), labels=labels)
    model = load_hf(cls, out)
    assert model.config.id2label == dict(enumerate(labels)) and model.config.label2id["positive" if len(
        labels) == 2 else "B-ORG"] == (1 if len(labels) == 2 else 3)
    spread = []
    for ids, types, mask in batches(BertTokenizer(EN_VOCAB)):
        mine = ours(net, ids, types, mask)[LOGITS].asnumpy()
        logits = hf_outputs(model, ids, types, mask).logits.numpy()
        if head == "token_classification":  # compare real tokens only: padded positions are never read
            logits, mine = logits[mask == 1], mine[mask == 1]
        close(logits, mine, f"{cls} logits")
        spread.append(float(np.std(mine)))
    assert min(spread) > 0.1  # the logits are large enough for 1e-4 to mean something


def tiny(**kw):
    return BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=48, max_position_embeddings=64, type_vocab_size=2, initializer_range=0.2,
                      **kw)


@pytest.mark.parametrize("act", ["gelu", "gelu_tanh"])
def test_activation_and_layer_norm_eps_are_written_as_hf_reads_them(tmp_path, act):
    """gelu_tanh (TinyBERT's, the model zoo's) is HF's gelu_new; a non-default layer_norm_eps is kept."""
    ms.set_seed(3)
    net = with_random_head(BertModel(tiny(hidden_act=act, layer_norm_eps=1e-5)), seed=0)
    ckpt = save_model(net, str(tmp_path / "m.ckpt"), extra={"vocab": vocab.fingerprint(EN_VOCAB)})
    out = export_hf(ckpt, str(tmp_path / "hf"))
    model = load_hf("BertModel", out)
    assert model.config.hidden_act == {"gelu": "gelu", "gelu_tanh": "gelu_new"}[act]
    assert model.config.layer_norm_eps == 1e-5
    for ids, types, mask in batches(BertTokenizer(EN_VOCAB)):
        mine = ours(net, ids, types, mask)
        hf = hf_outputs(model, ids, types, mask)
        close(hf.last_hidden_state, mine[SEQUENCE_OUTPUT], "last_hidden_state")
        close(hf.pooler_output, mine[POOLED_OUTPUT], "pooler_output")


def test_masked_lm_goes_out_with_the_same_token_scores(tmp_path):
    ms.set_seed(4)
    net = BertForMaskedLM(tiny())
    rng = np.random.default_rng(1)
    bias = [p for p in net.get_parameters() if p.name == "cls.predictions.bias"][0]
    bias.set_data(ms.Tensor(rng.normal(0, 1, bias.shape).astype(np.float32)))  # not zeros: it must be carried
    ckpt = save_model(net, str(tmp_path / "mlm.ckpt"), extra={"vocab": vocab.fingerprint(EN_VOCAB)})
    model = load_hf("BertForMaskedLM", export_hf(ckpt, str(tmp_path / "hf")))
    ids, types, mask = batches(BertTokenizer(EN_VOCAB))[1]
    mine = ours(net, ids, types, mask)[LOGITS].asnumpy()
    logits = hf_outputs(model, ids, types, mask).logits.numpy()
    close(logits[mask == 1], mine[mask == 1], "BertForMaskedLM logits")


def test_to_hf_checks_the_folder_with_transformers_and_removes_it_on_a_mismatch(minilm, tmp_path, monkeypatch):
    net = with_random_head(load_model(minilm[0], head="sequence_classification", num_labels=2,
                                      pooled_activation="none"), seed=5)
    ckpt = save_model(net, str(tmp_path / "cls.ckpt"), extra={"vocab": vocab.fingerprint(EN_VOCAB)})
    good = write_hf_folder(ckpt, str(tmp_path / "good"))
    assert good.check["class"] == "BertForSequenceClassification" and good.check["compared"] == ["logits"]
    assert 0 < good.check["max_abs_diff"] <= TOL and good.check["shapes"] == [[2, 16], [1, 7]]
    assert write_hf_folder(ckpt, str(tmp_path / "unchecked"), verify=False).check == {"skipped": "not asked for"}

    real = hf_module.hf_tensors

    def off_by_a_little(params, head):  # what a wrong name map or transpose would do, only smaller
        tensors = real(params, head)
        tensors["classifier.bias"] = tensors["classifier.bias"] + np.float32(0.01)
        return tensors

    monkeypatch.setattr(hf_module, "hf_tensors", off_by_a_little)
    with pytest.raises(HFExportError, match=r"max \|transformers BertForSequenceClassification - ours\| = 0.01 > "
                                            r"0.0001 on logits; the folder was removed"):
        write_hf_folder(ckpt, str(tmp_path / "bad"))
    assert not (tmp_path / "bad").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-hf-")]


def test_to_hf_command_prints_its_check(tmp_path, minilm):
    import subprocess
    import sys
    from tests.conftest import ROOT
    net = load_model(minilm[0], head="token_classification", num_labels=3)
    ckpt = save_model(with_random_head(net, seed=2), str(tmp_path / "ner.ckpt"),
                      extra={"vocab": vocab.fingerprint(EN_VOCAB)})
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"labels": ["O", "B-LOC", "I-LOC"]}))
    done = subprocess.run([sys.executable, "scripts/convert_checkpoint.py", "to-hf", "--input", ckpt, "--output",
                           str(tmp_path / "hf"), "--labels_file", str(labels)], cwd=ROOT, capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "check: max |transformers BertForTokenClassification - ours| = " in done.stdout
    model = load_hf("BertForTokenClassification", str(tmp_path / "hf"))
    assert model.config.id2label == {0: "O", 1: "B-LOC", 2: "I-LOC"}
