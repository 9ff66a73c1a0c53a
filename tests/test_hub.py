"""mindspore_hub_conf.py, imported and called the way mindspore_hub.load does it.

mindspore_hub's `_get_network_from_cache` puts the cloned repository first on sys.path, imports the file with
`importlib.util.spec_from_file_location("mindspore_hub_conf.py", path)`, changes into the repository and calls
`create_network(card_name.lower(), *args, **kwargs)`. The small networks are built, run and round-tripped
through a strict checkpoint load; BERT-base and the BERT-large of the bert_thor card are built with deferred
parameter initialisation (their truncated-normal init alone takes ~25 s and ~50 s on this CPU) and checked by
structure and exact parameter count.
"""
import importlib.util
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from mindspore import Tensor

from src.model.checkpoint import CheckpointError, load_checkpoint, save_model
from src.model.bert import BertModel
from src.model.heads import BertForSequenceClassification, BertForTokenClassification, count_parameters
from src.data.task_data import Summary, labels_from_data, parse_examples
from tests.conftest import ROOT

HUB_FILE = os.path.join(ROOT, "mindspore_hub_conf.py")
ENV = dict(os.environ, MS_COMPILER_CACHE_ENABLE="0", GLOG_v="3")

# name -> (class, vocab, labels); geometry of every TinyBERT variant: 4 layers, hidden 312, 12 heads, FFN 1200.
SMALL = {
    "tinybert": (BertModel, 30522, None),
    "tinybert_sst2": (BertForSequenceClassification, 30522, 2),
    "tinybert_mnli": (BertForSequenceClassification, 30522, 3),
    "tinybert_qnli": (BertForSequenceClassification, 30522, 2),
    "tinybert_tnews": (BertForSequenceClassification, 21128, 15),
    "tinybert_cluener": (BertForTokenClassification, 21128, 41),
}
# BertModel (with pooler) parameter counts published for these checkpoints (e.g. Hugging Face's model cards).
LARGE = {"bert_base": (12, 768, 12, 3072, 109_482_240), "bert_thor": (24, 1024, 16, 4096, 335_141_888)}


