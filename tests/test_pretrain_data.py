"""Pre-training instances: BERT invariants, masking statistics, determinism, readers, Google parity, records."""
import os
import random
import re
import subprocess
import sys

import numpy as np
import pytest

from src.data import pretrain_data as pd
from src.data.tokenization import BertTokenizer
from conftest import ROOT, SHARED_DATA, needs

EN_VOCAB = os.path.join(SHARED_DATA, "vocab", "bert-base-uncased-vocab.txt")
ZH_VOCAB = os.path.join(SHARED_DATA, "vocab", "bert-base-chinese-vocab.txt")
WIKITEXT = os.path.join(SHARED_DATA, "corpus", "en", "wikitext-2-raw.wiki.test.raw")
BERT_SAMPLE = os.path.join(SHARED_DATA, "corpus", "en", "bert_sample_text.txt")
CN_WIKI = os.path.join(SHARED_DATA, "corpus", "zh", "cn_wiki_sample.txt")


@pytest.fixture(scope="module")
def en_tok():
    return BertTokenizer(EN_VOCAB)


@pytest.fixture(scope="module")
def wikitext_docs(en_tok):
    """WikiText-2 test, tokenized (62 documents)."""
    return pd.tokenize_documents(pd.read_documents([WIKITEXT], "wikitext"), en_tok)


def _instances(docs, tok, seed=1, **kw):
    opts = pd.PretrainOptions(**{"dupe_factor": 2, **kw})
    return pd.create_training_instances([list(d) for d in docs], opts, pd.VocabInfo.from_vocab(tok.vocab),
                                        random.Random(seed), progress=False), opts


def _original_ids(inst):
    """The instance's ids before masked-LM corruption."""
    ids = list(inst.input_ids)
    for pos, label in zip(inst.masked_lm_positions, inst.masked_lm_ids):
        ids[pos] = label
    return ids


def _check_layout(inst, opts, vocab):
    """[CLS] A [SEP] B [SEP], segment ids 0...0 1...1, both segments non-empty, within max_seq_length."""
    ids = _original_ids(inst)
    assert 5 <= len(ids) <= opts.max_seq_length
    assert ids[0] == vocab.cls_id and ids[-1] == vocab.sep_id
    seps = [i for i, t in enumerate(ids) if t == vocab.sep_id]
    assert len(seps) == 2 and 2 <= seps[0] <= len(ids) - 3
    assert inst.segment_ids == [0] * (seps[0] + 1) + [1] * (len(ids) - seps[0] - 1)
    assert vocab.cls_id not in ids[1:]


def test_instance_layout_and_padding(en_tok, wikitext_docs):
    instances, opts = _instances(wikitext_docs, en_tok)
    vocab = pd.VocabInfo.from_vocab(en_tok.vocab)
    for inst in instances:
        _check_layout(inst, opts, vocab)
    row = pd.instance_to_row(instances[0], opts)
    n = len(instances[0].input_ids)
    assert row["input_mask"] == [1] * n + [0] * (128 - n)
    assert all(len(row[c]) == shape[0] for c, (_, shape) in pd.record_columns(opts).items())
    assert sum(row["masked_lm_weights"]) == len(instances[0].masked_lm_positions)
    lengths = [len(i.input_ids) for i in instances]
    assert max(lengths) == 128 and np.mean(np.array(lengths) < 100) > 0.01  # short_seq_prob: per document


def test_random_next_is_about_half(en_tok, wikitext_docs):
    # short_seq_prob 0: a short target (drawn once per document) makes one-sentence chunks, which always take a
    # random next (as Google), and with 62 documents that swings the rate by several points between seeds.
    instances, _ = _instances(wikitext_docs, en_tok, masked_lm_prob=0.0, short_seq_prob=0.0)
    assert len(instances) > 4000
    assert 0.47 < np.mean([i.is_random_next for i in instances]) < 0.54


