"""GLUE tasks beyond SST-2 / MNLI / QNLI: CoLA (Matthews correlation), MRPC and QQP (F1), STS-B (regression).

Small files in the official GLUE TSV layouts are written here (the real sets are not on this machine), converted
with the real English vocabulary, and read back; bad rows name file:line; float32 STS-B labels survive MindRecord
and TFRecord; a tiny regression run fine-tunes, distils (phase 2: MSE on the teacher's predictions) and is scored by
Pearson / Spearman; a CoLA-like run is scored by the metric its YAML selects; the offline .bin contract carries
float scores."""
import json
import os

import numpy as np
import pytest

from src.config import ConfigError, load_config
from src.data.dataset import create_tinybert_dataset
from src.data.records import iter_tfrecord, read_schema
from src.data.task_data import BadRowError, convert_task_data
from src.data.tokenization import BertTokenizer
from conftest import ROOT, SHARED_DATA

VOCAB = os.path.join(SHARED_DATA, "vocab", "bert-base-uncased-vocab.txt")
COLS = ["input_ids", "segment_ids", "input_mask", "label_ids"]
SEQ = 32

COLA = [  # source, label, original label, sentence (no header)
    ("gj04", "1", "", "Our friends won't buy this analysis, let alone the next one we propose."),
    ("gj04", "1", "", "One more pseudo generalization and I'm giving up."),
    ("gj04", "0", "*", "They drank the pub."),
    ("gj04", "1", "", "The professor talked us into a stupor."),
    ("gj04", "0", "*", "The more we study verbs, the crazier they get crazier."),
    ("bc01", "1", "", "Day by day the facts are getting murkier."),
    ("bc01", "0", "*", "Books were sent each other by the students."),
    ("bc01", "1", "", "I'll fix you a drink."),
    ("bc01", "0", "*", "Who do you think that left?"),
    ("ks08", "1", "", "Fred watered the plants flat."),
    ("ks08", "0", "*", "Mary intended John to go abroad himself."),
    ("ks08", "1", "", "The children were playing in the garden all afternoon."),
]
MRPC_HEADER = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"
MRPC = [
    ("1", "702876", "702977", "Amrozi accused his brother, whom he called the witness, of deliberately distorting "
     "his evidence.", "Referring to him as only the witness, Amrozi accused his brother of deliberately distorting "
     "his evidence."),
    ("0", "2108705", "2108831", "Yucaipa owned Dominick's before selling the chain to Safeway in 1998 for $2.5 "
     "billion.", "Yucaipa bought Dominick's in 1995 for $693 million and sold it to Safeway for $1.8 billion in 1998."),
    ("1", "1330381", "1330521", "They had published an advertisement on the Internet on June 10, offering the cargo "
     "for sale, he added.", "On June 10, the ship's owners had published an advertisement on the Internet, offering "
     "the explosives for sale."),
    ("0", "3344667", "3344648", "Around 0335 GMT, Tab shares were up 19 cents, or 4.4%, at A$4.56, having earlier "
     "set a record high of A$4.57.", "Tab shares jumped 20 cents, or 4.6%, to set a record closing high at A$4.57."),
    ("1", "1236820", "1236712", "The stock rose $2.11, or about 11 percent, to close Friday at $21.51 on the New "
     "York Stock Exchange.", "PG&E Corp. shares jumped $1.63 or 8 percent to $21.03 on the New York Stock Exchange "
     "on Friday."),
    ("1", "738533", "737951", "Revenue in the first quarter of the year dropped 15 percent from the same period a "
     "year earlier.", "With the scandal hanging over Stewart's company, revenue the first quarter of the year "
     "dropped 15 percent from the same period a year earlier."),
    ("0", "264589", "264502", "The Nasdaq had a weekly gain of 17.27, or 1.2 percent, closing at 1,520.15 on "
     "Friday.", "The tech-laced Nasdaq Composite Index rose 6 points to 1,615 on Friday."),
    ("1", "579975", "579810", "The DVD-CCA then appealed to the state Supreme Court.",
     "The DVD CCA appealed that decision to the U.S. Supreme Court."),
    ("1", "3114205", "3114194", "That compared with $35.18 million, or 24 cents per share, in the year-ago period.",
     "Earnings were affected by a non-recurring $8 million tax benefit in the year-ago period."),
    ("0", "1355540", "1355592", "He said the foodservice pie business doesn't fit the company's long-term growth "
     "strategy.", "The foodservice pie business does not fit our long-term growth strategy."),
    ("1", "222621", "222514", "Shares of Genentech, a much larger company with several products on the market, "
     "rose more than 2 percent.", "Shares of Xoma fell 16 percent in early trade, while shares of Genentech rose."),
    ("0", "3131772", "3131625", "Legislation making it harder for consumers to erase their debts in bankruptcy "
     "court won overwhelming House approval in March.", "Legislation making it harder for consumers to erase their "
     "debts in bankruptcy court won speedy, House approval in March and was endorsed by the White House."),
]
QQP_HEADER = "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate"
QQP = [
    ("0", "1", "2", "What is the step by step guide to invest in share market in india?",
     "What is the step by step guide to invest in share market?", "0"),
    ("1", "3", "4", "What is the story of Kohinoor (Koh-i-Noor) Diamond?",
     "What would happen if the Indian government stole the Kohinoor diamond back?", "0"),
    ("2", "5", "6", "How can I increase the speed of my internet connection while using a VPN?",
     "How can Internet speed be increased by hacking through DNS?", "0"),
    ("3", "7", "8", "Why am I mentally very lonely? How can I solve it?",
     "Find the remainder when 23 to the power 24 is divided by 24?", "0"),
    ("4", "9", "10", "Which one dissolve in water quickly sugar, salt, methane and carbon di oxide?",
     "Which fish would survive in salt water?", "0"),
    ("5", "11", "12", "Astrology: I am a Capricorn Sun Cap moon and cap rising...what does that say about me?",
     "I'm a triple Capricorn (Sun, Moon and ascendant in Capricorn) What does this say about me?", "1"),
    ("6", "13", "14", "Should I buy tiago?", "What keeps childern active and far from phone and video games?", "0"),
    ("7", "15", "16", "How can I be a good geologist?", "What should I do to be a great geologist?", "1"),
    ("8", "17", "18", "When do you use シ instead of し?", "When do you use \"&\" instead of \"and\"?", "0"),
    ("9", "19", "20", "Motorola (company): Can I hack my Charter Motorolla DCX3400?",
     "How do I hack Motorola DCX3400 for free internet?", "0"),
    ("10", "21", "22", "How do I read and find my YouTube comments?", "How can I see all my Youtube comments?", "1"),
    ("11", "23", "24", "What can make Physics easy to learn?", "How can you make physics easy to learn?", "1"),
]
STSB_HEADER = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
STSB = [  # index, genre, filename, year, old_index, source1, source2, sentence1, sentence2, score (as written)
    ("0", "main-captions", "MSRvid", "2012test", "0001", "none", "none", "A plane is taking off.",
     "An air plane is taking off.", "5.000"),
    ("1", "main-captions", "MSRvid", "2012test", "0004", "none", "none", "A man is playing a large flute.",
     "A man is playing a flute.", "3.800"),
    ("2", "main-captions", "MSRvid", "2012test", "0005", "none", "none",
     "A man is spreading shreded cheese on a pizza.", "A man is spreading shredded cheese on an uncooked pizza.",
     "3.800"),
    ("3", "main-captions", "MSRvid", "2012test", "0006", "none", "none", "Three men are playing chess.",
     "Two men are playing chess.", "2.600"),
    ("4", "main-captions", "MSRvid", "2012test", "0009", "none", "none", "A man is playing the cello.",
     "A man seated is playing the cello.", "4.250"),
    ("5", "main-captions", "MSRvid", "2012test", "0011", "none", "none", "Some men are fighting.",
     "Two men are fighting.", "4.250"),
    ("6", "main-captions", "MSRvid", "2012test", "0012", "none", "none", "A man is smoking.",
     "A man is skating.", "0.500"),
    ("7", "main-captions", "MSRvid", "2012test", "0013", "none", "none", "The man is playing the piano.",
     "The man is playing the guitar.", "1.600"),
    ("8", "main-captions", "MSRvid", "2012test", "0014", "none", "none", "A man is playing on a guitar and singing.",
     "A woman is playing an acoustic guitar and singing.", "2.200"),
    ("9", "main-captions", "MSRvid", "2012test", "0016", "none", "none",
     "A person is throwing a cat on to the ceiling.", "A person throws a cat on the ceiling.", "5"),
    ("10", "main-captions", "MSRvid", "2012test", "0018", "none", "none", "The man hit the other man with a stick.",
     "The man spanked the other man with a stick.", "4.2"),
    ("11", "main-forums", "answers-forums", "2015", "0020", "none", "none",
     "A woman picks up and holds a baby kangaroo.", "A woman picks up and holds a baby kangaroo in her arms.",
     "0.000"),
]


