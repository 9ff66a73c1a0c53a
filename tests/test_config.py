"""Config loading: every YAML in the repo loads, defaults are the paper's, each error names key and file."""
import dataclasses
import glob
import os
import subprocess
import sys
import textwrap

import pytest

from src.config import (MODEL_PRESETS, BertConfig, ConfigError, GDConfig, TDConfig, bert_preset, load_config,
                        resolve_layer_map, to_dict)

from conftest import ROOT

REPO_YAMLS = sorted(glob.glob(os.path.join(ROOT, "*.yaml")) + glob.glob(os.path.join(ROOT, "td_config", "*.yaml")))


def write(tmp_path, text, name="cfg.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_repo_has_the_expected_config_files():
    names = sorted(os.path.relpath(p, ROOT) for p in REPO_YAMLS)
    tasks = ("cluener", "cola", "mnli", "mrpc", "qnli", "qqp", "sst2", "sst2_minilm", "sst2_tinybert4", "stsb", "tnews")
    assert names == ["gd_config.yaml"] + [f"td_config/{t}.yaml" for t in tasks]


@pytest.mark.parametrize("path", REPO_YAMLS, ids=lambda p: os.path.relpath(p, ROOT))
def test_every_repo_yaml_loads(path):
    cfg = load_config(path)
    expected = GDConfig if os.path.basename(path) == "gd_config.yaml" else TDConfig
    assert isinstance(cfg, expected)
    assert cfg.teacher.vocab_size == cfg.student.vocab_size


def test_defaults_are_bert_base_teacher_and_paper_tinybert4_student():
    cfg = load_config(os.path.join(ROOT, "gd_config.yaml"))
    t, s = cfg.teacher, cfg.student
    assert (t.num_hidden_layers, t.hidden_size, t.num_attention_heads, t.intermediate_size, t.vocab_size) == \
        (12, 768, 12, 3072, 30522)
    assert (s.num_hidden_layers, s.hidden_size, s.num_attention_heads, s.intermediate_size) == (4, 312, 12, 1200)
    assert GDConfig().student == s  # the dataclass default is the same model


def test_chinese_tasks_use_the_chinese_vocabulary():
    for task in ("tnews", "cluener"):
        cfg = load_config(os.path.join(ROOT, "td_config", f"{task}.yaml"))
        assert cfg.teacher.vocab_size == cfg.student.vocab_size == 21128
        assert cfg.student.hidden_size == 312  # preset kept, only the vocabulary overridden


def test_presets_include_zoo_student_and_minilm():
    zoo = bert_preset("ms-zoo-tinybert-4l-384")
    assert (zoo.num_hidden_layers, zoo.hidden_size, zoo.intermediate_size) == (4, 384, 1536)
    minilm = bert_preset("all-minilm-l6-v2")
    assert (minilm.num_hidden_layers, minilm.hidden_size, minilm.num_attention_heads) == (6, 384, 12)
    assert set(MODEL_PRESETS) >= {"bert-base-uncased", "bert-base-chinese", "tinybert-4l-312", "bert-large-uncased"}


def test_configs_are_frozen():
    cfg = load_config(os.path.join(ROOT, "td_config", "sst2.yaml"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.td.phase2.lr = 1.0  # type: ignore[misc]


def test_unknown_key_names_path_file_and_suggestion(tmp_path):
    path = write(tmp_path, """
        td:
          phase2:
            lrr: 3.0e-5
    """)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert path in msg
    assert "unknown key 'td.phase2.lrr'" in msg
    assert "unknown key 'td.phase2.lrr' (did you mean 'td.phase2.lr'?); allowed under 'td.phase2': " in msg
    assert "batch_size" in msg  # lists what is allowed


def test_unknown_top_level_section(tmp_path):
    path = write(tmp_path, "studnet: {hidden_size: 312}\n")
    with pytest.raises(ConfigError, match=r"unknown key 'studnet' \(did you mean 'student'\?\)"):
        load_config(path, kind="gd")


def test_wrong_type_names_expected_and_got(tmp_path):
    path = write(tmp_path, "gd: {batch_size: '32'}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == f"{path}: gd.batch_size: got '32' (str); expected an integer"


def test_bool_is_not_accepted_as_int_or_string_as_bool(tmp_path):
    with pytest.raises(ConfigError, match=r"data.shuffle: got 'true' \(str\); expected a boolean"):
        load_config(write(tmp_path, "data: {shuffle: 'true'}\n"), kind="gd")
    with pytest.raises(ConfigError, match=r"gd.batch_size: got True \(bool\); expected an integer"):
        load_config(write(tmp_path, "gd: {batch_size: true}\n", "b.yaml"))


def test_choices_are_listed(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, "run: {device_target: NPU}\n"), kind="td")
    assert "run.device_target: got 'NPU'; expected one of ['CPU', 'GPU', 'Ascend']" in str(err.value)


def test_hidden_not_multiple_of_heads(tmp_path):
    path = write(tmp_path, "student: {hidden_size: 100}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, kind="gd")
    assert str(err.value) == (f"{path}: student: hidden_size (100) is not a multiple of num_attention_heads (12); "
                              "allowed: hidden_size % num_attention_heads == 0")


def test_seq_length_above_max_position(tmp_path):
    path = write(tmp_path, "data: {seq_length: 256}\nstudent: {max_position_embeddings: 128}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, kind="gd")
    assert str(err.value) == (f"{path}: data.seq_length: got 256; allowed: at most "
                              "student.max_position_embeddings (128)")


def test_unknown_preset(tmp_path):
    with pytest.raises(ConfigError, match=r"teacher.preset: got 'bert-huge'; expected one of \["):
        load_config(write(tmp_path, "teacher: {preset: bert-huge}\n"), kind="gd")


def test_teacher_student_vocab_must_agree(tmp_path):
    with pytest.raises(ConfigError, match=r"teacher.vocab_size \(30522\) != student.vocab_size \(21128\)"):
        load_config(write(tmp_path, "student: {vocab_size: 21128}\n"), kind="gd")


def test_label_names_must_match_num_labels(tmp_path):
    with pytest.raises(ConfigError, match=r"task.labels has 2 names but task.num_labels is 3"):
        load_config(write(tmp_path, "task: {num_labels: 3, labels: [a, b]}\n"))


def test_preset_fields_can_be_overridden_and_yaml_values_win(tmp_path):
    cfg = load_config(write(tmp_path, """
        teacher: {preset: bert-base-chinese}
        student: {preset: ms-zoo-tinybert-4l-384, vocab_size: 21128, hidden_dropout_prob: 0.0}
    """), kind="gd")
    assert cfg.student.hidden_size == 384 and cfg.student.vocab_size == 21128
    assert cfg.student.hidden_dropout_prob == 0.0


def test_partial_section_keeps_the_other_defaults(tmp_path):
    cfg = load_config(write(tmp_path, "td: {phase1: {lr: 1.0e-4}}\n"))
    assert cfg.td.phase1.lr == 1e-4
    assert cfg.td.phase1.epochs == 10.0 and cfg.td.phase1.loss_scale.init == 256.0  # phase-1 defaults kept
    assert cfg.td.phase2 == TDConfig().td.phase2
    assert cfg.student == TDConfig().student  # a section that is not written keeps its default model


def test_command_line_overrides_any_nested_key():
    cfg = load_config(os.path.join(ROOT, "td_config", "sst2.yaml"),
                      ["--td.phase2.lr=3e-5", "--td.phase1.loss_scale.window=7", "--student.preset=tinybert-6l-768",
                       "--distill.layer_map=[[0, 0], [1, 2]]", "--data.shuffle=false"])
    assert cfg.td.phase2.lr == 3e-5
    assert cfg.td.phase1.loss_scale.window == 7
    assert cfg.student.num_hidden_layers == 6 and cfg.student.hidden_size == 768
    assert cfg.distill.layer_map == ((0, 0), (1, 2))
    assert cfg.data.shuffle is False


def test_command_line_errors_say_command_line():
    path = os.path.join(ROOT, "td_config", "sst2.yaml")
    with pytest.raises(ConfigError) as err:
        load_config(path, ["--td.phase2.lr=fast"])
    assert str(err.value) == "command line: td.phase2.lr: got 'fast' (str); expected a number"
    with pytest.raises(ConfigError, match=r"command line: unknown key 'td.phase3' \(did you mean 'td.phase\d'\?\); allowed under 'td': finetune, phase1, phase2"):
        load_config(path, ["--td.phase3.lr=1"])
    with pytest.raises(ConfigError, match=r"must look like --section.key=value"):
        load_config(path, ["--td.phase2.lr"])
    with pytest.raises(ConfigError, match=r"'td.phase2' is a section, not a value"):
        load_config(path, ["--td.phase2=1"])


def test_layer_map_accepts_uniform_or_pairs_only(tmp_path):
    with pytest.raises(ConfigError, match=r"distill.layer_map: got 'even'; expected 'uniform' or a list"):
        load_config(write(tmp_path, "distill: {layer_map: even}\n"), kind="gd")


def test_uniform_layer_map_needs_divisible_depths(tmp_path):
    path = write(tmp_path, "student: {num_hidden_layers: 5}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, kind="gd")
    assert str(err.value) == (f"{path}: distill.layer_map: 'uniform' needs the teacher depth (12) to be a multiple "
                              "of the student depth (5); give explicit [student, teacher] pairs")


def test_uniform_layer_map_resolves_to_pairs():
    assert resolve_layer_map("uniform", 12, 4) == ((0, 0), (1, 3), (2, 6), (3, 9), (4, 12))
    assert resolve_layer_map("uniform", 6, 2) == ((0, 0), (1, 3), (2, 6))


@pytest.mark.parametrize("pairs,message", [
    ("[[0, 0], [9, 12]]", r"distill.layer_map\[1\]: got \[9, 12\]; expected student layer in 0..4 and teacher "
                          r"layer in 0..12 \(0 = embeddings\)"),
    ("[[0, 0], [-1, 3]]", r"distill.layer_map\[1\]: got \[-1, 3\]"),
    ("[[1, 3], [1, 6]]", r"distill.layer_map\[1\]: student layer 1 is mapped twice"),
    ("[]", r"distill.layer_map: empty"),
])
def test_explicit_layer_map_is_checked(tmp_path, pairs, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, f"distill: {{layer_map: {pairs}}}\n"), kind="gd")


@pytest.mark.parametrize("yaml_text,message", [
    ("gd: {batch_size: 0}", r"gd.batch_size: got 0; expected a value > 0"),
    ("gd: {epochs: -3}", r"gd.epochs: got -3.0; expected a value > 0"),
    ("gd: {lr: -1}", r"gd.lr: got -1.0; expected a value > 0"),
    ("gd: {warmup_ratio: 7}", r"gd.warmup_ratio: got 7.0; expected a value >= 0.0 and <= 1.0"),
    ("gd: {loss_scale: {factor: 0}}", r"gd.loss_scale.factor: got 0.0; expected a value > 1.0"),
    ("gd: {lr: .nan}", r"gd.lr: got nan; expected a finite number"),
    ("gd: {lr: 'inf'}", r"gd.lr: got 'inf'; expected a finite number"),
    ("run: {device_id: -4}\ngd: {}", r"run.device_id: got -4; expected a value >= 0"),
    ("student: {hidden_dropout_prob: 1.0}\ngd: {}", r"student.hidden_dropout_prob: got 1.0; expected a value >= 0.0 and < 1.0"),
    ("data: {seq_length: 1}\ngd: {}", r"data.seq_length: got 1; expected a value >= 2"),
])
def test_out_of_range_values_are_refused(tmp_path, yaml_text, message):
    with pytest.raises(ConfigError, match=message):
        load_config(write(tmp_path, yaml_text + "\n"))


def test_kind_is_not_guessed(tmp_path):
    with pytest.raises(ConfigError, match=r"cannot tell a general-distillation config .* pass kind='gd'/'td'"):
        load_config(write(tmp_path, "run: {seed: 3}\n"))


def test_command_line_preset_error_says_command_line():
    with pytest.raises(ConfigError, match=r"^command line: teacher.preset: got 'bert-huge'; expected one of"):
        load_config(os.path.join(ROOT, "gd_config.yaml"), ["--teacher.preset=bert-huge"])


def test_relative_paths_resolve_against_working_directory(tmp_path, monkeypatch):
    path = write(tmp_path, "data: {train_files: [data/*.mindrecord]}\ncheckpoint: {teacher: t.ckpt}\ngd: {}\n")
    work = tmp_path / "elsewhere"
    work.mkdir()
    monkeypatch.chdir(work)
    cfg = load_config(path, kind="gd")
    assert cfg.data.train_files == (str(work / "data" / "*.mindrecord"),)
    assert cfg.checkpoint.teacher == str(work / "t.ckpt")


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="not valid YAML/JSON"):
        load_config(write(tmp_path, "td: [unclosed\n"))


@pytest.mark.parametrize("text,message", [
    ("task: {name: a}\ndata: {seq_length: 64}\nrun: {seed: 1}\ndata: {seq_length: 128}\n",
     r"x\.yaml:4: duplicate key 'data' \(first at line 2\)"),
    ("task: {name: a}\ntd:\n  phase1:\n    lr: 1.0e-4\n    epochs: 2\n    lr: 2.0e-4\n",
     r"x\.yaml:6: duplicate key 'lr' \(first at line 4\)"),
])
def test_duplicate_keys_are_refused_at_any_depth_naming_both_lines(tmp_path, text, message):
    path = tmp_path / "x.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(str(path))


def test_an_override_that_fails_validation_is_blamed_on_the_command_line():
    with pytest.raises(ConfigError, match=r"^command line \(--data\.seq_length=600\): data\.seq_length: got 600; "
                                          r"allowed: at most teacher\.max_position_embeddings \(512\)"):
        load_config(os.path.join(ROOT, "td_config", "sst2.yaml"), ["--data.seq_length=600"])
    with pytest.raises(ConfigError, match=r"^command line \(--td\.phase2\.lr=-1\): td\.phase2\.lr: got -1\.0"):
        load_config(os.path.join(ROOT, "td_config", "sst2.yaml"), ["--td.phase2.lr=-1"])


def test_to_dict_round_trips_through_the_loader(tmp_path):
    import yaml
    cfg = load_config(os.path.join(ROOT, "td_config", "mnli.yaml"))
    again = load_config(write(tmp_path, yaml.safe_dump(to_dict(cfg))))
    assert again == cfg
    assert cfg.task.labels == ("contradiction", "entailment", "neutral")


def test_bert_config_defaults_are_explicit():
    c = BertConfig()
    assert c.layer_norm_eps == 1e-12 and c.initializer_range == 0.02 and c.hidden_act == "gelu"


def test_show_config_command(tmp_path):
    out = subprocess.run([sys.executable, "-m", "src.config", "td_config/sst2.yaml", "--td.phase2.lr=3e-5"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "lr: 3.0e-05" in out and "name: SST-2" in out
    bad = subprocess.run([sys.executable, "-m", "src.config", "td_config/sst2.yaml", "--td.phase2.lr=x"],
                         cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "td.phase2.lr: got 'x'" in bad.stderr


def test_every_config_key_is_documented_and_the_readme_tables_are_current():
    from src.config_reference import main, reference
    block = reference()  # raises if a field has no comment
    for key in ("data.bucket_boundaries", "checkpoint.student_init", "run.enable_profiling", "eval.eval_steps",
                "distill.hard_label_weight", "loss_scale.window"):
        assert key in block
    assert main(["--check", os.path.join(ROOT, "README.md"), os.path.join(ROOT, "README_CN.md")]) == 0


def test_config_reference_names_the_undocumented_field(monkeypatch):
    import src.config_reference as ref
    monkeypatch.setattr(ref, "field_comments", lambda cls: {})
    with pytest.raises(ValueError, match=r"src/config.py: RunConfig.device_target has no comment"):
        ref.reference()


def test_run_dir_config_difference_ignores_keys_added_at_default_and_removed_keys():
    from src.training.manifest import config_difference
    old = {"data": {"seq_length": 64, "vocab_file": ""}, "gd": {"lr": 5e-5}}
    # a key added since (at its empty default) and a key the schema dropped: the same run
    assert config_difference(old, {"data": {"seq_length": 64, "bucket_boundaries": []}, "gd": {"lr": 5e-5}}) == []
    # a new key set to something, or any changed value, is a different run
    assert config_difference(old, {"data": {"seq_length": 64, "bucket_boundaries": [32]}, "gd": {"lr": 5e-5}}) == [
        "data.bucket_boundaries: None -> [32]"]
    assert config_difference(old, {"data": {"seq_length": 128}, "gd": {"lr": 5e-5}}) == ["data.seq_length: 64 -> 128"]
    assert config_difference({"run": {"seed": 0}}, {"run": {"seed": 1}}) == ["run.seed: 0 -> 1"]
    # logging and saving intervals change no result: a resumed run may change them
    assert config_difference({"gd": {"log_steps": 10, "save_steps": 100, "lr": 1.0}},
                             {"gd": {"log_steps": 1, "save_steps": 5, "lr": 1.0}}) == []


def test_a_loss_scale_starting_above_its_max_is_refused():
    with pytest.raises(ConfigError, match=r"td\.phase1\.loss_scale\.init \(1e\+09\) is above td\.phase1\.loss_scale\.max "
                                          r"\(1\.67772e\+07\); expected init <= max"):
        load_config(os.path.join(ROOT, "td_config", "sst2.yaml"), ["--td.phase1.loss_scale.init=1e9"])
    with pytest.raises(ConfigError, match=r"gd\.loss_scale\.init \(65536\) is above gd\.loss_scale\.max \(1024\)"):
        load_config(os.path.join(ROOT, "gd_config.yaml"), ["--gd.loss_scale.max=1024"])
    cfg = load_config(os.path.join(ROOT, "gd_config.yaml"), ["--gd.loss_scale.max=1e9"])
    assert cfg.gd.loss_scale.max == 1e9


def test_reference_parity_with_length_buckets_is_refused():
    """The original pads every row to max_seq_length and its losses average over every position; buckets change
    the padding, so parity cannot hold."""
    path = os.path.join(ROOT, "td_config", "sst2_tinybert4.yaml")  # bucket_boundaries [16, 32]
    with pytest.raises(ConfigError, match=r"distill\.reference_parity: true .* data\.bucket_boundaries \[16, 32\] .*"
                                          r"set data\.bucket_boundaries: \[\] for parity"):
        load_config(path, ["--distill.reference_parity=true"])
    cfg = load_config(path, ["--distill.reference_parity=true", "--data.bucket_boundaries=[]"])
    assert cfg.distill.reference_parity and not cfg.data.bucket_boundaries