def test_masking_rate_and_80_10_10(en_tok, wikitext_docs):
    instances, _ = _instances(wikitext_docs, en_tok)
    vocab = pd.VocabInfo.from_vocab(en_tok.vocab)
    outcome = {"mask": 0, "keep": 0, "random": 0}
    for inst in instances:
        assert len(inst.masked_lm_positions) == min(20, max(1, round(len(inst.input_ids) * 0.15)))
        assert inst.masked_lm_positions == sorted(set(inst.masked_lm_positions))
        for pos, label in zip(inst.masked_lm_positions, inst.masked_lm_ids):
            assert label not in (vocab.cls_id, vocab.sep_id)
            token = inst.input_ids[pos]
            outcome["mask" if token == vocab.mask_id else "keep" if token == label else "random"] += 1
    total = sum(outcome.values())
    assert total > 50000
    assert abs(outcome["mask"] / total - 0.8) < 0.01
    assert abs(outcome["keep"] / total - 0.1) < 0.01 and abs(outcome["random"] / total - 0.1) < 0.01


def test_whole_word_masking_masks_every_piece(en_tok, wikitext_docs):
    instances, _ = _instances(wikitext_docs, en_tok, whole_word_mask=True)
    vocab = pd.VocabInfo.from_vocab(en_tok.vocab)
    cont, cls_sep = vocab.continuation_ids, (vocab.cls_id, vocab.sep_id)
    multi_piece_words = 0
    for inst in instances:
        ids, masked = _original_ids(inst), set(inst.masked_lm_positions)
        assert len(masked) <= min(20, max(1, round(len(ids) * 0.15)))
        for pos in masked:
            start, end = pos, pos + 1
            while ids[start] in cont and ids[start - 1] not in (cls_sep):
                start -= 1
            while end < len(ids) and ids[end] in cont:
                end += 1
            # A segment cut by truncation may start with a ## piece; Google groups it with the word before [SEP].
            assert set(range(start, end)) <= masked, f"word at {start}:{end} only partly masked"
            multi_piece_words += end - start > 1
    assert multi_piece_words > 100


def test_deterministic_under_seed(en_tok, wikitext_docs):
    docs = wikitext_docs[:20]
    first, _ = _instances(docs, en_tok, seed=3)
    again, _ = _instances(docs, en_tok, seed=3)
    other, _ = _instances(docs, en_tok, seed=4)
    assert first == again
    assert first != other


def test_no_masking_gives_plain_text_and_three_columns(en_tok, wikitext_docs):
    instances, opts = _instances(wikitext_docs[:10], en_tok, masked_lm_prob=0.0)
    vocab = pd.VocabInfo.from_vocab(en_tok.vocab)
    assert all(not i.masked_lm_positions and vocab.mask_id not in i.input_ids for i in instances)
    assert list(pd.record_columns(opts)) == ["input_ids", "input_mask", "segment_ids"]
    assert set(pd.instance_to_row(instances[0], opts)) == {"input_ids", "input_mask", "segment_ids"}


def test_wikitext_documents():
    docs = pd.read_documents([WIKITEXT], "wikitext")
    assert len(docs) == 62
    assert docs[0][0].startswith("Robert Boulter is an English film , television and theatre actor .")
    sentences = [s for d in docs for s in d]
    assert not any("@-@" in s or "@,@" in s or "@.@" in s or "\r" in s for s in sentences)
    assert not any(s.startswith("= ") and s.endswith(" =") for s in sentences)  # titles and headings dropped
    assert pd.unescape_wikitext("a 1 @,@ 000 @-@ strong force of 2 @.@ 5") == "a 1,000-strong force of 2.5"


def test_sentence_documents_follow_blank_lines():
    with open(BERT_SAMPLE, encoding="utf-8") as f:
        blocks = [b for b in f.read().split("\n\n") if b.strip()]
    docs = pd.read_documents([BERT_SAMPLE], "sentences")
    assert [len(d) for d in docs] == [len(b.strip().splitlines()) for b in blocks]


def test_chinese_is_split_per_character(tmp_path):
    tok = BertTokenizer(ZH_VOCAB)
    path = tmp_path / "zh.txt"
    with open(CN_WIKI, encoding="utf-8") as f:
        path.write_text("".join(f.readline() for _ in range(300)), encoding="utf-8")
    docs = pd.tokenize_documents(pd.read_documents([str(path)], "sentences"), tok)
    instances, opts = _instances(docs, tok, whole_word_mask=True)
    vocab = pd.VocabInfo.from_vocab(tok.vocab)
    assert len(instances) > 100
    for inst in instances:
        _check_layout(inst, opts, vocab)
    unk = tok.vocab["[UNK]"]
    ids = [t for inst in instances for t in _original_ids(inst)]
    assert ids.count(unk) / len(ids) < 0.01
    assert tok.tokenize("数学是研究数量的学科") == list("数学是研究数量的学科")


