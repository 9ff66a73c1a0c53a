"""WordPiece tokenizer: unit tests on a tiny vocab, and token-for-token parity with Google's FullTokenizer."""
import json
import os

import pytest

from src.data.tokenization import BasicTokenizer, BertTokenizer, Encoding, WordpieceTokenizer, load_vocab

from conftest import SHARED_DATA, needs

# Google's tokenization_test.py vocab plus a few tokens for the cases below.
TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "want", "##want", "##ed", "wa", "un", "runn", "##ing",
              ",", ".", "!", "^", "$", "a", "b", "c", "hello", "cafe", "the", "quick", "brown", "fox", "我", "爱",
              "china"]


def write_vocab(tmp_path, tokens, name="vocab.txt"):
    path = tmp_path / name
    path.write_text("".join(t + "\n" for t in tokens), encoding="utf-8")
    return str(path)


@pytest.fixture
def tiny(tmp_path):
    return BertTokenizer(write_vocab(tmp_path, TINY_VOCAB))


# --- basic tokenization -------------------------------------------------------------------------------------

def test_lower_case_strips_accents_and_cased_keeps_them():
    assert BasicTokenizer(do_lower_case=True).tokenize(" \tHéLLo  Café ") == ["hello", "cafe"]
    assert BasicTokenizer(do_lower_case=False).tokenize("HéLLo Café") == ["HéLLo", "Café"]


def test_punctuation_split_includes_ascii_symbols():
    # ^ $ ` are not Unicode punctuation (Sk/Sc) but BERT splits every non-alphanumeric ASCII character.
    assert BasicTokenizer().tokenize("a^b$c`d, e!?") == ["a", "^", "b", "$", "c", "`", "d", ",", "e", "!", "?"]
    assert BasicTokenizer().tokenize("«quoted»…") == ["«", "quoted", "»", "…"]


def test_cjk_characters_are_split_one_by_one():
    assert BasicTokenizer().tokenize("我爱China") == ["我", "爱", "china"]


def test_control_characters_are_dropped_and_tab_newline_are_whitespace():
    # \x00 and U+FFFD are dropped, \x07 (Cc) and U+200B (Cf) too; \t \r \n and U+3000 (Zs) separate words.
    assert BasicTokenizer().tokenize("a\x00b\ufffd c\x07d\u200be\tf\r\ng\u3000h") == ["ab", "cde", "f", "g", "h"]


# --- WordPiece ----------------------------------------------------------------------------------------------

def test_wordpiece_continuation_and_unknown(tiny):
    assert tiny.tokenize("unwanted running") == ["un", "##want", "##ed", "runn", "##ing"]
    assert tiny.tokenize("unwantedX running") == ["[UNK]", "runn", "##ing"]  # X cannot be covered
    assert tiny.tokenize("") == []


def test_word_longer_than_max_chars_is_unknown():
    wordpiece = WordpieceTokenizer(load_vocab_dict(TINY_VOCAB), max_chars_per_word=8)
    assert wordpiece.tokenize_word("unwanted") == ["un", "##want", "##ed"]  # 8 characters: allowed
    assert wordpiece.tokenize_word("unwanteda") == ["[UNK]"]  # 9 > 8, although coverable


def test_cached_results_cannot_be_changed_by_callers(tiny):
    tokens = tiny.tokenize("unwanted")
    tokens.append("oops")
    assert tiny.tokenize("unwanted unwanted") == ["un", "##want", "##ed"] * 2


def load_vocab_dict(tokens):
    return {t: i for i, t in enumerate(tokens)}


# --- encoding -----------------------------------------------------------------------------------------------

def test_single_sentence_is_padded_with_mask(tiny):
    enc = tiny.encode("hello, fox", max_seq_length=7)
    ids = [tiny.vocab[t] for t in ["[CLS]", "hello", ",", "fox", "[SEP]"]]
    assert enc == Encoding(ids + [0, 0], [0] * 7, [1] * 5 + [0, 0])


def test_pair_truncates_the_longer_segment_first(tiny):
    # a has 4 tokens, b 1; 4 places left for text: only a loses a token.
    enc = tiny.encode("the quick brown fox", "hello", max_seq_length=7)
    tokens = ["[CLS]", "the", "quick", "brown", "[SEP]", "hello", "[SEP]"]
    assert enc.input_ids == tiny.convert_tokens_to_ids(tokens)
    assert enc.token_type_ids == [0, 0, 0, 0, 0, 1, 1]
    assert enc.attention_mask == [1] * 7


def test_pair_tie_truncates_text_b_as_google(tiny):
    enc = tiny.encode("a b c", "the quick brown", max_seq_length=8)
    tokens = ["[CLS]", "a", "b", "c", "[SEP]", "the", "quick", "[SEP]"]
    assert enc.input_ids == tiny.convert_tokens_to_ids(tokens)


def test_pair_padding(tiny):
    enc = tiny.encode("a", "b", max_seq_length=8)
    assert enc.input_ids == tiny.convert_tokens_to_ids(["[CLS]", "a", "[SEP]", "b", "[SEP]"]) + [0, 0, 0]
    assert enc.token_type_ids == [0, 0, 0, 1, 1, 0, 0, 0]
    assert enc.attention_mask == [1] * 5 + [0] * 3


