"""Checkpoint I/O: atomic saves with the config beside them, strict loads that list what is wrong."""
import json
import os
import threading

import numpy as np
import mindspore as ms
import pytest

from src.model import checkpoint as checkpoint_module
from src.model.checkpoint import CheckpointError, load_checkpoint, load_model, load_params, read_checkpoint, read_metadata, read_model_config, save_checkpoint, save_model, sidecar_path
from src.training.checkpoints import CheckpointWriter
from src.model.bert import BertModel
from src.model.heads import BertForSequenceClassification, BertForTokenClassification


def params_of(net):
    return {p.name: p.asnumpy() for p in net.get_parameters()}


def test_round_trip_is_exact_and_saves_the_config(tiny_config, tmp_path):
    ms.set_seed(0)
    net = BertForSequenceClassification(tiny_config, 3, pooled_activation="none")
    path = save_model(net, str(tmp_path / "run" / "student.ckpt"), extra={"step": 12})
    meta = json.loads((tmp_path / "run" / "student.json").read_text())
    assert meta["head"] == {"type": "sequence_classification", "num_labels": 3, "pooled_activation": "none"}
    assert meta["step"] == 12 and meta["model"]["hidden_size"] == 32
    assert read_model_config(path) == tiny_config
    again = load_model(path)
    assert isinstance(again, BertForSequenceClassification) and again.pooled_activation == "none"
    for name, value in params_of(net).items():
        np.testing.assert_array_equal(params_of(again)[name], value)
    assert sorted(os.listdir(tmp_path / "run")) == ["student.ckpt", "student.json"]  # no temporary files


def test_save_is_atomic_when_writing_fails(tiny_config, tmp_path, monkeypatch):
    net = BertModel(tiny_config)
    path = save_model(net, str(tmp_path / "m.ckpt"))
    before = read_checkpoint(path)

    def broken(items, tmp_path_):
        with open(tmp_path_, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module, "write_ckpt_file", broken)
    with pytest.raises(OSError, match="disk full"):
        save_model(BertModel(tiny_config), path)
    after = read_checkpoint(path)  # the previous checkpoint is intact under the final name
    assert all(np.array_equal(before[k], after[k]) for k in before)
    read_metadata(path, verify=True)
    assert sorted(os.listdir(tmp_path)) == ["m.ckpt", "m.json"]  # temporary files removed


def test_weights_and_json_from_different_saves_are_detected(tiny_config, tmp_path):
    ms.set_seed(1)
    first = save_model(BertModel(tiny_config), str(tmp_path / "a" / "m.ckpt"), extra={"step": 100})
    second = save_model(BertModel(tiny_config), str(tmp_path / "b" / "m.ckpt"), extra={"step": 200})
    os.replace(second, first)  # as if a crash happened between the two renames of the second save
    with pytest.raises(CheckpointError, match="do not match the SHA-256 recorded in .*different saves"):
        load_model(first)


def test_strict_load_lists_missing_unexpected_and_shapes(tiny_config, tmp_path):
    net = BertForSequenceClassification(tiny_config, 2)
    params = params_of(net)
    del params["classifier.weight"]
    params["bert.encoder.layer.9.output.dense.weight"] = np.zeros((2, 2), np.float32)
    params["bert.pooler.dense.bias"] = np.zeros(5, np.float32)
    with pytest.raises(CheckpointError) as err:
        load_params(BertForSequenceClassification(tiny_config, 2), params, "file.ckpt")
    msg = str(err.value)
    assert msg.startswith("file.ckpt: does not match the network.")
    assert "missing from the checkpoint (1): classifier.weight" in msg
    assert "unexpected in the checkpoint (1): bert.encoder.layer.9.output.dense.weight" in msg
    assert "shape mismatch (1): bert.pooler.dense.bias (5,) vs network (32,)" in msg


def test_long_lists_are_cut_with_a_count(tiny_config):
    with pytest.raises(CheckpointError, match=r"missing from the checkpoint \(\d+\): .* and \d+ more"):
        load_params(BertModel(tiny_config), {}, "empty")


def test_allowed_gaps_are_reported_not_silent(tiny_config, tmp_path):
    source = BertModel(tiny_config)
    path = save_model(source, str(tmp_path / "gd.ckpt"))
    head = BertForTokenClassification(tiny_config, 4)
    params = {"bert." + k: v for k, v in read_checkpoint(path).items()}
    report = load_params(head, params, path, allow_missing=("classifier.*",))
    assert report.allowed_missing == ("classifier.bias", "classifier.weight")
    np.testing.assert_array_equal(head.bert.embeddings.word_embeddings.weight.asnumpy(),
                                  source.embeddings.word_embeddings.weight.asnumpy())


