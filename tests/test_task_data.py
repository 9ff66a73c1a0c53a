"""Task converters: real SST-2 / CLUENER / TNEWS slices, MNLI / QNLI / TSV formats, every bad-row case, CLI."""
import itertools
import json
import os

import numpy as np
import pytest

from src.data.dataset import create_tinybert_dataset
from src.metrics import IGNORE_INDEX
from src.data.task_data import (MNLI_LABELS, TNEWS_LABEL_IDS, BadRowError, convert_task_data,
                           span_tags)
from tests.conftest import SHARED_DATA

EN_VOCAB = os.path.join(SHARED_DATA, "vocab", "bert-base-uncased-vocab.txt")
ZH_VOCAB = os.path.join(SHARED_DATA, "vocab", "bert-base-chinese-vocab.txt")
COLS = ["input_ids", "input_mask", "segment_ids", "label_ids"]
needs_data = pytest.mark.skipif(not os.path.isdir(SHARED_DATA), reason="shared data folder not present")


def _head(src, dst, n):
    with open(src, encoding="utf-8") as f, open(dst, "w", encoding="utf-8") as out:
        out.writelines(itertools.islice(f, n))
    return str(dst)


def _read_all(files, seq_length):
    dataset = create_tinybert_dataset(files, COLS, 50, seq_length, shuffle=False, drop_remainder=False)
    batches = list(dataset.create_dict_iterator(output_numpy=True))
    return {k: np.concatenate([b[k] for b in batches]) for k in COLS}


@needs_data
def test_sst2_first_200_rows(tmp_path):
    src = _head(os.path.join(SHARED_DATA, "glue", "SST-2", "train.tsv"), tmp_path / "train.tsv", 201)
    summary = convert_task_data("sst2", src, str(tmp_path / "out" / "train.mindrecord"), EN_VOCAB, 32)
    assert summary.rows_written == 200 and not summary.skipped and summary.truncated > 0
    data = _read_all(summary.files, 32)
    with open(src, encoding="utf-8") as f:
        expected = [int(line.rstrip("\n").split("\t")[1]) for line in list(f)[1:]]
    assert data["label_ids"].tolist() == expected
    assert (data["input_ids"][:, 0] == 101).all() and data["input_mask"].sum(1).max() == 32  # [CLS]; truncated
    assert json.load(open(summary.labels_file))["labels"] == ["0", "1"]


@needs_data
def test_cluener_dev_first_200_rows_bioes(tmp_path):
    src = _head(os.path.join(SHARED_DATA, "clue", "cluener", "dev.json"), tmp_path / "dev.json", 200)
    summary = convert_task_data("cluener", src, str(tmp_path / "out" / "dev.tfrecord"), ZH_VOCAB, 64,
                                fmt="tfrecord")
    assert summary.rows_written == 200 and not summary.skipped
    labels = json.load(open(summary.labels_file))
    assert labels["labels"][0] == "O" and (labels["num_labels"] - 1) % 4 == 0 and labels["tag_scheme"] == "bioes"
    data = _read_all(summary.files, 64)
    first = data["label_ids"][0]  # 彭小军 (name) at [0, 2], 台湾 (address) at [15, 16]
    ids = labels["label_to_id"]
    assert first[0] == IGNORE_INDEX and first[1:4].tolist() == [ids["B-name"], ids["I-name"], ids["E-name"]]
    assert first[16:18].tolist() == [ids["B-address"], ids["E-address"]]
    length = int(data["input_mask"][0].sum())
    assert first[length - 1] == IGNORE_INDEX and (first[length:] == IGNORE_INDEX).all()  # [SEP] + padding
    assert data["label_ids"].shape == (200, 64)


@needs_data
def test_tnews_dev_all_rows(tmp_path):
    src = os.path.join(SHARED_DATA, "clue", "tnews", "dev.json")
    summary = convert_task_data("tnews", src, str(tmp_path / "out" / "dev.mindrecord"), ZH_VOCAB, 64)
    assert summary.rows_written == 1098 and not summary.skipped
    labels = json.load(open(summary.labels_file))
    assert labels["num_labels"] == 15 and labels["label_to_id"]["100"] == 0 and labels["label_to_id"]["116"] == 14
    data = _read_all(summary.files, 64)
    with open(src, encoding="utf-8") as f:
        raw = [int(json.loads(line)["label"]) for line in f if line.strip()]
    assert data["label_ids"].tolist() == [TNEWS_LABEL_IDS.index(x) for x in raw]