def test_bad_inputs_name_the_problem(tmp_path, en_tok):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes(b"fine line\ncaf\xe9\n")
    with pytest.raises(ValueError, match=r"latin1.txt:2: not UTF-8"):
        pd.read_documents([str(bad)], "sentences")
    with pytest.raises(ValueError, match=r"--max_seq_length \(max_seq_length\): got 4; expected >= 5"):
        pd.PretrainOptions(max_seq_length=4)
    with pytest.raises(ValueError, match=r"input_format: got 'xml'"):
        pd.read_documents([str(bad)], "xml")
    with pytest.raises(ValueError, match="no documents"):
        pd.create_training_instances([], pd.PretrainOptions(), pd.VocabInfo.from_vocab(en_tok.vocab),
                                     random.Random(0))


def test_same_instances_as_google(en_tok):
    """With the same seed and tokens, Google's create_pretraining_data.py makes exactly our instances."""
    google = needs("bert.create_pretraining_data", "optional TensorFlow extra (pip install -r requirements-tf.txt)")
    theirs = google.create_training_instances([BERT_SAMPLE], en_tok, 128, 3, 0.1, 0.15, 20, random.Random(7))
    docs = pd.tokenize_documents(pd.read_documents([BERT_SAMPLE], "sentences"), en_tok)
    ours, _ = _instances(docs, en_tok, seed=7, dupe_factor=3)
    assert len(ours) == len(theirs) > 20
    for g, o in zip(theirs, ours):
        assert en_tok.convert_tokens_to_ids(g.tokens) == o.input_ids and list(g.segment_ids) == o.segment_ids
        assert (g.is_random_next, list(g.masked_lm_positions)) == (o.is_random_next, o.masked_lm_positions)
        assert en_tok.convert_tokens_to_ids(g.masked_lm_labels) == o.masked_lm_ids


# ---------------------------------------------------------------------------------------------------------------
# End to end through src/data/records.py


def _read_back(files, fmt):
    """All rows of the written files, read by MindSpore's own readers."""
    import mindspore.dataset as ds  # pylint: disable=import-outside-toplevel
    from src.data.records import schema_path_for  # pylint: disable=import-outside-toplevel

    if fmt == "mindrecord":
        datasets = [ds.MindDataset(files, shuffle=False)]
    else:  # one schema per shard: its numRows caps what TFRecordDataset reads, so read each shard with its own
        datasets = [ds.TFRecordDataset([f], schema=schema_path_for(f), shuffle=False) for f in files]
    return [row for data in datasets for row in data.create_dict_iterator(output_numpy=True, num_epochs=1)]


@pytest.mark.parametrize("fmt", ["mindrecord", "tfrecord"])
def test_records_read_back(tmp_path, en_tok, fmt):
    output = str(tmp_path / f"sample.{fmt}")
    opts = pd.PretrainOptions(dupe_factor=2)
    files, count = pd.create_pretraining_records([BERT_SAMPLE], output, en_tok, opts, fmt=fmt, num_shards=2, seed=5)
    assert len(files) == 2 and count > 10
    rows = _read_back(files, fmt)
    assert len(rows) == count
    assert set(rows[0]) == set(pd.record_columns(opts))
    vocab = pd.VocabInfo.from_vocab(en_tok.vocab)
    for row in rows:
        n = int(row["input_mask"].sum())
        assert row["input_ids"].shape == (128,) and row["input_ids"][0] == vocab.cls_id
        assert row["input_ids"][n - 1] == vocab.sep_id and not row["input_ids"][n:].any()
        k = int(row["masked_lm_weights"].sum())
        assert (row["masked_lm_positions"][:k] > 0).all() and not row["masked_lm_positions"][k:].any()