def test_prefix_load_takes_the_encoder_of_a_head_checkpoint(tiny_config, tmp_path):
    head = BertForSequenceClassification(tiny_config, 2)
    path = save_model(head, str(tmp_path / "td.ckpt"))
    bare = BertModel(tiny_config)
    load_checkpoint(bare, path, prefix="bert.")
    np.testing.assert_array_equal(bare.pooler.dense.weight.asnumpy(), head.bert.pooler.dense.weight.asnumpy())
    with pytest.raises(CheckpointError, match="no parameter name starts with 'teacher.'"):
        load_checkpoint(bare, path, prefix="teacher.")


def test_load_model_can_change_head(tiny_config, tmp_path):
    path = save_model(BertModel(tiny_config), str(tmp_path / "backbone.ckpt"))
    classifier = load_model(path, "sequence_classification", num_labels=5)
    assert classifier.num_labels == 5
    backbone = load_model(save_model(classifier, str(tmp_path / "cls.ckpt")), "backbone")
    assert isinstance(backbone, BertModel)
    with pytest.raises(CheckpointError, match="missing from the checkpoint"):
        load_model(path, "masked_lm")  # a masked-LM head is never invented


def test_load_model_keeps_saved_head_arguments(tiny_config, tmp_path):
    path = save_model(BertForSequenceClassification(tiny_config, 2, pooled_activation="none"),
                      str(tmp_path / "c.ckpt"))
    assert load_model(path, "sequence_classification", num_labels=2).pooled_activation == "none"
    with pytest.raises(CheckpointError, match=r"shape mismatch \(2\): classifier.bias \(2,\) vs network \(3,\)"):
        load_model(path, num_labels=3)


def test_load_model_new_classifier_head_needs_num_labels_and_starts_fresh(tiny_config, tmp_path):
    ner = BertForTokenClassification(tiny_config, 2)
    path = save_model(ner, str(tmp_path / "ner.ckpt"))
    with pytest.raises(CheckpointError, match="a sequence_classification head on a token_classification "
                                              "checkpoint needs num_labels"):
        load_model(path, "sequence_classification")
    cls = load_model(path, "sequence_classification", num_labels=2)
    assert not np.array_equal(cls.classifier.weight.asnumpy(), ner.classifier.weight.asnumpy())
    np.testing.assert_array_equal(cls.bert.pooler.dense.weight.asnumpy(), ner.bert.pooler.dense.weight.asnumpy())