def write_tsv(path, rows, header=None):
    lines = ([header] if header else []) + ["\t".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def read_records(files, seq_length=SEQ):
    dataset = create_tinybert_dataset(files, COLS, 64, seq_length, shuffle=False, drop_remainder=False)
    batches = list(dataset.create_dict_iterator(num_epochs=1, output_numpy=True))
    return {k: np.concatenate([b[k] for b in batches]) for k in COLS}


def expected_ids(text_a, text_b, seq_length=SEQ):
    enc = BertTokenizer(VOCAB).encode(text_a, text_b, seq_length)
    return enc.input_ids, enc.token_type_ids


# (task, header, rows, first text column, second text column or None, label column)
FORMATS = {
    "cola": (None, COLA, 3, None, 1),
    "mrpc": (MRPC_HEADER, MRPC, 3, 4, 0),
    "qqp": (QQP_HEADER, QQP, 3, 4, 5),
}


@pytest.mark.parametrize("task", sorted(FORMATS))
def test_classification_formats_convert_with_pinned_binary_labels(tmp_path, task):
    header, rows, a, b, label = FORMATS[task]
    src = write_tsv(tmp_path / "train.tsv", rows, header)
    summary = convert_task_data(task, src, str(tmp_path / "out" / "train.mindrecord"), VOCAB, SEQ)
    assert summary.rows_read == summary.rows_written == 12 and not summary.skipped
    got = read_records(summary.files)
    assert got["label_ids"].dtype == np.int32 and got["label_ids"].tolist() == [int(r[label]) for r in rows]
    for i, row in enumerate(rows):
        ids, segments = expected_ids(row[a], row[b] if b is not None else None)
        assert got["input_ids"][i].tolist() == ids and got["segment_ids"][i].tolist() == segments
    labels = json.loads((tmp_path / "out" / "labels.json").read_text())
    assert labels["labels"] == ["0", "1"] and labels["num_labels"] == 2 and labels["task"] == task


def test_a_split_with_one_class_only_keeps_the_pinned_ids(tmp_path):
    """Pinned labels: a dev file holding only label 1 still maps it to id 1 (not to 0 as sorted(data) would)."""
    src = write_tsv(tmp_path / "dev.tsv", [r for r in COLA if r[1] == "1"])
    summary = convert_task_data("cola", src, str(tmp_path / "dev.mindrecord"), VOCAB, SEQ)
    assert set(read_records(summary.files)["label_ids"].tolist()) == {1}


@pytest.mark.parametrize("fmt", ["mindrecord", "tfrecord"])
def test_stsb_scores_are_float32_labels_exactly_as_written(tmp_path, fmt):
    src = write_tsv(tmp_path / "train.tsv", STSB, STSB_HEADER)
    summary = convert_task_data("stsb", src, str(tmp_path / "out" / f"train.{fmt}"), VOCAB, SEQ, fmt=fmt)
    got = read_records(summary.files)
    assert got["label_ids"].dtype == np.float32 and got["label_ids"].shape == (12,)
    np.testing.assert_array_equal(got["label_ids"], np.array([float(r[9]) for r in STSB], np.float32))
    for i, row in enumerate(STSB):
        ids, segments = expected_ids(row[7], row[8])
        assert got["input_ids"][i].tolist() == ids and got["segment_ids"][i].tolist() == segments
    labels = json.loads((tmp_path / "out" / "labels.json").read_text())
    assert labels["type"] == "regression" and labels["labels"] == ["score"] and labels["num_labels"] == 1
    assert labels["range"] == [0.0, 5.0]
    schema = read_schema(summary.files[0])["columns"]["label_ids"]
    if fmt == "tfrecord":  # a FloatList on disk, which MindSpore's TFRecordDataset reads as float32 (above)
        assert schema == {"type": "float32", "rank": 1, "shape": [1]}
        first = next(iter_tfrecord(summary.files[0]))
        assert first["label_ids"] == [5.0] and isinstance(first["label_ids"][0], float)
    else:
        assert schema == {"type": "float32", "rank": 0, "shape": []}


def test_a_dev_conversion_may_name_the_regression_labels_json_but_no_other(tmp_path):
    src = write_tsv(tmp_path / "train.tsv", STSB, STSB_HEADER)
    train = convert_task_data("stsb", src, str(tmp_path / "out" / "train.mindrecord"), VOCAB, SEQ)
    convert_task_data("stsb", src, str(tmp_path / "out" / "dev.mindrecord"), VOCAB, SEQ, label_map=train.labels_file)
    (tmp_path / "cls.json").write_text(json.dumps({"labels": ["0", "1"]}))
    with pytest.raises(ValueError, match=r"--label_map .*cls\.json: labels \['0', '1'\]; stsb is a regression task"):
        convert_task_data("stsb", src, str(tmp_path / "x" / "dev.mindrecord"), VOCAB, SEQ,
                          label_map=str(tmp_path / "cls.json"))


def _row(rows, i, **changes):
    return tuple(changes.get(str(k), v) for k, v in enumerate(rows[i]))


BAD_ROWS = [
    ("cola", None, COLA[:2] + [("gj04", "1", "A sentence without its original label column.")],
     r"train\.tsv:3: 3 columns; expected 4 \(CoLA: source<TAB>label<TAB>original_label<TAB>sentence, no header\)"),
    ("cola", None, COLA[:3] + [("gj04", "2", "", "A label that is neither zero nor one.")],
     r"train\.tsv:4: unknown label '2'; expected one of \['0', '1'\]"),
    ("mrpc", MRPC_HEADER, MRPC[:1] + [MRPC[1][:4]],
     r"train\.tsv:3: 4 columns; expected 5 \(header \['Quality', '#1 ID'"),
    ("mrpc", "Label\t#1 ID\t#2 ID\t#1 String\t#2 String", MRPC[:2],
     r"train\.tsv:1: header \['Label', .*\] lacks column\(s\) \['Quality'\]"),
    ("qqp", QQP_HEADER, QQP[:4] + [QQP[4][:5] + ("yes",)],
     r"train\.tsv:6: unknown label 'yes'; expected one of \['0', '1'\]"),
    ("stsb", STSB_HEADER, STSB[:2] + [STSB[2][:9] + ("high",)],
     r"train\.tsv:4: score 'high' is not a number; expected a stsb score from 0 to 5"),
    ("stsb", STSB_HEADER, STSB[:1] + [STSB[1][:9] + ("5.2",)],
     r"train\.tsv:3: score '5\.2' is outside \[0, 5\]; expected a stsb score from 0 to 5"),
    ("stsb", STSB_HEADER, STSB[:1] + [STSB[1][:9] + ("nan",)], r"train\.tsv:3: score 'nan' is outside \[0, 5\]"),
    ("stsb", STSB_HEADER, STSB[:3] + [STSB[3][:8]], r"train\.tsv:5: 8 columns; expected 10 \(header \['index'"),
]


@pytest.mark.parametrize("task,header,rows,message", BAD_ROWS)
def test_bad_rows_name_file_line_and_what_was_expected(tmp_path, task, header, rows, message):
    src = write_tsv(tmp_path / "train.tsv", rows, header)
    with pytest.raises(BadRowError, match=message):
        convert_task_data(task, src, str(tmp_path / "out" / "train.mindrecord"), VOCAB, SEQ)
    assert not (tmp_path / "out" / "train.mindrecord").exists()


def test_skip_bad_rows_drops_and_reports_them_from_the_cli(tmp_path, capsys):
    from scripts.convert_task_data import main

    rows = STSB[:5] + [STSB[5][:9] + ("-1",), STSB[6][:8]] + STSB[7:]
    src = write_tsv(tmp_path / "dev.tsv", rows, STSB_HEADER)
    args = ["--task", "stsb", "--input", src, "--output", str(tmp_path / "o" / "dev.mindrecord"),
            "--vocab_file", VOCAB, "--max_seq_length", str(SEQ)]
    assert main(args) == 1 and "dev.tsv:7: score '-1' is outside [0, 5]" in capsys.readouterr().err
    assert main(args + ["--skip_bad_rows"]) == 0
    out = capsys.readouterr().out
    assert "read 12 rows, wrote 10, skipped 2 bad rows" in out and "dev.tsv:8: 8 columns; expected 10" in out
    labels = read_records([str(tmp_path / "o" / "dev.mindrecord")])["label_ids"]
    np.testing.assert_array_equal(labels, np.array([float(r[9]) for r in STSB[:5] + STSB[7:]], np.float32))


@pytest.mark.parametrize("task", ["cola", "mrpc", "qqp", "stsb"])
def test_each_task_has_a_td_config_with_its_metric(task):
    cfg = load_config(os.path.join(ROOT, "td_config", f"{task}.yaml"), kind="td")
    metric, seq, kind = {"cola": ("mcc", 64, "classification"), "mrpc": ("f1", 128, "classification"),
                         "qqp": ("f1", 128, "classification"), "stsb": ("pearson", 128, "regression")}[task]
    assert (cfg.task.metric, cfg.data.seq_length, cfg.task.type) == (metric, seq, kind)
    assert cfg.task.num_labels == (1 if task == "stsb" else 2)


@pytest.mark.parametrize("overrides,message", [
    (["--task.num_labels=2"], r"task\.num_labels: got 2; a regression task has one output: set task\.num_labels: 1"),
    (["--task.metric=accuracy"], r"task\.metric: got 'accuracy' for task\.type 'regression'; regression is scored "
                                 r"by pearson"),
    (["--task.type=classification", "--task.num_labels=2"], r"task\.metric: got 'pearson' for task\.type "
                                                            r"'classification'"),
])
def test_a_metric_that_cannot_score_the_head_is_refused_at_load(overrides, message):
    with pytest.raises(ConfigError, match=r"command line \(--task\.[^)]*\): " + message):
        load_config(os.path.join(ROOT, "td_config", "stsb.yaml"), overrides, kind="td")
    with pytest.raises(ConfigError, match=r"task\.metric: got 'mcc' for task\.type 'ner'; f1 and mcc score"):
        load_config(os.path.join(ROOT, "td_config", "cluener.yaml"), ["--task.metric=mcc"], kind="td")


# ---------------------------------------------------------------- training, evaluation and the offline contract
TINY = dict(vocab_size=30522, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24,
            max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
STUDENT = dict(TINY, num_hidden_layers=1)


def task_config(root, task, data, **sections):
    """td_config/<task>.yaml with tiny models, the records of `data` and quick stages (as tests/test_stages.py)."""
    stage = {"batch_size": 4, "lr": 5e-3, "log_steps": 2}
    cfg = {"run": {"output_dir": str(root / "out"), "mode": "pynative", "seed": 3, "data_seed": 4},
           "data": {"train_files": [str(data / "train.mindrecord")], "eval_files": [str(data / "dev.mindrecord")],
                    "seq_length": SEQ},
           "checkpoint": {"pretrained": str(root / "pretrained.ckpt")},
           "teacher": TINY, "student": STUDENT, "distill": {"layer_map": [[0, 0], [1, 2]]},
           "td": {"finetune": dict(stage, epochs=4), "phase1": dict(stage, epochs=1), "phase2": dict(stage, epochs=4)}}
    for key, value in sections.items():
        cfg[key] = {**cfg[key], **value}
    return load_config(os.path.join(ROOT, "td_config", f"{task}.yaml"), list(flat_overrides(cfg)), kind="td")


def flat_overrides(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from flat_overrides(value, f"{prefix}{key}.")
        else:
            yield f"--{prefix}{key}={json.dumps(value)}"



def convert_split(task, tmp, rows, header):
    for split in ("train", "dev"):
        src = write_tsv(tmp / f"{split}.tsv", rows, header)
        convert_task_data(task, src, str(tmp / "data" / f"{split}.mindrecord"), VOCAB, SEQ)
    return tmp / "data"


def metrics_rows(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_evaluation_uses_the_metric_the_yaml_selects(tmp_path):
    """A CoLA-like run scores its dev set with Matthews correlation (accuracy beside it), as cola.yaml says."""
    from src.model.heads import build_model
    from src.training.networks import evaluator_for, task_head

    data = convert_split("cola", tmp_path, COLA, None)
    cfg = task_config(tmp_path, "cola", data)
    head, kwargs = task_head(cfg)
    net = build_model(cfg.student, head, **kwargs)
    result = evaluator_for(cfg, net)()
    dev = result["sets"]["dev"]
    assert result["metric"] == "mcc" and set(dev) == {"score", "mcc", "accuracy", "examples"}
    assert dev["examples"] == 12 and result["score"] == dev["mcc"] and -1.0 <= dev["mcc"] <= 1.0


@pytest.mark.slow
def test_regression_fine_tunes_and_distils_with_mse_and_is_scored_by_pearson(tmp_path):
    """STS-B: the teacher fine-tuned on float scores (MSE), phase 1, then phase 2 with MSE on the teacher's
    predictions (from the teacher-logit store); each stage's loss falls and its evaluations hold pearson and
    spearman."""
    from src.infra.runtime import Runtime
    from src.model import checkpoint as ckpt
    from src.model.heads import build_model
    from src.training import stages
    from src.training.networks import stage_dirs

    runtime = Runtime(rank=0, world_size=1, device_target="CPU", graph=False)
    data = convert_split("stsb", tmp_path, STSB + STSB, STSB_HEADER)
    cfg = task_config(tmp_path, "stsb", data)
    ckpt.save_model(build_model(cfg.teacher, "backbone"), str(tmp_path / "pretrained.ckpt"))
    teacher = stages.run_finetune(cfg, runtime, "teacher", progress=False)
    assert teacher.finished and ckpt.read_metadata(os.path.join(stage_dirs(cfg)["teacher"], "last.ckpt"))[
        "head"]["num_labels"] == 1
    stages.run_phase1(cfg, runtime, progress=False)
    phase2 = stages.run_phase2(cfg, runtime, progress=False)
    assert phase2.teacher_logits["rows"] == 24
    for name in ("teacher", "phase2"):
        rows = metrics_rows(stage_dirs(cfg)[name])
        train = [r for r in rows if r["type"] == "train"]
        term = "hard_label" if name == "teacher" else "prediction"
        assert all(r[term] > 0 and np.isfinite(r["loss"]) for r in train), name
        losses = [r["loss"] for r in train]
        third = len(losses) // 3  # windows of the first and the last epoch (shuffled batches: compare means)
        assert np.mean(losses[-third:]) < 0.8 * np.mean(losses[:third]), (name, losses)
        evals = [r for r in rows if r["type"] == "eval"]
        assert evals and all(r["metric"] == "pearson" for r in evals)
        dev = evals[-1]["sets"]["dev"]
        assert {"pearson", "spearman"} <= set(dev) and dev["examples"] == 24 and -1 <= dev["pearson"] <= 1
    assert all(r["hard_label"] == 0 for r in metrics_rows(stage_dirs(cfg)["phase2"]) if r["type"] == "train")


def test_offline_bins_of_a_regression_task_hold_float_scores(tmp_path):
    """preprocess.py's .bin files for STS-B: float32 labels; postprocess.py scores [B, 1] results by Pearson."""
    import postprocess
    from src.ship import offline

    data = convert_split("stsb", tmp_path, STSB, STSB_HEADER)
    meta = offline.write_bins([str(data / "dev.mindrecord")], str(tmp_path / "pre"), 5, SEQ, "regression",
                              str(data / "labels.json"), "pearson")
    assert meta["labels"]["dtype"] == "float32" and meta["num_labels"] == 1 and meta["num_batches"] == 3
    scores = np.array([float(r[9]) for r in STSB], np.float32)
    predicted = np.concatenate([scores * 0.5 + 1.0, np.zeros(3, np.float32)]).reshape(3, 5, 1)  # last batch padded
    (tmp_path / "res").mkdir()
    for i in range(3):
        name = offline.result_file_name(offline.batch_file_name(5, i))
        predicted[i].astype(np.float32).tofile(str(tmp_path / "res" / name))
    result = postprocess.score(str(tmp_path / "pre"), str(tmp_path / "res"))
    assert result["examples"] == 12 and result["pearson"] == pytest.approx(1.0) and result["spearman"] == 1.0
    last = offline.read_bin(str(tmp_path / "pre" / offline.LABEL_DIR / offline.batch_file_name(5, 2)), np.float32,
                            [5], "labels")
    np.testing.assert_array_equal(last, np.concatenate([scores[10:], [-1, -1, -1]]).astype(np.float32))
    with pytest.raises(ValueError, match=r"--task_type classification: label_ids in .* are float32; expected label "
                                         r"ids \(use --task_type regression"):
        offline.write_bins([str(data / "dev.mindrecord")], str(tmp_path / "x"), 5, SEQ, "classification",
                           str(data / "labels.json"), "accuracy")