def load_hub_module():
    """Import mindspore_hub_conf.py exactly as mindspore_hub.load does (module name and all)."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    spec = importlib.util.spec_from_file_location("mindspore_hub_conf.py", HUB_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def hub():
    return load_hub_module()


def create(hub_module, name, *args, **kwargs):
    """Call create_network from inside the repository, as the hub loader does, then come back."""
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        return hub_module.create_network(name.lower(), *args, **kwargs)
    finally:
        os.chdir(cwd)


def bert_parameters(layers, hidden, ffn, vocab, positions=512, types=2):
    """Parameters of BertModel with pooler, counted by hand: embeddings + layers + pooler."""
    embeddings = (vocab + positions + types) * hidden + 2 * hidden
    layer = 4 * (hidden * hidden + hidden) + 2 * hidden + (hidden * ffn + ffn) + (ffn * hidden + hidden) + 2 * hidden
    return embeddings + layers * layer + hidden * hidden + hidden


def inputs(batch=2, seq=8, vocab=99, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab, (batch, seq)).astype(np.int32)
    types = np.zeros((batch, seq), np.int32)
    types[:, seq // 2:] = 1
    mask = np.ones((batch, seq), np.int32)
    mask[-1, seq - 2:] = 0  # padding in the last row
    return Tensor(ids), Tensor(types), Tensor(mask)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_small_networks_build_and_run(hub, name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cls, vocab, labels = SMALL[name]
    start = time.perf_counter()
    net = create(hub, name)
    built = time.perf_counter() - start
    assert type(net) is cls and not net.training
    cfg = net.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size,
            cfg.vocab_size) == (4, 312, 12, 1200, vocab)
    head = 0 if labels is None else 312 * labels + labels
    assert count_parameters(net) == bert_parameters(4, 312, 1200, vocab) + head
    assert net.seq_length == 128 and net.batch_size is None and net.hub_name == name
    outputs = net(*inputs(vocab=vocab))
    if labels is None:
        assert outputs[0].shape == (2, 8, 312) and outputs[1].shape == (2, 312) and len(outputs[2]) == 5
    else:
        assert len(net.label_names) == labels
        assert outputs[0].shape == ((2, 8, labels) if cls is BertForTokenClassification else (2, labels))
    assert np.isfinite(outputs[0].asnumpy()).all()
    print(f"{name}: built in {built:.1f} s, {count_parameters(net) / 1e6:.2f} M parameters")


def test_cluener_tags_match_the_converter_on_real_data(hub, shared_data):
    """The 41 hub tags are exactly what src.data.task_data computes from the CLUENER dev set (all 10 types occur)."""
    examples = parse_examples("cluener", os.path.join(shared_data, "clue", "cluener", "dev.json"), False, Summary())
    assert hub.cluener_labels() == labels_from_data("cluener", examples)
    assert len(hub.cluener_labels()) == 1 + 4 * 10 == 41


@pytest.mark.parametrize("name", sorted(LARGE))
def test_large_networks_build_with_deferred_init(hub, name):
    from mindspore.nn.utils import no_init_parameters  # pylint: disable=import-outside-toplevel

    layers, hidden, heads, ffn, published = LARGE[name]
    start = time.perf_counter()
    with no_init_parameters():  # the structure is built; the ~1.3 GB of weights are never initialised
        net = create(hub, name, is_training=False, batch_size=12)
    built = time.perf_counter() - start
    cfg = net.config
    assert type(net) is BertModel and len(net.encoder.layer) == layers == cfg.num_hidden_layers
    assert (cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size, cfg.vocab_size) == (hidden, heads, ffn,
                                                                                                30522)
    assert count_parameters(net) == published == bert_parameters(layers, hidden, ffn, 30522)
    assert net.batch_size == 12 and net.seq_length == (512 if name == "bert_thor" else 128)
    assert all(p.has_init for p in net.get_parameters())  # nothing was materialised
    print(f"{name}: structure built in {built:.2f} s, {published / 1e6:.1f} M parameters")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(LARGE))
def test_large_networks_full_build_and_forward(hub, name, tmp_path, monkeypatch):
    """The real initialisation and one forward pass at batch 1, sequence 8 (~75 s and 2 GB for both)."""
    monkeypatch.chdir(tmp_path)
    start = time.perf_counter()
    net = create(hub, name)
    built = time.perf_counter() - start
    ids, types, mask = inputs(batch=1, vocab=30522)
    start = time.perf_counter()
    sequence, pooled = net(ids, types, mask)[:2]
    hidden = LARGE[name][1]
    assert sequence.shape == (1, 8, hidden) and pooled.shape == (1, hidden)
    assert np.isfinite(sequence.asnumpy()).all()
    print(f"{name}: built in {built:.1f} s, forward [1, 8] in {time.perf_counter() - start:.1f} s")


@pytest.mark.slow
def test_kwargs_are_checked_and_never_leak_into_later_calls(hub, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    five = create(hub, "tinybert_sst2", num_labels=5, seq_length=64, batch_size=4)
    assert five.classifier.weight.shape == (5, 312) and five.label_names == [] and five.seq_length == 64
    again = create(hub, "TinyBERT_SST2")  # the hub lower-cases card names; a fresh config every call
    assert again.classifier.weight.shape == (2, 312) and again.label_names == ["0", "1"] and again.seq_length == 128
    assert again.config == five.config and again.config is not five.config

    train = create(hub, "tinybert_sst2", is_training=True)
    assert train.training
    x = inputs(vocab=30522)
    assert not np.allclose(train(*x)[0].asnumpy(), train(*x)[0].asnumpy())  # dropout on
    train.set_train(False)
    np.testing.assert_array_equal(train(*x)[0].asnumpy(), train(*x)[0].asnumpy())

    with pytest.raises(ValueError, match=r"seq_length 513 is longer than the model's max_position_embeddings \(512\)"):
        create(hub, "tinybert", seq_length=513)
    with pytest.raises(ValueError, match="seq_length must be a positive integer; got 0"):
        create(hub, "tinybert", seq_length=0)
    with pytest.raises(ValueError, match="num_labels applies to task variants only"):
        create(hub, "tinybert", num_labels=3)
    with pytest.raises(ValueError, match="is_training must be True or False; got 'false'"):
        create(hub, "tinybert", is_training="false")
    with pytest.raises(ValueError) as err:
        create(hub, "tinybert_cola")
    assert "unknown network 'tinybert_cola'" in str(err.value)
    for valid in ("tinybert", "tinybert_sst2", "tinybert_mnli", "tinybert_qnli", "tinybert_tnews", "tinybert_cluener",
                  "bert_base", "bert_thor"):
        assert valid in str(err.value)
    with pytest.raises(TypeError, match=r"unknown keyword argument\(s\) \['use_one_hot'\]; accepted: \['seq_length', "
                                        r"'is_training', 'batch_size', 'num_labels', 'vocab_file'\]"):
        create(hub, "tinybert", use_one_hot=True)
    with pytest.raises(TypeError, match="positional arguments"):
        create(hub, "tinybert", True)  # the reference passed *args on as use_one_hot_embeddings


@pytest.mark.slow
def test_strict_checkpoint_round_trip_and_wrong_shapes(hub, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x = inputs(vocab=30522)
    trained = create(hub, "tinybert_sst2")
    path = save_model(trained, str(tmp_path / "sst2.ckpt"))
    fresh = create(hub, "tinybert_sst2")
    assert not np.allclose(fresh(*x)[0].asnumpy(), trained(*x)[0].asnumpy())
    report = load_checkpoint(fresh, path)
    assert report.loaded == len(list(fresh.get_parameters())) and not report.allowed_missing
    np.testing.assert_array_equal(fresh(*x)[0].asnumpy(), trained(*x)[0].asnumpy())

    # A backbone checkpoint loads strictly into the encoder of a task variant.
    backbone = save_model(create(hub, "tinybert"), str(tmp_path / "tinybert.ckpt"))
    load_checkpoint(create(hub, "tinybert_qnli").bert, backbone)

    three = save_model(create(hub, "tinybert_sst2", num_labels=3), str(tmp_path / "three.ckpt"))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(create(hub, "tinybert_sst2"), three)
    message = str(err.value)
    assert "shape mismatch (2): classifier.bias (3,) vs network (2,), classifier.weight (3, 312) vs network (2, 312)" \
        in message
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(create(hub, "tinybert_tnews"), path)  # English vocabulary into the Chinese variant
    assert "bert.embeddings.word_embeddings.weight (30522, 312) vs network (21128, 312)" in str(err.value)
    assert "classifier.weight (2, 312) vs network (15, 312)" in str(err.value)


@pytest.mark.slow
def test_fresh_interpreter_import_by_path_and_foreign_src_package(tmp_path):
    """In a new process (cwd elsewhere, nothing on PYTHONPATH), as the hub runs it; and a shadowing `src`."""
    script = tmp_path / "load.py"
    script.write_text(f"""
