"""The model zoo's flat flags (src/training/zoo_flags.py): each one's translation, the refusals, and the README
tables kept current. The commands themselves run in tests/test_run_commands.py and tests/test_launchers.py."""
import os

import pytest

from src.config import ConfigError
from src.training.cli import split_command_line
from src.training.zoo_flags import REFUSED, ZOO_FLAGS, flag_table, main, parse_bool, translate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# flag -> (command, value, what the translation must hold)
EXPECTED = {
    "config_path": ("gd", "../../gd_config.yaml", {"config": os.path.join(ROOT, "gd_config.yaml")}),
    "device_target": ("gd", "Ascend", ["--run.device_target=Ascend"]),
    "device_id": ("td", "3", ["--run.device_id=3"]),
    "enable_modelarts": ("gd", "True", ["--run.enable_modelarts=true"]),
    "data_url": ("td", "obs://b/d", ["--run.data_url=obs://b/d"]),
    "train_url": ("td", "obs://b/o", ["--run.train_url=obs://b/o"]),
    "checkpoint_url": ("gd", "obs://b/c", ["--run.checkpoint_url=obs://b/c"]),
    "enable_profiling": ("gd", "False", ["--run.enable_profiling=false"]),
    "distribute": ("gd", "true", {"distribute": True}),
    "device_num": ("gd", "8", {"device_num": 8}),
    "epoch_size": ("gd", "3", ["--gd.epochs=3.0"]),
    "save_ckpt_step": ("td", "100", ["--td.phase1.save_steps=100", "--td.phase2.save_steps=100"]),
    "max_ckpt_num": ("gd", "1", ["--gd.keep_checkpoints=1"]),
    "do_shuffle": ("td", "false", ["--data.shuffle=false"]),
    "enable_data_sink": ("gd", "true", ["--run.data_sink=true"]),
    "data_sink_steps": ("gd", "-1", ["--run.data_sink_steps=-1"]),
    "save_ckpt_path": ("gd", "/out", ["--run.output_dir=/out"]),
    "load_teacher_ckpt_path": ("td", "/t.ckpt", ["--checkpoint.teacher=/t.ckpt"]),
    "data_dir": ("gd", "gd_config.yaml", None),  # a file: taken as it is (folders: tests/test_run_commands.py)
    "schema_dir": ("gd", "/s.json", ["--data.schema_file=/s.json"]),
    "dataset_type": ("td", "tfrecord", ["--data.dataset_type=tfrecord"]),
    "do_train": ("td", "false", {"do_train": False}),
    "do_eval": ("td", "false", ["--data.eval_files=[]"]),
    "td_phase1_epoch_size": ("td", "10", ["--td.phase1.epochs=10.0"]),
    "td_phase2_epoch_size": ("td", "3", ["--td.phase2.epochs=3.0"]),
    "load_gd_ckpt_path": ("td", "/gd.ckpt", ["--checkpoint.student=/gd.ckpt"]),
    "load_td1_ckpt_path": ("td", "/td1.ckpt", {"eval_checkpoint": "/td1.ckpt"}),
    "train_data_dir": ("td", "gd_config.yaml", None),
    "eval_data_dir": ("td", "gd_config.yaml", None),
    "task_type": ("td", "ner", ["--task.type=ner"]),
    "task_name": ("td", "TNEWS", ["--task.name=TNEWS"]),
    "assessment_method": ("td", "bf1", ["--task.metric=f1"]),
    "num_labels": ("td", "15", ["--task.num_labels=15"]),
    "seed1": ("td", "1", ["--run.seed=1"]),
    "seed2": ("td", "2", ["--run.data_seed=2"]),
}


def test_every_zoo_flag_has_a_translation_test():
    assert set(EXPECTED) == {f.name for f in ZOO_FLAGS}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_zoo_flag_becomes_its_key(name, monkeypatch):
    monkeypatch.chdir(ROOT)
    kind, value, expected = EXPECTED[name]
    items = [(name, value)]
    if name == "do_train":
        items.append(("load_td1_ckpt_path", "/td1.ckpt"))  # the zoo's rule: evaluating needs a checkpoint
    out = translate(items, kind)
    if expected is None:  # a data flag naming a file
        key = "data.eval_files" if name == "eval_data_dir" else "data.train_files"
        assert out.overrides == [f"--{key}=[{os.path.join(ROOT, 'gd_config.yaml')!r}]"]
    elif isinstance(expected, list):
        assert out.overrides == expected
    else:
        for attr, wanted in expected.items():
            assert getattr(out, attr) == wanted


@pytest.mark.parametrize("text,value", [("true", True), ("True", True), ('"true"', True), ("false", False),
                                        ("False", False), ("'false'", False)])
def test_the_zoo_boolean_syntaxes(text, value):
    assert parse_bool("do_shuffle", text) is value


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_flags_without_meaning_here_are_refused_with_the_reason(name):
    with pytest.raises(ConfigError) as err:
        translate([(name, "x")], "gd")
    assert f"--{name}: the model zoo's flag has no meaning here: {REFUSED[name]}" in str(err.value)


def test_command_line_split_and_unknown_flags():
    overrides, zoo = split_command_line(["--gd.lr=1e-4", "--epoch_size=3", "--do_shuffle", "true",
                                         "--data.seq_length=64"])
    assert overrides == ["--gd.lr=1e-4", "--data.seq_length=64"]
    assert zoo == [("epoch_size", "3"), ("do_shuffle", "true")]
    with pytest.raises(ConfigError, match="did you mean the model zoo's --save_ckpt_path"):
        split_command_line(["--save_ckpt_pth=/x"])
    with pytest.raises(ConfigError, match="--epoch_size needs a value"):
        split_command_line(["--epoch_size"])
    with pytest.raises(ConfigError, match="is a flag of the model zoo's run_general_distill.py"):
        translate([("epoch_size", "3")], "td")


def test_modelarts_rebases_the_zoo_paths_on_the_local_copies():
    out = translate([("schema_dir", "schema.json"), ("load_teacher_ckpt_path", "t.ckpt"),
                     ("save_ckpt_path", "out")], "gd", {"data": "/cache/data", "checkpoint": "/cache/checkpoint"})
    assert out.overrides == ["--data.schema_file=/cache/data/schema.json",
                             "--checkpoint.teacher=/cache/checkpoint/t.ckpt", "--run.output_dir=out"]


def test_readme_flag_tables_are_current():
    table = flag_table()
    for flag in ZOO_FLAGS:
        assert f"`--{flag.name}`" in table
    assert main(["--check", os.path.join(ROOT, "README.md"), os.path.join(ROOT, "README_CN.md")]) == 0