def test_mnli_pinned_order_and_pairs(tmp_path):
    src = tmp_path / "dev_matched.tsv"
    src.write_text("index\tpromptID\tsentence1\tsentence2\tgold_label\n"
                   "0\t7\tthe cat sat\ta cat\tneutral\n1\t8\tit rains\tit is dry\tcontradiction\n"
                   "2\t9\tit rains\tit is wet\tentailment\n", encoding="utf-8")
    summary = convert_task_data("mnli", str(src), str(tmp_path / "o" / "dev.tfrecord"), EN_VOCAB, 16,
                                fmt="tfrecord")
    data = _read_all(summary.files, 16)
    assert data["label_ids"].tolist() == [2, 0, 1]
    assert json.load(open(summary.labels_file))["labels"] == MNLI_LABELS == ["contradiction", "entailment", "neutral"]
    # [CLS] the cat sat [SEP] a cat [SEP]: segment 1 on the second sentence and its [SEP]
    assert data["segment_ids"][0][:8].tolist() == [0, 0, 0, 0, 0, 1, 1, 1]


def test_qnli_tsv_and_label_text(tmp_path):
    qnli = tmp_path / "qnli.tsv"
    qnli.write_text("index\tquestion\tsentence\tlabel\n0\twho?\tme.\tnot_entailment\n", encoding="utf-8")
    s = convert_task_data("qnli", str(qnli), str(tmp_path / "q" / "d.mindrecord"), EN_VOCAB, 12)
    assert _read_all(s.files, 12)["label_ids"].tolist() == [1]
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("id\tlab\ta\tb\n1\tyes\thello\tworld\n2\tno\tgood\tbad\n", encoding="utf-8")
    s = convert_task_data("tsv", str(tsv), str(tmp_path / "t" / "d.mindrecord"), EN_VOCAB, 12, text_a_col=2,
                          text_b_col=3, label_col=1, has_header=True)
    assert json.load(open(s.labels_file))["labels"] == ["no", "yes"] and s.rows_written == 2
    lt = tmp_path / "lt.txt"
    lt.write_text("pos\tgreat film\nneg\tawful\n", encoding="utf-8")
    s = convert_task_data("label_text", str(lt), str(tmp_path / "l" / "d.mindrecord"), EN_VOCAB, 12)
    assert _read_all(s.files, 12)["label_ids"].tolist() == [1, 0]


def test_bmes_tags():
    assert span_tags("abcdef", {"x": {"bcde": [[1, 4]]}, "y": {"f": [[5, 5]]}}, "f:1", "bmes") == [
        "O", "B-x", "M-x", "M-x", "E-x", "S-y"]


BAD_CASES = [
    ("sst2", "sentence\tlabel\ngood\t1\ntoo\tmany\tcols\n", r":3: 3 columns; expected 2"),
    ("sst2", "sentence\tlabel\ngood\t1\nbad\t7\n", r":3: unknown label '7'; expected one of \['0', '1'\]"),
    ("tnews", '{"label": 100, "sentence": "a"}\n{"label": 100, "sentence": \n', r":2: invalid JSON"),
    ("tnews", '{"label": 105, "sentence": "a"}\n', r":1: unknown label '105'"),
    ("cluener", '{"text": "abc", "label": {"x": {"bcd": [[1, 3]]}}}\n',
     r":1: label.x.bcd: span \[1, 3\] is outside the text \(length 3"),
    ("cluener", '{"text": "abcd", "label": {"x": {"bd": [[1, 2]]}}}\n',
     r":1: label.x: span \[1, 2\] is 'bc' in the text; expected 'bd'"),
]


@pytest.mark.parametrize("task,content,message", BAD_CASES)
def test_bad_rows_raise_with_file_and_line(tmp_path, task, content, message):
    src = tmp_path / "in.txt"
    src.write_text(content, encoding="utf-8")
    vocab = ZH_VOCAB if task != "sst2" else EN_VOCAB
    with pytest.raises(BadRowError, match=r"in\.txt" + message):
        convert_task_data(task, str(src), str(tmp_path / "o" / "d.tfrecord"), vocab, 8, fmt="tfrecord")
    assert not os.path.exists(tmp_path / "o" / "d.tfrecord")


def test_skip_bad_rows_counts_them_and_cli_reports(tmp_path, capsys):
    from scripts.convert_task_data import main

    src = tmp_path / "train.tsv"
    src.write_text("sentence\tlabel\ngood movie\t1\nbroken\n" + "a very long sentence indeed\t0\nx\t9\n",
                   encoding="utf-8")
    args = ["--task", "sst2", "--input", str(src), "--output", str(tmp_path / "o" / "t.mindrecord"),
            "--vocab_file", EN_VOCAB, "--max_seq_length", "5"]
    assert main(args) == 1 and ":3: 1 columns; expected 2" in capsys.readouterr().err
    assert main(args + ["--skip_bad_rows"]) == 0
    out = capsys.readouterr().out
    assert "read 4 rows, wrote 2, skipped 2 bad rows, truncated 1 over-long examples" in out
    assert "train.tsv:5: unknown label '9'" in out