import importlib.util, json, os, sys
path = {HUB_FILE!r}
if sys.argv[1] == "foreign":  # another model-zoo repository's `src` imported first
    os.makedirs("other/src", exist_ok=True)
    open("other/src/__init__.py", "w").close()
    sys.path.insert(0, "other")
    import src
else:
    sys.path.insert(0, os.path.dirname(path))  # what mindspore_hub.load does with the clone
spec = importlib.util.spec_from_file_location("mindspore_hub_conf.py", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
net = module.create_network("tinybert", is_training=False)
print(json.dumps({{"cell": type(net).__name__, "layers": net.config.num_hidden_layers}}))
""")
    env = {k: v for k, v in ENV.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, str(script), "hub"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"cell": "BertModel", "layers": 4}
    proc = subprocess.run([sys.executable, str(script), "foreign"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode != 0
    assert "a different package named 'src' is already imported" in proc.stderr
    assert "Load this network in a fresh Python process" in proc.stderr


def test_a_vocab_file_of_another_size_is_refused_by_name(hub, shared_data, tmp_path, monkeypatch):
    from src.data.vocab import VocabMismatch, fingerprint

    monkeypatch.chdir(tmp_path)
    zh = os.path.join(shared_data, "vocab", "bert-base-chinese-vocab.txt")
    en = os.path.join(shared_data, "vocab", "bert-base-uncased-vocab.txt")
    with pytest.raises(VocabMismatch, match=f"vocab_file {zh} has 21128 tokens but the vocab_size of tinybert_sst2 "
                                            f"is 30522"):
        create(hub, "tinybert_sst2", vocab_file=zh)
    with pytest.raises(VocabMismatch, match="the vocab_size of tinybert_tnews is 21128"):
        create(hub, "tinybert_tnews", vocab_file=en)
    net = create(hub, "tinybert_tnews", vocab_file=zh)
    assert net.vocab_fingerprint == fingerprint(zh)
    assert create(hub, "tinybert_sst2").vocab_fingerprint is None


# --- the model zoo's published task assets, loaded as mindspore_hub.load loads them ------------------------------------
def zoo_td_asset_names(layers=4):
    """The parameter names of a model-zoo TinyBERT TD checkpoint (eval_model.ckpt, the hub cards' assets), written
    out by hand from the zoo's cells (BertModelCLS `bert` inside the TD loss cell, its BertModel `bert` with the
    2020 embedding cells, dense_1 the classifier), independently of src/model/convert.py."""
    r = "bert.bert.bert_"
    names = [r + "embedding_lookup.embedding_table", r + "embedding_postprocessor.embedding_table",
             r + "embedding_postprocessor.full_position_embeddings", r + "embedding_postprocessor.layernorm.gamma",
             r + "embedding_postprocessor.layernorm.beta"]
    for i in range(layers):
        layer = f"{r}encoder.layers.{i}."
        for part in ("query_layer", "key_layer", "value_layer"):
            names += [f"{layer}attention.attention.{part}.weight", f"{layer}attention.attention.{part}.bias"]
        names += [layer + "attention.output.dense.weight", layer + "attention.output.dense.bias",
                  layer + "attention.output.layernorm.gamma", layer + "attention.output.layernorm.beta",
                  layer + "intermediate.weight", layer + "intermediate.bias",
                  layer + "output.dense.weight", layer + "output.dense.bias",
                  layer + "output.layernorm.gamma", layer + "output.layernorm.beta"]
    return names + ["bert.bert.dense.weight", "bert.bert.dense.bias", "bert.dense_1.weight", "bert.dense_1.bias"]


def zoo_shape(name, labels, hidden=384, ffn=1536, vocab=30522):
    table = {"embedding_lookup.embedding_table": (vocab, hidden), "postprocessor.embedding_table": (2, hidden),
             "full_position_embeddings": (512, hidden), "intermediate.weight": (ffn, hidden),
             "intermediate.bias": (ffn,), "output.dense.weight": (hidden, ffn), "dense_1.weight": (labels, hidden),
             "dense_1.bias": (labels,)}
    for suffix, shape in table.items():
        if name.endswith(suffix) and not (suffix == "output.dense.weight" and "attention" in name):
            return shape
    return (hidden, hidden) if name.endswith("weight") else (hidden,)


def write_zoo_asset(path, labels, seed=0):
    import mindspore as ms
    rng = np.random.default_rng(seed)
    params = []
    for name in zoo_td_asset_names():
        shape = zoo_shape(name, labels)
        value = (1.0 + rng.normal(0, 0.05, shape) if name.endswith("gamma") else rng.normal(0, 0.05, shape))
        params.append({"name": name, "data": Tensor(value.astype(np.float32))})
    params.append({"name": "global_step", "data": Tensor(np.array([100], np.int32))})  # as the zoo's files hold
    ms.save_checkpoint(params, str(path))
    return str(path)


def hub_load(hub_module, card_model_name, asset, **kwargs):
    """What mindspore_hub.load(uid, **kwargs) does once it has the card and its asset: create_network(model name,
    **kwargs), check the result is a Cell, load_param_into_net(net, load_checkpoint(asset)) (non-strict; the hub
    never looks at what was not loaded, this returns it)."""
    import mindspore as ms
    net = create(hub_module, card_model_name, **kwargs)
    assert isinstance(net, ms.nn.Cell)
    not_loaded, _ = ms.load_param_into_net(net, ms.load_checkpoint(asset))
    return net, not_loaded


@pytest.mark.slow
@pytest.mark.parametrize("task,labels", [("sst2", 2), ("mnli", 3)])
def test_zoo_task_assets_load_fully_and_the_cards_example_runs_as_written(hub, shared_data, tmp_path, task, labels):
    """A model-zoo TD asset (its names written out by hand above) loads into every parameter of the hub network
    through the hub's non-strict load, gives the logits of the same file converted and loaded strictly, and the
    card's documented loop (mshub.load(model, is_training=False); set_train(False); records with the columns
    input_ids, input_mask, segment_ids, label_ids; logits = network(input_ids, token_type_id, input_mask)) runs."""
    import mindspore as ms
    from src.config import bert_preset
    from src.data.task_data import convert_task_data
    from src.model.checkpoint import load_model
    from src.model.convert import ZOO_MODEL_DEFAULTS, convert_zoo

    asset = write_zoo_asset(tmp_path / f"tinybert_ascend_v190_enwiki128_{task}_official_nlp.ckpt", labels)
    network, not_loaded = hub_load(hub, f"tinybert_enwiki128_{task}", asset, is_training=False)
    assert not_loaded == []  # every parameter came from the asset
    assert {p.name for p in network.get_parameters()} == set(zoo_td_asset_names())
    network.set_train(False)

    # the card's example, with this repository's records (the zoo's column names) in place of its import path
    vocab = os.path.join(shared_data, "vocab", "bert-base-uncased-vocab.txt")
    dev = tmp_path / "dev.tsv"
    with open(os.path.join(shared_data, "glue", "SST-2", "dev.tsv"), encoding="utf-8") as f:
        dev.write_text("".join(f.readline() for _ in range(17)), encoding="utf-8")
    records = str(tmp_path / "dev.mindrecord")
    convert_task_data("sst2", str(dev), records, vocab, seq_length=network.seq_length)
    dataset = ms.dataset.MindDataset(records, shuffle=False).batch(8)
    columns_list = ["input_ids", "input_mask", "segment_ids", "label_ids"]
    outputs = []
    for data in dataset.create_dict_iterator():
        input_data = []
        for i in columns_list:
            input_data.append(data[i])
        input_ids, input_mask, token_type_id, label_ids = input_data
        logits = network(input_ids, token_type_id, input_mask)
        print("net output: ", logits)
        outputs.append((logits.asnumpy(), input_ids, token_type_id, input_mask, label_ids))
    assert sum(o[0].shape[0] for o in outputs) == 16 and outputs[0][0].shape == (8, labels)

    # the same asset converted (strict, every name accounted for) gives the same logits
    config = bert_preset("ms-zoo-tinybert-4l-384", **ZOO_MODEL_DEFAULTS)
    strict = load_model(convert_zoo(asset, config, str(tmp_path / "converted.ckpt"), pooled_activation="relu"))
    strict.set_train(False)
    for logits, ids, types, mask, _ in outputs:
        np.testing.assert_allclose(logits, strict(ids, types, mask)[0].asnumpy(), rtol=0, atol=1e-5)
    assert max(float(np.std(o[0])) for o in outputs) > 1e-3  # the logits are not all alike


def test_zoo_names_round_trip_through_the_converter():
    """Our -> zoo names (the hub's renaming) and the converter's zoo -> ours are inverse on every parameter."""
    from src.config import bert_preset
    from src.model.convert import hf_to_params, zoo_names, zoo_to_state
    from src.model.heads import build_model
    net = build_model(bert_preset("ms-zoo-tinybert-4l-384"), "sequence_classification", num_labels=3,
                      pooled_activation="relu")
    ours = [name for name, _ in net.parameters_and_names()]
    renames = zoo_names(ours)
    assert sorted(renames.values()) == sorted(zoo_td_asset_names())
    state, _ = zoo_to_state({zoo: np.zeros(1, np.float32) for zoo in renames.values()}, "asset")
    params, _ = hf_to_params(state, "asset")
    assert sorted(params) == sorted(ours)
