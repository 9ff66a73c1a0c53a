"""Converters (HF, Google TF, MindSpore zoo): each on small files the test writes, checked by outputs."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import mindspore as ms
import pytest
import yaml
from mindspore import Tensor

from src.model.checkpoint import CheckpointError, load_model, read_metadata
from src.config import BertConfig, ConfigError, to_dict
from src.model.convert import convert_hf, convert_tf, convert_zoo, tf_name
from src.model.bert import BertModel
from src.model.heads import BertForMaskedLM, BertForSequenceClassification

from conftest import ROOT, needs
from test_torch_bin import _dict_pickle, _tensor, _write_zip

HF_KEYS = {"vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
           "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "initializer_range"}


def batch(config, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, config.vocab_size, (2, 7))
    mask = np.array([[1] * 7, [1] * 4 + [0] * 3])
    return Tensor(ids * mask, ms.int32), Tensor(np.zeros((2, 7)), ms.int32), Tensor(mask, ms.int32)


def outputs(net, config):
    net.set_train(False)
    return net(*batch(config))[0].asnumpy()


def params_of(net):
    return {p.name: p.asnumpy() for p in net.get_parameters()}


def hf_config_json(config, path, **extra):
    data = {k: v for k, v in to_dict(config).items() if k in HF_KEYS}
    data.update(hidden_act="gelu", model_type="bert", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    data.update(extra)
    path.write_text(json.dumps(data))


def write_safetensors(folder, state, config, **extra):
    from safetensors.numpy import save_file
    folder.mkdir(exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(folder / "model.safetensors"))
    hf_config_json(config, folder / "config.json", **extra)
    return folder


def hf_pretraining_state(net):
    """What HF BertForPreTraining.save_pretrained writes for `net` (tied copies, NSP head, buffers)."""
    state = params_of(net)
    state["cls.predictions.decoder.weight"] = state["bert.embeddings.word_embeddings.weight"].copy()
    state["cls.predictions.decoder.bias"] = state["cls.predictions.bias"].copy()
    state["cls.seq_relationship.weight"] = np.ones((2, net.config.hidden_size), np.float32)
    state["cls.seq_relationship.bias"] = np.zeros(2, np.float32)
    state["bert.embeddings.position_ids"] = np.arange(net.config.max_position_embeddings)[None]
    # Old HF files (converted from TF) name LayerNorm parameters gamma/beta.
    state["bert.embeddings.LayerNorm.gamma"] = state.pop("bert.embeddings.LayerNorm.weight")
    state["bert.embeddings.LayerNorm.beta"] = state.pop("bert.embeddings.LayerNorm.bias")
    return state


def test_hf_safetensors_masked_lm_round_trip(tiny_config, tmp_path):
    source = BertForMaskedLM(tiny_config)
    folder = write_safetensors(tmp_path / "hf", hf_pretraining_state(source), tiny_config,
                               architectures=["BertForPreTraining"])
    out = convert_hf(str(folder), str(tmp_path / "out" / "mlm.ckpt"))
    net = load_model(out)
    assert isinstance(net, BertForMaskedLM)
    np.testing.assert_array_equal(outputs(net, tiny_config), outputs(source, tiny_config))
    meta = read_metadata(out)
    assert meta["head"] == {"type": "masked_lm"}
    assert set(meta["not_converted"]) == {"cls.predictions.decoder.weight", "cls.predictions.decoder.bias",
                                          "cls.seq_relationship.weight", "cls.seq_relationship.bias",
                                          "bert.embeddings.position_ids"}


def test_hf_sequence_classifier_keeps_hf_head_function(tiny_config, tmp_path):
    source = BertForSequenceClassification(tiny_config, 3, pooled_activation="none")
    folder = write_safetensors(tmp_path / "hf", params_of(source), tiny_config,
                               architectures=["BertForSequenceClassification"])
    net = load_model(convert_hf(str(folder), str(tmp_path / "cls.ckpt")))
    assert isinstance(net, BertForSequenceClassification)
    assert net.num_labels == 3 and net.pooled_activation == "none"
    np.testing.assert_array_equal(outputs(net, tiny_config), outputs(source, tiny_config))


def write_torch_zip(path, state):
    """A pytorch_model.bin (zip layout) written byte by byte, as torch.save lays it out."""
    records, entries = {}, {}
    for i, (name, value) in enumerate(state.items()):
        value = np.ascontiguousarray(value, np.float32)
        strides = [int(np.prod(value.shape[k + 1:])) for k in range(value.ndim)]
        entries[name] = _tensor("FloatStorage", str(i), value.size, 0, value.shape, strides)
        records[f"data/{i}"] = value.tobytes()
    records["data.pkl"] = _dict_pickle(entries)
    records["version"] = b"3\n"
    return _write_zip(path, records)


def test_hf_pytorch_bin_is_read_without_torch(tiny_config, tmp_path):
    source = BertModel(tiny_config)
    folder = tmp_path / "hf"
    folder.mkdir()
    write_torch_zip(folder / "pytorch_model.bin", params_of(source))  # bare BertModel names
    hf_config_json(tiny_config, folder / "config.json")
    net = load_model(convert_hf(str(folder), str(tmp_path / "bb.ckpt")))
    assert isinstance(net, BertModel)
    np.testing.assert_array_equal(outputs(net, tiny_config), outputs(source, tiny_config))


def test_hf_unknown_and_missing_tensors_are_listed(tiny_config, tmp_path):
    state = params_of(BertModel(tiny_config))
    state["encoder.layer.0.attention.self.rotary.weight"] = np.zeros(3, np.float32)
    del state["pooler.dense.weight"], state["pooler.dense.bias"]
    folder = write_safetensors(tmp_path / "hf", state, tiny_config)
    with pytest.raises(CheckpointError) as err:
        convert_hf(str(folder), str(tmp_path / "x.ckpt"))
    msg = str(err.value)
    assert "missing from the checkpoint (2): pooler.dense.bias, pooler.dense.weight" in msg
    assert "unexpected in the checkpoint (1): encoder.layer.0.attention.self.rotary.weight" in msg
    assert not os.path.exists(tmp_path / "x.ckpt")


def test_hf_missing_pooler_can_be_allowed_explicitly(tiny_config, tmp_path):
    state = {k: v for k, v in params_of(BertModel(tiny_config)).items() if not k.startswith("pooler.")}
    folder = write_safetensors(tmp_path / "hf", state, tiny_config)
    out = convert_hf(str(folder), str(tmp_path / "x.ckpt"), allow_missing=["bert.pooler.*"])
    assert read_metadata(out)["initialised_not_converted"] == ["pooler.dense.bias", "pooler.dense.weight"]
    load_model(out)  # the written checkpoint is complete and loads strictly


def test_hf_untied_decoder_is_refused(tiny_config, tmp_path):
    state = hf_pretraining_state(BertForMaskedLM(tiny_config))
    state["cls.predictions.decoder.weight"] += 1.0
    folder = write_safetensors(tmp_path / "hf", state, tiny_config)
    with pytest.raises(CheckpointError, match="cls.predictions.decoder.weight is not tied"):
        convert_hf(str(folder), str(tmp_path / "x.ckpt"))


def test_hf_relative_position_models_are_refused(tiny_config, tmp_path):
    folder = write_safetensors(tmp_path / "hf", params_of(BertModel(tiny_config)), tiny_config,
                               position_embedding_type="relative_key")
    with pytest.raises(Exception, match="position_embedding_type is 'relative_key'"):
        convert_hf(str(folder), str(tmp_path / "x.ckpt"))


# --- Google TF BERT --------------------------------------------------------------------------------
def to_tf_variables(net):
    """Our parameters under Google BERT's TF variable names (kernels [in, out]), plus optimizer slots."""
    inverse = {}
    for name, value in params_of(net).items():
        tf = name.replace("bert.encoder.layer.", "bert/encoder/layer_").replace(".", "/")
        tf = tf.replace("LayerNorm/weight", "LayerNorm/gamma").replace("LayerNorm/bias", "LayerNorm/beta")
        tf = {"classifier/weight": "output_weights", "classifier/bias": "output_bias",
              "cls/predictions/bias": "cls/predictions/output_bias"}.get(tf, tf)
        if tf.endswith("/weight") and "embeddings" not in tf:
            tf, value = tf[:-len("weight")] + "kernel", value.T
        tf = re.sub(r"^(bert/embeddings/\w+_embeddings)/weight$", r"\1", tf)  # Google: bare table variables
        assert tf_name(tf)[0] == name, (tf, name)
        inverse[tf] = np.ascontiguousarray(value)
    google = {"bert/embeddings/word_embeddings", "bert/embeddings/position_embeddings",
              "bert/embeddings/token_type_embeddings", "bert/embeddings/LayerNorm/gamma",
              "bert/encoder/layer_0/attention/self/query/kernel", "bert/encoder/layer_0/output/LayerNorm/beta",
              "bert/encoder/layer_1/intermediate/dense/kernel", "bert/pooler/dense/kernel"}
    assert google <= set(inverse), sorted(google - set(inverse))  # names as in google-research/bert
    inverse["global_step"] = np.array(7, np.int64)
    inverse["bert/pooler/dense/kernel/adam_m"] = np.zeros_like(inverse["bert/pooler/dense/kernel"])
    return inverse


