"""BERT WordPiece tokenization (English uncased and Chinese), following Google BERT's FullTokenizer.

Basic tokenization: clean control characters, split CJK characters one by one, optionally lower-case
and strip accents, split on whitespace and punctuation. Then greedy longest-match-first WordPiece with
`##` continuations; a word that cannot be covered, or is longer than `max_chars_per_word`, is [UNK].
"""
from __future__ import annotations

import functools
import unicodedata
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

from src.data.vocab import fingerprint_of

# Distinct words seen by one tokenizer that keep their WordPiece result cached (~100 MB at most).
WORD_CACHE_SIZE = 1 << 18


def load_vocab(path: str) -> Dict[str, int]:
    """Token -> id from a vocab.txt (one token per line, id = line number)."""
    vocab: Dict[str, int] = {}
    # newline="\n": split on LF only, so a token holding a stray CR or U+2028 keeps its line (= its id).
    with open(path, encoding="utf-8", newline="\n") as f:
        for index, line in enumerate(f):
            token = line.rstrip("\n").rstrip("\r")
            if token in vocab:
                raise ValueError(f"{path}:{index + 1}: duplicate token {token!r} "
                                 f"(first on line {vocab[token] + 1}); expected each token once")
            vocab[token] = index
    if not vocab:
        raise ValueError(f"{path}: empty vocabulary")
    return vocab


def _is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch: str) -> bool:
    if ch in "\t\n\r":
        return False
    return unicodedata.category(ch) in ("Cc", "Cf")


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    # ASCII symbols such as ^ $ ` are not Unicode punctuation but BERT splits them too.
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


class _CharMap(dict):
    """`str.translate` table filled on first use: control -> dropped, whitespace -> ' ', CJK -> ' c '."""

    def __missing__(self, cp: int) -> Optional[str]:
        ch = chr(cp)
        # The three classes are disjoint, so one pass equals Google's clean-then-split-CJK passes.
        if cp == 0 or cp == 0xFFFD or _is_control(ch):
            value = None
        elif _is_whitespace(ch):
            value = " "
        elif _is_cjk(cp):
            value = f" {ch} "
        else:
            value = ch
        self[cp] = value
        return value


_CHAR_MAP = _CharMap()


class BasicTokenizer:
    """Whitespace, punctuation and CJK splitting with optional lower-casing and accent stripping."""

    def __init__(self, do_lower_case: bool = True):
        self.do_lower_case = do_lower_case

    def tokenize(self, text: str) -> List[str]:
        return [piece for word in self.split_words(text) for piece in self.split_word(word)]

    @staticmethod
    def split_words(text: str) -> List[str]:
        """Cleaned text split on whitespace, every CJK character its own word."""
        # Printable ASCII has no control, CJK or non-space whitespace character: skip the translation.
        if not (text.isascii() and text.isprintable()):
            text = text.translate(_CHAR_MAP)
        return text.split()

    def split_word(self, word: str) -> List[str]:
        """One whitespace-free word -> basic tokens (lower-cased, accents stripped, punctuation split)."""
        if self.do_lower_case:
            word = self._strip_accents(word.lower())
        pieces = self._split_punctuation(word)
        # Google re-splits on whitespace here; only pieces that lower()/NFD turned into spaces can change.
        if any(not piece.isprintable() or " " in piece for piece in pieces):
            pieces = " ".join(pieces).split()
        return pieces

    @staticmethod
    def _strip_accents(text: str) -> str:
        if text.isascii():  # ASCII has no combining marks
            return text
        return "".join(ch for ch in unicodedata.normalize("NFD", text) if unicodedata.category(ch) != "Mn")

    @staticmethod
    def _split_punctuation(word: str) -> List[str]:
        if word.isalnum():  # letters and digits only: nothing to split (the common case)
            return [word]
        pieces: List[str] = []
        current = ""
        for ch in word:
            if _is_punctuation(ch):
                if current:
                    pieces.append(current)
                pieces.append(ch)
                current = ""
            else:
                current += ch
        if current:
            pieces.append(current)
        return pieces