def test_cli_chinese_uncorrupted(tmp_path):
    src = tmp_path / "zh.txt"
    with open(CN_WIKI, encoding="utf-8") as f:
        src.write_text("".join(f.readline() for _ in range(300)), encoding="utf-8")
    out = tmp_path / "zh.mindrecord"
    cmd = [sys.executable, os.path.join(ROOT, "scripts", "create_pretraining_data.py"), "--input_file", str(src),
           "--vocab_file", ZH_VOCAB, "--output_file", str(out), "--masked_lm_prob", "0", "--dupe_factor", "1"]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("wrote ")
    rows = _read_back([str(out)], "mindrecord")
    assert rows and set(rows[0]) == {"input_ids", "input_mask", "segment_ids"}


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["mindrecord", "tfrecord"])
def test_readme_gd_records_through_create_tinybert_dataset(tmp_path, en_tok, wikitext_docs, fmt):
    """README's GD command (WikiText-2 raw, wikitext format, sharded) at small settings, in both formats, read back
    through create_tinybert_dataset with the GD columns; every instance comes back exactly once, unchanged."""
    from src.data.dataset import create_tinybert_dataset  # pylint: disable=import-outside-toplevel

    seq, out = 64, tmp_path / "gd" / f"wikitext2.{fmt}"
    cmd = [sys.executable, os.path.join(ROOT, "scripts", "create_pretraining_data.py"), "--input_file", WIKITEXT,
           "--input_format", "wikitext", "--vocab_file", EN_VOCAB, "--output_file", str(out), "--num_shards", "2",
           "--format", fmt, "--max_seq_length", str(seq), "--max_predictions_per_seq", "10", "--dupe_factor", "1",
           "--random_seed", "3"]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    count = int(result.stdout.split()[1])
    pattern = str(tmp_path / "gd" / ("wikitext2.mindrecord*" if fmt == "mindrecord" else "wikitext2-*.tfrecord"))
    columns = ["input_ids", "input_mask", "segment_ids"]
    dataset = create_tinybert_dataset(pattern, columns, 32, seq, shuffle=False, drop_remainder=False)
    batches = list(dataset.create_dict_iterator(output_numpy=True, num_epochs=1))
    assert all(set(b) == set(columns) for b in batches)
    assert all(b[c].dtype == np.int32 and b[c].shape == (len(b["input_ids"]), seq) for b in batches for c in columns)
    assert [len(b["input_ids"]) for b in batches[:-1]] == [32] * (len(batches) - 1)
    got = sorted(tuple(map(tuple, (b[c][i] for c in columns))) for b in batches for i in range(len(b["input_ids"])))
    # The same instances, made in-process from the same seed and settings (the script is deterministic).
    opts = pd.PretrainOptions(max_seq_length=seq, max_predictions_per_seq=10, dupe_factor=1)
    instances = pd.create_training_instances([list(d) for d in wikitext_docs], opts,
                                             pd.VocabInfo.from_vocab(en_tok.vocab), random.Random(3), progress=False)
    rows = [pd.instance_to_row(inst, opts) for inst in instances]
    assert len(got) == count == len(rows) > 1000
    assert got == sorted(tuple(tuple(r[c]) for c in columns) for r in rows)
    assert any(vocab_id == en_tok.vocab["[MASK]"] for row in got for vocab_id in row[0])  # MLM-corrupted GD data


@pytest.mark.parametrize("content,flags,message", [
    (b"", [], r"error: .*empty\.txt: no sentence with any token \(empty input\?\)"),
    (b"\xff\xfe not utf-8\n", [], r"error: .*empty\.txt:1: not UTF-8 text"),
    (b"One sentence.\n", ["--masked_lm_prob", "1.5"], r"error: pretraining options: --masked_lm_prob "
                                                        r"\(masked_lm_prob\): got 1\.5; expected in \[0, 1\)"),
    (b"One sentence.\n", ["--dupe_factor", "0"], r"error: pretraining options: --dupe_factor \(dupe_factor\): got 0"),
])
def test_cli_bad_corpus_or_options_give_one_line_and_write_nothing(tmp_path, content, flags, message):
    src = tmp_path / "empty.txt"
    src.write_bytes(content)
    cmd = [sys.executable, os.path.join(ROOT, "scripts", "create_pretraining_data.py"), "--input_file", str(src),
           "--output_file", str(tmp_path / "out" / "gd.mindrecord"), "--vocab_file", EN_VOCAB] + flags
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert re.search(message, proc.stderr.strip().splitlines()[-1]), proc.stderr[-500:]
    assert not os.path.exists(tmp_path / "out")