def test_dev_with_different_computed_labels_is_refused(tmp_path):
    (tmp_path / "train.txt").write_text("a\tx\nb\ty\n", encoding="utf-8")
    (tmp_path / "dev.txt").write_text("b\ty\n", encoding="utf-8")
    out = tmp_path / "o"
    s = convert_task_data("label_text", str(tmp_path / "train.txt"), str(out / "train.mindrecord"), EN_VOCAB, 8)
    with pytest.raises(ValueError, match="already holds a different label list.*--label_map"):
        convert_task_data("label_text", str(tmp_path / "dev.txt"), str(out / "dev.mindrecord"), EN_VOCAB, 8)
    assert not os.path.exists(out / "dev.mindrecord")  # refused before writing records with the wrong label ids
    d = convert_task_data("label_text", str(tmp_path / "dev.txt"), str(out / "dev.mindrecord"), EN_VOCAB, 8,
                          label_map=s.labels_file)
    assert _read_all(d.files, 8)["label_ids"].tolist() == [1]


def test_cli_help(capsys):
    from scripts.convert_task_data import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "--skip_bad_rows" in capsys.readouterr().out


@needs_data
def test_pair_encoding_is_the_tokenizers_and_reports_truncation():
    from src.data.task_data import encode_pair
    from src.data.tokenization import BertTokenizer
    tok = BertTokenizer(EN_VOCAB)
    a, b = "one two three four five", "six seven eight nine ten"  # equal lengths: Google cuts b on ties
    row, truncated = encode_pair(tok, a, b, 10)
    enc = tok.encode(a, b, 10)
    assert truncated and row == {"input_ids": enc.input_ids, "input_mask": enc.attention_mask,
                                 "segment_ids": enc.token_type_ids}
    # budget 7: ties cut b, then the longer side: a keeps 4 tokens, b keeps 3
    assert row["input_ids"] == tok.convert_tokens_to_ids(
        ["[CLS]", "one", "two", "three", "four", "[SEP]", "six", "seven", "eight", "[SEP]"])
    assert encode_pair(tok, a, None, 10)[1] is False


def test_non_utf8_rows_name_file_and_line_and_can_be_skipped(tmp_path):
    """A byte that is not UTF-8 used to escape as a bare UnicodeDecodeError without file or line."""
    tsv = tmp_path / "in.txt"
    tsv.write_bytes(b"sentence\tlabel\ngood\t1\ncaf\xe9\t0\nfine\t0\n")
    with pytest.raises(BadRowError, match=r"in\.txt:3: not UTF-8 text"):
        convert_task_data("sst2", str(tsv), str(tmp_path / "o" / "d.tfrecord"), EN_VOCAB, 8, fmt="tfrecord")
    s = convert_task_data("sst2", str(tsv), str(tmp_path / "o" / "d.tfrecord"), EN_VOCAB, 8, fmt="tfrecord",
                          skip_bad_rows=True)
    assert s.rows_written == 2 and len(s.skipped) == 1 and ":3: not UTF-8" in s.skipped[0]
    jsonl = tmp_path / "in.json"
    jsonl.write_bytes(b'{"label": 100, "sentence": "a"}\n{"label": 100, "sentence": "\xff"}\n')
    with pytest.raises(BadRowError, match=r"in\.json:2: not UTF-8 text"):
        convert_task_data("tnews", str(jsonl), str(tmp_path / "t" / "d.tfrecord"), ZH_VOCAB, 8, fmt="tfrecord")


def test_one_tsv_reader_for_converters_and_augmentation(tmp_path):
    """task_data and augment read TSV lines the same way: tabs only, quotes kept, CRLF, BOM, no size limit."""
    from src.data import augment
    from src.data.task_data import read_tsv_lines

    long_text = "word " * 40000  # 200,000 characters: over the csv module's default field size limit
    path = tmp_path / "x.tsv"
    path.write_bytes(("\ufeffsentence\tlabel\r\n" + 'he said "hi\t1\r\n' + f"{long_text}\t0\n").encode("utf-8"))
    lines = list(read_tsv_lines(str(path)))
    assert lines == [(1, ["sentence", "label"]), (2, ['he said "hi', "1"]), (3, [long_text, "0"])]
    assert list(augment.read_rows(str(path))) == lines[1:]
    summary = convert_task_data("sst2", str(path), str(tmp_path / "o" / "d.tfrecord"), EN_VOCAB, 8, fmt="tfrecord")
    assert summary.rows_written == 2 and summary.truncated == 1