def test_too_short_max_seq_length_is_refused(tiny):
    with pytest.raises(ValueError, match="max_seq_length=2 is too small: expected >= 3"):
        tiny.encode("a", "b", max_seq_length=2)


# --- vocab errors -------------------------------------------------------------------------------------------

def test_duplicate_token_names_file_and_line(tmp_path):
    path = write_vocab(tmp_path, ["[PAD]", "a", "[CLS]", "a"])
    with pytest.raises(ValueError, match=r"vocab\.txt:4: duplicate token 'a' \(first on line 2\)") as info:
        load_vocab(path)
    assert path in str(info.value)


def test_missing_cls_names_file(tmp_path):
    path = write_vocab(tmp_path, ["[PAD]", "[UNK]", "[SEP]", "a"])
    with pytest.raises(ValueError, match=r"special token \[CLS\] is missing") as info:
        BertTokenizer(path)
    assert path in str(info.value)


def test_crlf_vocab_and_token_ids_are_line_numbers(tmp_path):
    path = tmp_path / "crlf.txt"
    path.write_bytes("[PAD]\r\na\r\n\u2028\r\nb\r\n".encode("utf-8"))
    assert load_vocab(str(path)) == {"[PAD]": 0, "a": 1, "\u2028": 2, "b": 3}


# --- parity with Google's FullTokenizer (bert-tensorflow) ---------------------------------------------------

def data_path(*parts):
    path = os.path.join(SHARED_DATA, *parts)
    if not os.path.exists(path):
        pytest.fail(f"shared data file not found: {path}")
    return path


def sst2_dev():
    with open(data_path("glue", "SST-2", "dev.tsv"), encoding="utf-8") as f:
        return [line.split("\t")[0] for line in f.read().splitlines()[1:]]


def wikitext_head(n=2000):
    # newline="": keep the CRLF, so the \r reaches both tokenizers as whitespace.
    with open(data_path("corpus", "en", "wikitext-2-raw.wiki.test.raw"), encoding="utf-8", newline="") as f:
        return f.read().split("\n")[:n]


def cluener_dev():
    with open(data_path("clue", "cluener", "dev.json"), encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


@pytest.fixture(scope="module")
def google():
    """bert.tokenization made to run on TF 2 (imported once per module: importing TF takes seconds)."""
    tf = needs("tensorflow", "optional TensorFlow extra (pip install -r requirements-tf.txt)")
    # bert-tensorflow 1.0.4 is TF1 code that calls tf.gfile.GFile; TF 2 has it only under tf.io.gfile.
    for module in (tf, tf.compat.v1):
        if not hasattr(module, "gfile"):
            module.gfile = tf.io.gfile
    tokenization = needs("bert.tokenization", "optional TensorFlow extra (pip install -r requirements-tf.txt)")
    from absl import flags  # pylint: disable=import-outside-toplevel
    # FullTokenizer reads FLAGS.preserve_unused_tokens; absl refuses to read flags before they are parsed.
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()
    return tokenization


CORPORA = {
    "sst2-dev": ("bert-base-uncased-vocab.txt", sst2_dev),
    "wikitext2-test-2000": ("bert-base-uncased-vocab.txt", wikitext_head),
    "cluener-dev": ("bert-base-chinese-vocab.txt", cluener_dev),
}


def vocab_pair(google, vocab_name):
    path = data_path("vocab", vocab_name)
    return google.FullTokenizer(path, do_lower_case=True), BertTokenizer(path, do_lower_case=True)


@pytest.mark.parametrize("vocab_name", ["bert-base-uncased-vocab.txt", "bert-base-chinese-vocab.txt"])
def test_vocab_ids_match_google(google, vocab_name):
    theirs, ours = vocab_pair(google, vocab_name)
    assert len(ours.vocab) == len(theirs.vocab)
    # Google strips each line, so bert-base-chinese's lines 344 "\u2028" and 13503 "##\u2028" become "" and "##".
    # Neither can come out of tokenization; every other token must have the same id.
    shared = {t: i for t, i in ours.vocab.items() if t == t.strip()}
    assert shared == {t: i for t, i in theirs.vocab.items() if t in shared}
    assert len(ours.vocab) - len(shared) <= 2


@pytest.mark.parametrize("corpus", sorted(CORPORA))
def test_tokens_and_ids_match_google(google, corpus):
    vocab_name, read_lines = CORPORA[corpus]
    theirs, ours = vocab_pair(google, vocab_name)
    lines = read_lines()
    assert lines, f"{corpus}: no lines read"
    mismatches = []
    for number, line in enumerate(lines, 1):
        expected, got = theirs.tokenize(line), ours.tokenize(line)
        if got != expected or ours.convert_tokens_to_ids(got) != theirs.convert_tokens_to_ids(expected):
            mismatches.append(f"line {number}: {line!r}\n  google: {expected}\n  ours:   {got}")
    assert not mismatches, f"{corpus}: {len(mismatches)} of {len(lines)} lines differ:\n" + "\n".join(mismatches[:5])
