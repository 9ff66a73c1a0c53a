"""Dataset sink mode (src/training/sink.py), as far as a CPU can test it.

MindSpore refuses sink mode on CPU, so `mindspore.data_sink` is replaced by a stand-in with its contract: the
dataset is sunk once ("The dataset has been used with network" otherwise), the queue loops over the dataset, each
call runs `sink_size` steps (compiled with ms.jit when a jit_config is given) and returns the last step's outputs.
Everything else is the real code: the step arguments made in the dataset pipeline, the combined gradients + update
graph with its step counter, the chunked loop, logs, evaluation, saves and the stages. The runs say device "GPU"
(which turns sink mode on) and compute on the CPU.
"""
import json
import os

import mindspore as ms
import numpy as np
import pytest
import yaml

from src.config import ConfigError, load_config
from src.data.dataset import Batch, create_tinybert_dataset
from src.data.task_data import convert_task_data
from src.infra.runtime import Runtime
from src.model import checkpoint as ckpt
from src.model.heads import build_model
from src.training import sink, stages
from src.training.networks import stage_dirs
from src.training.sink import loss_normalizers, step_dataset

TINY = dict(vocab_size=30522, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
            max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
STUDENT = dict(TINY, num_hidden_layers=1)
COLUMNS = ["input_ids", "segment_ids", "input_mask", "label_ids"]


class FakeTransfer:
    def __init__(self):
        self.stopped = self.released = False

    def stop_send(self):
        self.stopped = True

    def release(self):
        self.released = True


class FakeDataSink:
    """mindspore.data_sink's contract, on CPU; records every sink it made."""

    def __init__(self):
        self.made = []  # (sink_size, FakeTransfer, steps run)

    def __call__(self, fn, dataset, sink_size=1, jit_config=None, input_signature=None):
        if hasattr(dataset, "__transfer_dataset__"):
            raise ValueError("The dataset has been used with network.")
        transfer = FakeTransfer()
        dataset.__transfer_dataset__ = transfer
        rows = dataset.create_tuple_iterator(num_epochs=-1)  # the device queue loops over the dataset
        run = ms.jit(fn) if jit_config is not None else fn
        record = [sink_size, transfer, 0]
        self.made.append(record)

        def process():
            assert not transfer.stopped, "a stopped queue was read"
            out = None
            for _ in range(sink_size):
                out = run(*next(rows))
                record[2] += 1
            return out

        return process


@pytest.fixture(scope="module")
def records(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("sink")
    vocab = os.path.join(shared_data, "vocab", "bert-base-uncased-vocab.txt")
    for split, rows in (("train", 44), ("dev", 16)):
        src = root / f"{split}.tsv"
        with open(os.path.join(shared_data, "glue", "SST-2", f"{split}.tsv"), encoding="utf-8") as f:
            src.write_text("".join(f.readline() for _ in range(rows + 1)), encoding="utf-8")
        convert_task_data("sst2", str(src), str(root / f"{split}.mindrecord"), vocab, seq_length=24)
    ckpt.save_model(build_model(config(root, "pre", {}).teacher, "backbone"), str(root / "pretrained.ckpt"))
    return root


def config(root, name, run, td=None):
    cfg = {
        "task": {"name": "SST-2", "num_labels": 2, "labels": ["0", "1"]},
        "run": {"output_dir": str(root / name), "mode": "pynative", "seed": 3, "data_seed": 4, **run},
        "data": {"train_files": [str(root / "train.mindrecord")], "eval_files": [str(root / "dev.mindrecord")],
                 "seq_length": 24},
        "checkpoint": {"pretrained": str(root / "pretrained.ckpt")},
        "teacher": TINY, "student": STUDENT, "distill": {"layer_map": [[0, 0], [1, 2]]},
        "td": td or {"finetune": {"epochs": 2, "batch_size": 4, "lr": 1e-3, "log_steps": 4, "save_steps": 5},
                     "phase1": {"epochs": 1, "batch_size": 4, "lr": 1e-3, "log_steps": 2},
                     "phase2": {"epochs": 1, "batch_size": 4, "lr": 1e-3, "log_steps": 2}},
        "eval": {"eval_steps": 3},
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return load_config(str(path), kind="td")


def weights(run_dir, name="last.ckpt"):
    return {k: v.asnumpy() for k, v in ms.load_checkpoint(os.path.join(run_dir, name)).items()}


def metrics(run_dir):
    return [json.loads(line) for line in open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8")]


def test_the_dataset_pipeline_makes_the_step_by_step_arguments(records):
    files = [str(records / "train.mindrecord")]

    def loader(columns, batch):
        return create_tinybert_dataset(files, columns, batch, 24, shuffle=True, seed=7)

    plain = [Batch(*c) for c in loader(COLUMNS, 8).create_tuple_iterator(num_epochs=1, output_numpy=True)]
    # one device, TD: the loader's columns as they are
    got = list(step_dataset(loader(COLUMNS, 8), COLUMNS, 8, 0, 1).create_tuple_iterator(num_epochs=1,
                                                                                        output_numpy=True))
    assert len(got) == len(plain) == 5
    for args, batch in zip(got, plain):
        assert len(args) == 4 and all(np.array_equal(a, b) for a, b in zip(args, batch))
    # one device, GD (no labels): the placeholder labels the loss net does not read
    gd = list(step_dataset(loader(COLUMNS[:3], 8), COLUMNS[:3], 8, 0, 1).create_tuple_iterator(
        num_epochs=1, output_numpy=True))
    assert all(a[3].shape == (8,) and a[3].dtype == np.int32 and not a[3].any() for a in gd)
    assert all(np.array_equal(a[0], b.input_ids) for a, b in zip(gd, plain))
    # data parallel, rank 1 of 2: its half of each global batch, a logits slot, the global batch's normalizers
    dp = list(step_dataset(loader(COLUMNS, 8), COLUMNS, 4, 1, 2).create_tuple_iterator(num_epochs=1,
                                                                                      output_numpy=True))
    for args, batch in zip(dp, plain):
        assert [a.shape[0] for a in args[:4]] == [4] * 4 and args[4].shape == (1,)
        assert all(np.array_equal(a, b[4:8]) for a, b in zip(args[:4], batch))
        np.testing.assert_array_equal(args[5], loss_normalizers(batch, 2))
        assert args[5][0] == batch.input_mask.sum() / 2  # real tokens of the global batch, per rank


def test_sink_mode_trains_as_step_by_step_with_chunked_logs_evals_and_saves(records, monkeypatch):
    gpu = Runtime(rank=0, world_size=1, device_target="GPU", graph=False)  # computes on the CPU
    plain_cfg = config(records, "plain", {})
    ms.set_seed(plain_cfg.run.seed)  # what the command's runtime setup does: the head's init
    plain = stages.run_finetune(plain_cfg, gpu, "teacher", progress=False)
    fake = FakeDataSink()
    monkeypatch.setattr(ms, "data_sink", fake)
    sunk_cfg = config(records, "sunk", {"data_sink": True, "data_sink_steps": 4})
    ms.set_seed(sunk_cfg.run.seed)
    sunk = stages.run_finetune(sunk_cfg, gpu, "teacher", progress=False)
    # 11 steps an epoch, 2 epochs: chunks of 4, 4, 3 per epoch (a chunk never crosses an epoch's end)
    assert plain.steps_per_epoch == 11 and sunk.total_steps == plain.total_steps == 22
    assert [size for size, _, _ in fake.made] == [4, 3, 4, 3]
    assert [ran for _, _, ran in fake.made] == [8, 3, 8, 3]
    assert all(t.stopped and t.released for _, t, _ in fake.made)  # no queue left sending
    for key in ("step", "optimizer_steps", "overflow_steps"):
        assert getattr(sunk, key) == getattr(plain, key), key
    assert (sunk.position.epoch, sunk.position.batch) == (plain.position.epoch, plain.position.batch)
    a, b = weights(stage_dirs(plain_cfg)["teacher"]), weights(stage_dirs(sunk_cfg)["teacher"])
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-5, atol=1e-6, err_msg=name)
    rows = metrics(stage_dirs(sunk_cfg)["teacher"])
    train = [r for r in rows if r["type"] == "train"]
    evals = [r["step"] for r in rows if r["type"] == "eval"]
    assert [r["step"] for r in train] == [4, 8, 15, 19, 22]  # the chunk ends at which a multiple of 4 was passed
    assert evals == [4, 8, 11, 15, 19, 22]  # multiples of 3 passed, and each epoch's end once
    plain_evals = [r for r in metrics(stage_dirs(plain_cfg)["teacher"]) if r["type"] == "eval"]
    assert [r["step"] for r in plain_evals] == [3, 6, 9, 11, 12, 15, 18, 21, 22]
    assert plain_evals[-1]["score"] == pytest.approx([r for r in rows if r["type"] == "eval"][-1]["score"])


def test_sink_mode_compiles_one_graph_per_chunk_size_for_both_td_phases(records, monkeypatch):
    fake = FakeDataSink()
    monkeypatch.setattr(ms, "data_sink", fake)
    gpu = Runtime(rank=0, world_size=1, device_target="GPU", graph=True)
    cfg = config(records, "graph", {"data_sink": True, "data_sink_steps": -1})
    stages.run_finetune(cfg, gpu, "teacher", progress=False)
    phase1 = stages.run_phase1(cfg, gpu, progress=False)
    phase2 = stages.run_phase2(cfg, gpu, progress=False)
    assert [size for size, _, _ in fake.made] == [11, 11, 11, 11]  # -1: one chunk per epoch, each stage
    assert phase1.teacher_logits is None  # sink mode keeps no phase-1 logits: phase 2 ran the teacher itself
    assert phase2.teacher_logits["rows"] == 44 and phase2.finished
    losses = [r["loss"] for r in metrics(stage_dirs(cfg)["phase1"]) if r["type"] == "train"]
    assert losses and all(np.isfinite(losses))


def test_sink_settings_are_checked(records):
    assert sink.active(config(records, "a", {"data_sink": True}).run, "Ascend")
    assert not sink.active(config(records, "b", {"data_sink": True}).run, "CPU")
    assert not sink.active(config(records, "c", {}).run, "GPU")
    with pytest.raises(ConfigError, match=r"run.data_sink: true needs one batch shape .*data.bucket_boundaries is "
                                          r"\[16\]"):
        load_config(str(records / "a.yaml"), ["--run.device_target=GPU", "--data.bucket_boundaries=[16]"], kind="td")
    with pytest.raises(ConfigError, match="run.data_sink_steps: got 0"):
        load_config(str(records / "a.yaml"), ["--run.data_sink_steps=0"], kind="td")