def test_cluener_row_with_empty_text_is_a_bad_row(tmp_path):
    src = tmp_path / "ner.json"
    src.write_text('{"text": "ab", "label": {"x": {"a": [[0, 0]]}}}\n{"text": "", "label": {}}\n', encoding="utf-8")
    with pytest.raises(BadRowError, match=r"ner\.json:2: the text is empty"):
        convert_task_data("cluener", str(src), str(tmp_path / "o" / "d.tfrecord"), ZH_VOCAB, 8, fmt="tfrecord")
    assert not os.path.exists(tmp_path / "o")
    summary = convert_task_data("cluener", str(src), str(tmp_path / "o" / "d.tfrecord"), ZH_VOCAB, 8,
                                fmt="tfrecord", skip_bad_rows=True)
    assert summary.rows_written == 1 and len(summary.skipped) == 1


@pytest.mark.parametrize("content,message", [
    ("sentence\tlabel\ngood\t1\n\t1\n", r"in\.tsv:3: the text is empty"),
    ("sentence\tlabel\ngood\t1\n  \t0\n", r"in\.tsv:3: the text is empty"),
])
def test_empty_or_blank_text_is_a_bad_row_not_a_cls_sep_example(tmp_path, content, message):
    src = tmp_path / "in.tsv"
    src.write_text(content, encoding="utf-8")
    with pytest.raises(BadRowError, match=message):
        convert_task_data("sst2", str(src), str(tmp_path / "o" / "d.mindrecord"), EN_VOCAB, 8)
    assert not os.path.exists(tmp_path / "o")
    summary = convert_task_data("sst2", str(src), str(tmp_path / "o" / "d.mindrecord"), EN_VOCAB, 8,
                                skip_bad_rows=True)
    assert (summary.rows_read, summary.rows_written, len(summary.skipped)) == (2, 1, 1)


@pytest.mark.parametrize("task,length,need", [("sst2", 0, 3), ("sst2", 1, 3), ("sst2", 2, 3), ("mnli", 4, 5)])
def test_a_sequence_length_that_holds_no_token_is_refused_naming_the_option(tmp_path, task, length, need):
    src = tmp_path / "in.tsv"
    src.write_text("sentence\tlabel\ngood\t1\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"--max_seq_length \(seq_length\): got {length}; {task} needs at least "
                                         rf"{need}"):
        convert_task_data(task, str(src), str(tmp_path / "o" / "d.mindrecord"), EN_VOCAB, length)
    assert not os.path.exists(tmp_path / "o")


def test_broken_label_map_names_the_file(tmp_path):
    from src.data.task_data import load_label_map

    bad = tmp_path / "labels.json"
    bad.write_text('{"labels": ["a", "b"]', encoding="utf-8")
    with pytest.raises(ValueError, match=r"labels\.json:1: invalid JSON"):
        load_label_map(str(bad))
    bad.write_text('["a", "b"]', encoding="utf-8")
    with pytest.raises(ValueError, match=r"labels\.json: key 'labels' missing"):
        load_label_map(str(bad))


def test_sample_tsv_rows_keeps_the_header_and_file_order_and_is_seeded(tmp_path):
    from src.data.task_data import sample_tsv_rows
    src = tmp_path / "train.tsv"
    src.write_text("sentence\tlabel\n" + "".join(f"s{i}\t{i % 2}\n" for i in range(50)), encoding="utf-8")
    a = sample_tsv_rows(str(src), str(tmp_path / "a" / "sub.tsv"), 10, seed=3)
    b = sample_tsv_rows(str(src), str(tmp_path / "b.tsv"), 10, seed=3)
    lines = open(a, encoding="utf-8").read().splitlines()
    assert lines[0] == "sentence\tlabel" and len(lines) == 11 and len(set(lines[1:])) == 10
    assert [int(l.split("\t")[0][1:]) for l in lines[1:]] == sorted(int(l.split("\t")[0][1:]) for l in lines[1:])
    assert open(b, encoding="utf-8").read() == open(a, encoding="utf-8").read()
    assert sample_tsv_rows(str(src), str(tmp_path / "c.tsv"), 10, seed=4) and \
        open(tmp_path / "c.tsv", encoding="utf-8").read() != open(a, encoding="utf-8").read()
    with pytest.raises(ValueError, match=r"train.tsv: asked for 51 rows; it has 50"):
        sample_tsv_rows(str(src), str(tmp_path / "d.tsv"), 51, seed=0)
    assert not list(tmp_path.rglob("*.part"))