WRITE_TF_CHECKPOINT = r"""
import sys, numpy as np, tensorflow as tf
arrays = dict(np.load(sys.argv[1]))
graph = tf.Graph()
with graph.as_default():
    variables = [tf.compat.v1.Variable(v, name=k) for k, v in arrays.items()]
    saver = tf.compat.v1.train.Saver(variables)
    with tf.compat.v1.Session() as sess:
        sess.run(tf.compat.v1.global_variables_initializer())
        saver.save(sess, sys.argv[2])
"""


@pytest.mark.slow
@pytest.mark.parametrize("head", ["masked_lm", "sequence_classification"])
def test_google_tf_checkpoint(tiny_config, tmp_path, head):
    needs("tensorflow", "optional TensorFlow extra (pip install -r requirements-tf.txt)")
    import dataclasses
    config = dataclasses.replace(tiny_config, hidden_act="gelu_tanh")  # what Google's "gelu" computes
    source = BertForMaskedLM(config) if head == "masked_lm" else BertForSequenceClassification(config, 2, "none")
    np.savez(tmp_path / "vars.npz", **to_tf_variables(source))
    prefix = str(tmp_path / "tf" / "bert_model.ckpt")
    subprocess.run([sys.executable, "-c", WRITE_TF_CHECKPOINT, str(tmp_path / "vars.npz"), prefix], check=True,
                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    bert_config = tmp_path / "tf" / "bert_config.json"
    hf_config_json(tiny_config, bert_config)  # Google's file says "gelu"
    out = convert_tf(prefix, str(bert_config), str(tmp_path / "tf.ckpt"),
                     pooled_activation="none" if head != "masked_lm" else None)
    net = load_model(out)
    assert net.config.hidden_act == "gelu_tanh"
    np.testing.assert_allclose(outputs(net, config), outputs(source, config), atol=1e-6)
    meta = read_metadata(out)
    assert meta["head"]["type"] == head
    assert {"global_step", "bert/pooler/dense/kernel/adam_m"} <= set(meta["not_converted"])


# --- MindSpore model zoo ---------------------------------------------------------------------------
ZOO_LAYER = {
    "attention.self.query": "attention.attention.query_layer", "attention.self.key": "attention.attention.key_layer",
    "attention.self.value": "attention.attention.value_layer", "attention.output.LayerNorm": "attention.output.layernorm",
    "intermediate.dense": "intermediate", "output.LayerNorm": "output.layernorm",
}


def to_zoo(name, root, attr):
    """Our name -> model-zoo name (root: prefix of the BertModel; attr: 'bert_' or 'tinybert_')."""
    n = name[len("bert."):] if name.startswith("bert.") else name
    n = (n.replace("embeddings.word_embeddings.weight", f"{attr}embedding_lookup.embedding_table")
          .replace("embeddings.token_type_embeddings.weight", f"{attr}embedding_postprocessor.token_type_embedding.embedding_table")
          .replace("embeddings.position_embeddings.weight", f"{attr}embedding_postprocessor.full_position_embedding.embedding_table")
          .replace("embeddings.LayerNorm.weight", f"{attr}embedding_postprocessor.layernorm.gamma")
          .replace("embeddings.LayerNorm.bias", f"{attr}embedding_postprocessor.layernorm.beta")
          .replace("pooler.dense", "dense"))
    if n.startswith("encoder.layer."):
        for ours, zoo in ZOO_LAYER.items():
            n = n.replace(f".{ours}.", f".{zoo}.")
        n = n.replace("encoder.layer.", f"{attr}encoder.layers.").replace("LayerNorm", "layernorm")
        n = n.replace("layernorm.weight", "layernorm.gamma").replace("layernorm.bias", "layernorm.beta")
    if n.startswith("classifier."):
        return root[:-len("bert.")] + n.replace("classifier.", "dense_1.")
    return root + n


def write_zoo(net, path, root, attr, training_state=True):
    params = {to_zoo(k, root, attr): v for k, v in params_of(net).items()}
    if training_state:  # what a zoo ModelCheckpoint of the whole train cell also holds
        params.update({f"adam_m.{k}": np.zeros_like(v) for k, v in list(params.items())[:3]})
        params.update(global_step=np.array([5], np.int32), scale_sense=np.array(65536.0, np.float32),
                      current_iterator_step=np.array(5, np.int32))
    ms.save_checkpoint([{"name": k, "data": Tensor(v)} for k, v in params.items()], str(path))
    return str(path)


def test_zoo_bertcls_finetune_checkpoint(tiny_config, tmp_path):
    source = BertForSequenceClassification(tiny_config, 2, pooled_activation="none")
    path = write_zoo(source, tmp_path / "classifier-3_100.ckpt", "bert.bert.", "bert_")
    out = convert_zoo(path, tiny_config, str(tmp_path / "t.ckpt"), pooled_activation="none")
    np.testing.assert_array_equal(outputs(load_model(out), tiny_config), outputs(source, tiny_config))
    dropped = read_metadata(out)["not_converted"]
    assert "global_step" in dropped and any(k.startswith("adam_m.") for k in dropped)


def test_zoo_classifier_needs_the_head_function_named(tiny_config, tmp_path):
    path = write_zoo(BertForSequenceClassification(tiny_config, 2), tmp_path / "c.ckpt", "bert.bert.", "bert_")
    with pytest.raises(CheckpointError, match="--pooled_activation relu .* --pooled_activation none .* "
                                              "or --head token_classification"):
        convert_zoo(path, tiny_config, str(tmp_path / "t.ckpt"))


def test_zoo_ner_checkpoint_converts_to_token_classification(tiny_config, tmp_path):
    from src.model.heads import BertForTokenClassification
    source = BertForTokenClassification(tiny_config, 5)
    path = write_zoo(source, tmp_path / "ner.ckpt", "bert.bert.", "bert_")
    out = convert_zoo(path, tiny_config, str(tmp_path / "ner_ms.ckpt"), head="token_classification")
    assert read_metadata(out)["head"] == {"type": "token_classification", "num_labels": 5}
    np.testing.assert_array_equal(outputs(load_model(out), tiny_config), outputs(source, tiny_config))


def test_flags_that_do_not_apply_are_refused(tiny_config, tmp_path):
    folder = write_safetensors(tmp_path / "hf", params_of(BertModel(tiny_config)), tiny_config)
    with pytest.raises(CheckpointError, match="--num_labels does not apply to a backbone head"):
        convert_hf(str(folder), str(tmp_path / "x.ckpt"), num_labels=3)
    with pytest.raises(CheckpointError, match="--pooled_activation applies to sequence_classification, not to backbone"):
        convert_hf(str(folder), str(tmp_path / "x.ckpt"), pooled_activation="relu")


@pytest.mark.parametrize("text,message", [("{not json", "not valid YAML/JSON"), ("[1, 2]", "expected a JSON object")])
def test_malformed_config_json_names_the_file(tiny_config, tmp_path, text, message):
    folder = write_safetensors(tmp_path / "hf", params_of(BertModel(tiny_config)), tiny_config)
    (folder / "config.json").write_text(text)
    with pytest.raises(ConfigError, match=f"{folder / 'config.json'}: {message}"):
        convert_hf(str(folder), str(tmp_path / "x.ckpt"))


def test_zoo_tinybert_general_distillation_checkpoint(tiny_config, tmp_path):
    source = BertModel(tiny_config)
    path = write_zoo(source, tmp_path / "tiny_bert_1_100.ckpt", "bert.", "tinybert_", training_state=False)
    out = convert_zoo(path, tiny_config, str(tmp_path / "gd.ckpt"))
    np.testing.assert_array_equal(outputs(load_model(out), tiny_config), outputs(source, tiny_config))


def test_zoo_wrong_architecture_is_reported(tiny_config, tmp_path):
    import dataclasses
    path = write_zoo(BertModel(tiny_config), tmp_path / "g.ckpt", "bert.", "tinybert_", training_state=False)
    deeper = dataclasses.replace(tiny_config, num_hidden_layers=3)
    with pytest.raises(CheckpointError, match=r"missing from the checkpoint \(16\): encoder.layer.2.attention.output.LayerNorm.bias, .* and 6 more"):
        convert_zoo(path, deeper, str(tmp_path / "x.ckpt"))


def test_zoo_rejects_a_non_zoo_file(tiny_config, tmp_path):
    path = tmp_path / "other.ckpt"
    ms.save_checkpoint([{"name": "foo.weight", "data": Tensor(np.zeros(2, np.float32))}], str(path))
    with pytest.raises(CheckpointError, match="not a MindSpore model-zoo BERT/TinyBERT checkpoint"):
        convert_zoo(str(path), tiny_config, str(tmp_path / "x.ckpt"))


# --- the command -----------------------------------------------------------------------------------
SCRIPT = os.path.join(ROOT, "scripts", "convert_checkpoint.py")


@pytest.mark.parametrize("sub", ["hf", "tf", "zoo"])
def test_each_converter_command_has_help(sub):
    out = subprocess.run([sys.executable, SCRIPT, sub, "--help"], capture_output=True, text=True, check=True)
    assert "--input" in out.stdout and "--output" in out.stdout


@pytest.mark.slow
def test_zoo_command_end_to_end(tiny_config, tmp_path):
    source = BertForSequenceClassification(tiny_config, 2, pooled_activation="relu")
    path = write_zoo(source, tmp_path / "eval_model.ckpt", "bert.bert.", "bert_")
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(to_dict(tiny_config)))
    out = tmp_path / "conv.ckpt"
    run = subprocess.run([sys.executable, SCRIPT, "zoo", "--input", path, "--config", str(cfg),
                          "--output", str(out), "--pooled_activation", "relu"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    np.testing.assert_array_equal(outputs(load_model(str(out)), tiny_config), outputs(source, tiny_config))
    bad = subprocess.run([sys.executable, SCRIPT, "zoo", "--input", path, "--preset", "tinybert-4l-312",
                          "--output", str(tmp_path / "bad.ckpt"), "--pooled_activation", "relu"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "shape mismatch" in bad.stderr


# --- released General TinyBERT checkpoints: the GD projection comes along -------------------------------------------
def original_general_tinybert(tiny_config, folder, teacher_hidden=24, seed=0):
    """What the original TinyBERT's General_TinyBERT_*/ holds: TinyBertForPreTraining's pytorch_model.bin (BERT, MLM
    and NSP heads, `fit_dense` student -> teacher hidden) and its config.json with the original's extra keys."""
    source = BertForMaskedLM(tiny_config)
    state = hf_pretraining_state(source)
    rng = np.random.default_rng(seed)
    state["fit_dense.weight"] = rng.normal(0, 0.1, (teacher_hidden, tiny_config.hidden_size)).astype(np.float32)
    state["fit_dense.bias"] = rng.normal(0, 0.1, teacher_hidden).astype(np.float32)
    folder.mkdir(parents=True)
    write_torch_zip(folder / "pytorch_model.bin", state)
    hf_config_json(tiny_config, folder / "config.json", emb_size=tiny_config.hidden_size, structure=[], cell={},
                   pre_trained="", training="")
    return source, state


def test_original_general_tinybert_converts_with_its_fit_dense(tiny_config, tmp_path):
    from src.distill.loss import build_fit_dense
    from src.training.checkpoints import fit_dense_beside, load_fit_dense
    source, state = original_general_tinybert(tiny_config, tmp_path / "General_TinyBERT_4L_312D")
    out = convert_hf(str(tmp_path / "General_TinyBERT_4L_312D"), str(tmp_path / "gd" / "general_tinybert.ckpt"))
    np.testing.assert_array_equal(outputs(load_model(out), tiny_config), outputs(source, tiny_config))
    student = load_model(out, head="backbone")  # strictly, as the GD / TD student
    assert isinstance(student, BertModel)
    meta = read_metadata(out)
    assert meta["fit_dense"] == {"file": "general_tinybert.fit_dense.ckpt", "count": 1,
                                 "student_hidden": tiny_config.hidden_size, "teacher_hidden": 24}
    assert not any("fit_dense" in name for name in meta["not_converted"])  # carried, not dropped
    path = fit_dense_beside(out)
    assert path == str(tmp_path / "gd" / "general_tinybert.fit_dense.ckpt")
    assert read_metadata(path)["head"] == {"type": "fit_dense", "count": 1,
                                           "student_hidden": tiny_config.hidden_size, "teacher_hidden": 24}
    teacher = BertConfig(**{**to_dict(tiny_config), "hidden_size": 24, "intermediate_size": 48})
    projection = build_fit_dense(tiny_config, teacher, [(0, 0), (1, 2)], "shared")
    assert load_fit_dense(projection, path)
    np.testing.assert_array_equal(projection.layers[0].weight.asnumpy(), state["fit_dense.weight"])
    np.testing.assert_array_equal(projection.layers[0].bias.asnumpy(), state["fit_dense.bias"])


def test_zoo_gd_train_cell_with_fit_dense_and_teacher(tiny_config, tmp_path):
    """A model-zoo GD checkpoint saved as the whole loss cell: the TinyBERT student (`bert.tinybert_*`), its
    `fit_dense` and the BERT teacher (`teacher.bert_*`): the student and the projection convert, the teacher is
    recorded as not converted."""
    from src.training.checkpoints import fit_dense_beside
    student = BertModel(tiny_config)
    teacher_config = BertConfig(**{**to_dict(tiny_config), "hidden_size": 24, "intermediate_size": 48})
    params = {to_zoo(k, "teacher.", "bert_"): v for k, v in params_of(BertModel(teacher_config)).items()}
    params.update({to_zoo(k, "bert.", "tinybert_"): v for k, v in params_of(student).items()})
    weight = np.full((24, tiny_config.hidden_size), 0.5, np.float32)
    params.update({"fit_dense.weight": weight, "fit_dense.bias": np.ones(24, np.float32)})
    path = str(tmp_path / "tiny_bert_gd.ckpt")
    ms.save_checkpoint([{"name": k, "data": Tensor(v)} for k, v in params.items()], path)
    out = convert_zoo(path, tiny_config, str(tmp_path / "out" / "gd.ckpt"))
    np.testing.assert_array_equal(outputs(load_model(out), tiny_config), outputs(student, tiny_config))
    dropped = read_metadata(out)["not_converted"]
    assert "teacher.bert_embedding_lookup.embedding_table" in dropped and "teacher" in \
        dropped["teacher.bert_embedding_lookup.embedding_table"]
    np.testing.assert_array_equal(load_checkpoint_dict(fit_dense_beside(out))["layers.0.weight"], weight)


def load_checkpoint_dict(path):
    from src.model.checkpoint import read_checkpoint
    return read_checkpoint(path)


def test_a_projection_that_does_not_fit_or_is_missing_is_an_error(tiny_config, tmp_path):
    from src.training.checkpoints import fit_dense_beside
    source = BertModel(tiny_config)
    state = params_of(source)
    state["fit_dense.weight"] = np.zeros((24, tiny_config.hidden_size + 1), np.float32)
    state["fit_dense.bias"] = np.zeros(24, np.float32)
    folder = write_safetensors(tmp_path / "bad", state, tiny_config)
    with pytest.raises(CheckpointError, match=rf"fit_dense projection 0 has weight \[24, {tiny_config.hidden_size + 1}\] "
                                              rf"and bias \[24\]; expected \[teacher_hidden, {tiny_config.hidden_size}\]"):
        convert_hf(str(folder), str(tmp_path / "x.ckpt"))
    del state["fit_dense.weight"]
    folder = write_safetensors(tmp_path / "half", state, tiny_config)
    with pytest.raises(CheckpointError, match="fit_dense projection 0 has no weight"):
        convert_hf(str(folder), str(tmp_path / "y.ckpt"))
    original_general_tinybert(tiny_config, tmp_path / "good")
    out = convert_hf(str(tmp_path / "good"), str(tmp_path / "z" / "gd.ckpt"))
    os.remove(str(tmp_path / "z" / "gd.fit_dense.ckpt"))
    with pytest.raises(CheckpointError, match=r"its .json names the projection gd.fit_dense.ckpt, which is not in"):
        fit_dense_beside(out)