def test_truncated_checkpoint_is_detected(tiny_config, tmp_path):
    path = save_model(BertModel(tiny_config), str(tmp_path / "m.ckpt"))
    size = os.path.getsize(path)
    os.chmod(path, 0o600)
    with open(path, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(CheckpointError, match=rf"file size {size // 2} does not match {size}"):
        read_metadata(path)
    with pytest.raises(CheckpointError, match="cannot be read as a MindSpore checkpoint"):
        read_checkpoint(path)


def test_missing_files_are_named(tiny_config, tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found: .*nope.ckpt"):
        load_checkpoint(BertModel(tiny_config), str(tmp_path / "nope.ckpt"))
    path = str(tmp_path / "bare.ckpt")
    save_checkpoint(BertModel(tiny_config), path)
    os.remove(sidecar_path(path))
    with pytest.raises(CheckpointError, match="no config file beside it"):
        load_model(path)


def test_checkpoint_path_must_end_with_ckpt(tiny_config, tmp_path):
    with pytest.raises(CheckpointError, match="must end with .ckpt"):
        save_checkpoint(BertModel(tiny_config), str(tmp_path / "model.bin"))


def test_checkpoint_writer_overlaps_saves_in_order_and_reports_failures():
    """Training goes on while a save runs; the next save and wait() block until it is done; a failed write is
    raised on the training thread, once; enabled=False writes inline."""
    writer = CheckpointWriter()
    events = []
    release = threading.Event()

    def slow_save():
        release.wait(10)
        events.append("first")

    writer.submit(slow_save)
    assert events == []  # submit returned while the save is still running
    release.set()
    writer.submit(lambda: events.append("second"))  # starts only after the first is on disk
    writer.wait()
    assert events == ["first", "second"]
    writer.submit(lambda: 1 / 0)
    with pytest.raises(RuntimeError, match="writing a checkpoint failed: division by zero"):
        writer.wait()
    writer.wait()  # reported once
    inline = CheckpointWriter(enabled=False)
    inline.submit(lambda: events.append("inline"))
    assert events[-1] == "inline"


def test_ckpt_files_are_the_bytes_mindspore_writes(tmp_path):
    """write_ckpt_file (GIL-free, used by every save) writes exactly what mindspore.save_checkpoint writes for
    the same tensors, and returns the file's SHA-256; MindSpore's own loader reads it back."""
    rng = np.random.default_rng(0)
    items = [("bert.embeddings.word_embeddings.embedding_table", rng.standard_normal((300, 17)).astype(np.float32)),
             ("ids", np.arange(-5, 300, dtype=np.int32)), ("step", np.array([1234567], np.int32)),
             ("loss_scale", np.array(65536.0, np.float32)), ("big_step", np.array([2 ** 40], np.int64)),
             ("half", rng.standard_normal((3, 4, 5)).astype(np.float16)), ("flags", np.array([True, False])),
             ("non_contiguous", rng.standard_normal((6, 8)).astype(np.float64).T)]
    ours, theirs = str(tmp_path / "ours.ckpt"), str(tmp_path / "theirs.ckpt")
    digest = checkpoint_module.write_ckpt_file(items, ours)
    ms.save_checkpoint([{"name": n, "data": ms.Tensor(v if v.flags.c_contiguous else v.copy())} for n, v in items],
                       theirs)
    assert open(ours, "rb").read() == open(theirs, "rb").read()
    assert digest == checkpoint_module.file_sha256(ours)
    loaded = ms.load_checkpoint(ours)
    for name, value in items:
        assert loaded[name].shape == value.shape, name  # a 0-d loss scale stays 0-d
        np.testing.assert_array_equal(loaded[name].asnumpy(), value, err_msg=name)
    with pytest.raises(CheckpointError, match="empty.*shape \\(0, 3\\)"):
        checkpoint_module.write_ckpt_file([("nothing", np.zeros((0, 3), np.float32))], str(tmp_path / "e.ckpt"))
    with pytest.raises(CheckpointError, match="complex64"):
        checkpoint_module.write_ckpt_file([("z", np.zeros(2, np.complex64))], str(tmp_path / "z.ckpt"))


def test_a_loaded_network_takes_the_configs_dropout_and_keeps_its_layer_norm_eps(tiny_config, tmp_path, caplog):
    """Dropout is a training setting: a student loaded from GD (saved with 0.1) trains with the config's value; the
    checkpoint's layer_norm_eps stays (its weights were trained with it) and a config asking another is logged."""
    import dataclasses
    import logging

    from src.infra.backend import Backend
    from src.model.bert import BertModel as Model
    from src.training.networks import load_network

    path = save_model(Model(dataclasses.replace(tiny_config, hidden_dropout_prob=0.1,
                                                attention_probs_dropout_prob=0.1)), str(tmp_path / "gd.ckpt"))
    rng = np.random.default_rng(0)
    x = (ms.Tensor(rng.integers(1, tiny_config.vocab_size, (2, 8)).astype(np.int32)),
         ms.Tensor(np.zeros((2, 8), np.int32)), ms.Tensor(np.ones((2, 8), np.int32)))
    no_dropout = dataclasses.replace(tiny_config, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                     layer_norm_eps=1e-5)
    with caplog.at_level(logging.INFO):
        net = load_network(path, "student", no_dropout, "backbone", Backend())
    net.set_train(True)
    np.testing.assert_array_equal(net(*x)[0].asnumpy(), net(*x)[0].asnumpy())  # no dropout although saved with 0.1
    assert "hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0 from the config's 'student:' section" in caplog.text
    assert f"layer_norm_eps {tiny_config.layer_norm_eps:g} kept from the checkpoint" in caplog.text
    again = load_network(path, "student", dataclasses.replace(no_dropout, hidden_dropout_prob=0.1), "backbone",
                         Backend())
    again.set_train(True)
    assert not np.allclose(again(*x)[0].asnumpy(), again(*x)[0].asnumpy())


def test_a_resumed_run_keeps_a_best_checkpoint_saved_after_its_state(tiny_config, tmp_path, caplog):
    """best.ckpt is written at once, the manifest names it from the next save on: a run killed in between resumes
    from the older state with the older best in its manifest. The newer best.ckpt stays the best so far (the
    replayed steps may score lower with other dropout masks); an incomplete one is ignored."""
    import logging

    from src.training.loop import adopt_newer_best
    from src.training.manifest import Manifest

    run_dir = tmp_path / "phase2"
    path = save_model(BertModel(tiny_config), str(run_dir / "best.ckpt"),
                      extra={"stage": "phase2", "step": 30, "metrics": {"score": 0.9, "step": 30}})

    def manifest(best_step):
        m = Manifest(stage="phase2", config={}, started_from={})
        m.metrics.best = {"score": 0.8, "step": best_step}
        return m

    older = manifest(20)
    with caplog.at_level(logging.INFO):
        adopt_newer_best(str(run_dir), older)
    assert older.metrics.best == {"score": 0.9, "step": 30} and older.checkpoints.best == "best.ckpt"
    assert "best so far is best.ckpt (score 0.9000 at step 30)" in caplog.text
    newer = manifest(40)  # the manifest already names a later best: nothing changes
    adopt_newer_best(str(run_dir), newer)
    assert newer.metrics.best == {"score": 0.8, "step": 40}
    with open(path, "r+b") as f:  # killed while writing best.ckpt
        f.truncate(100)
    broken = manifest(20)
    adopt_newer_best(str(run_dir), broken)
    assert broken.metrics.best == {"score": 0.8, "step": 20} and "not used as the best so far" in caplog.text