class WordpieceTokenizer:
    """Greedy longest-match-first WordPiece over one basic token."""

    def __init__(self, vocab: Dict[str, int], unk_token: str = "[UNK]", max_chars_per_word: int = 200):
        self.vocab = vocab
        self.unk_token = unk_token
        self.max_chars_per_word = max_chars_per_word
        # No candidate longer than the longest vocab entry can match, so the search starts there.
        self._max_piece = max((len(t) for t in vocab), default=0)

    def tokenize_word(self, word: str) -> List[str]:
        if len(word) > self.max_chars_per_word:
            return [self.unk_token]
        if word in self.vocab:  # whole-word hit: the common case, same answer as the search below
            return [word]
        pieces, start = [], 0
        while start < len(word):
            prefix = "" if start == 0 else "##"
            end = min(len(word), start + self._max_piece - len(prefix))
            while end > start:
                piece = prefix + word[start:end]
                if piece in self.vocab:
                    break
                end -= 1
            if end == start:
                return [self.unk_token]
            pieces.append(piece)
            start = end
        return pieces


class Encoding(NamedTuple):
    """Model inputs for one example, padded to max_seq_length."""

    input_ids: List[int]
    token_type_ids: List[int]
    attention_mask: List[int]


class BertTokenizer:
    """Basic + WordPiece tokenization and [CLS] A [SEP] (B [SEP]) encoding."""

    def __init__(self, vocab_file: str, do_lower_case: bool = True):
        self.vocab = load_vocab(vocab_file)
        self.vocab_fingerprint = fingerprint_of(self.vocab, vocab_file)  # src/data/vocab.py
        self.inv_vocab = {i: t for t, i in self.vocab.items()}
        for special in ("[PAD]", "[UNK]", "[CLS]", "[SEP]"):
            if special not in self.vocab:
                raise ValueError(f"{vocab_file}: special token {special} is missing; is this a BERT vocab?")
        self.basic = BasicTokenizer(do_lower_case)
        self.wordpiece = WordpieceTokenizer(self.vocab)
        # Everything after the whitespace split is a pure function of the word, and words repeat a lot.
        self._word_tokens = functools.lru_cache(maxsize=WORD_CACHE_SIZE)(self._word_tokens_uncached)

    def tokenize(self, text: str) -> List[str]:
        tokens: List[str] = []
        for word in self.basic.split_words(text):
            tokens.extend(self._word_tokens(word))
        return tokens

    def _word_tokens_uncached(self, word: str) -> Tuple[str, ...]:
        # A tuple, so that callers cannot change the cached value.
        return tuple(piece for basic in self.basic.split_word(word)
                     for piece in self.wordpiece.tokenize_word(basic))

    def convert_tokens_to_ids(self, tokens: Sequence[str]) -> List[int]:
        return [self.vocab[t] for t in tokens]

    def encode(self, text_a: str, text_b: Optional[str] = None, max_seq_length: int = 128) -> Encoding:
        """Tokens of one example as padded ids; the longer segment is truncated first (as Google BERT).

        Raises:
            ValueError: max_seq_length leaves no room for the special tokens.
        """
        return self.encode_tokens(self.tokenize(text_a), self.tokenize(text_b) if text_b is not None else None,
                                  max_seq_length)

    def encode_tokens(self, a: Sequence[str], b: Optional[Sequence[str]], max_seq_length: int) -> Encoding:
        """`encode` for already tokenized segments (the inputs are not modified)."""
        specials = 3 if b is not None else 2
        if max_seq_length < specials:
            raise ValueError(f"max_seq_length={max_seq_length} is too small: expected >= {specials} "
                             f"([CLS] and [SEP]{' x2' if b is not None else ''})")
        a, b_list = list(a), list(b) if b is not None else []
        while len(a) + len(b_list) > max_seq_length - specials:
            # Ties cut text_b, as Google's _truncate_seq_pair does.
            (a if len(a) > len(b_list) else b_list).pop()
        tokens = ["[CLS]"] + a + ["[SEP]"]
        types = [0] * len(tokens)
        if b is not None:
            tokens += b_list + ["[SEP]"]
            types += [1] * (len(b_list) + 1)
        ids = self.convert_tokens_to_ids(tokens)
        pad = max_seq_length - len(ids)
        return Encoding(ids + [self.vocab["[PAD]"]] * pad, types + [0] * pad, [1] * len(ids) + [0] * pad)
