"""BERT pre-training instances for general distillation, built the way Google BERT's create_pretraining_data.py does.

Input is either one sentence per line with a blank line between documents (`sentences`, BERT's own format and
the output of scripts/wiki_to_text.py) or WikiText raw (`wikitext`: documents start at ` = Title = ` lines,
` = = Section = = ` lines are dropped, `@-@` / `@,@` / `@.@` are unescaped, paragraphs are cut into sentences by
`src.data.wiki.split_sentences`). Each instance is

    tokens       [CLS] A [SEP] B [SEP]                     (at most max_seq_length, padded with 0)
    segment ids  0 ... 0 1 ... 1, input mask 1 on real tokens
    B            the actual next sentences, or with probability 0.5 a random span of another document

Sequences fill max_seq_length - 3 tokens, except with probability short_seq_prob (0.1) a random shorter target.
The corpus is walked dupe_factor times (default 10, as Google) with fresh random splits and masks. Masked-LM
corruption (optional: masked_lm_prob 0 gives the uncorrupted text that TinyBERT v2 used; the MindSpore model-zoo
GD data was corrupted) picks round(len * masked_lm_prob) positions, at most max_predictions_per_seq, never
[CLS]/[SEP]; each becomes [MASK] 80%, stays 10%, a random vocabulary token 10%. With whole-word masking all
pieces of a word (a token and its following ## pieces) are masked together.

Every random choice comes from one `random.Random(seed)` passed through, in the same order as Google's script
(master branch, including whole-word masking), so a seed reproduces Google's instances exactly when the
tokenizer agrees (tested against bert-tensorflow when it is installed). With masked_lm_prob 0 no masking draws
are made (Google would still mask one token per instance: its count is max(1, ...)).
"""
from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import random
import re
import time
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

from src.data.tokenization import BertTokenizer
from src.data.wiki import split_sentences

logger = logging.getLogger(__name__)

INPUT_FORMATS = ("sentences", "wikitext")
Document = List[List[int]]  # sentences of token ids

_WIKITEXT_TITLE = re.compile(r"^= [^=].* =$")
_WIKITEXT_SECTION = re.compile(r"^(= ){2,}.*( =){2,}$")
_WIKITEXT_ESCAPES = re.compile(r" @([-,.])@ ")


@dataclasses.dataclass(frozen=True)
class PretrainOptions:
    """Instance generation settings; defaults are Google BERT's create_pretraining_data.py flags."""

    max_seq_length: int = 128
    dupe_factor: int = 10
    short_seq_prob: float = 0.1
    masked_lm_prob: float = 0.15
    max_predictions_per_seq: int = 20
    whole_word_mask: bool = False

    def __post_init__(self):
        checks = [("max_seq_length", self.max_seq_length >= 5, ">= 5 ([CLS] A [SEP] B [SEP] with A, B >= 1)"),
                  ("dupe_factor", self.dupe_factor >= 1, ">= 1"),
                  ("short_seq_prob", 0.0 <= self.short_seq_prob <= 1.0, "in [0, 1]"),
                  ("masked_lm_prob", 0.0 <= self.masked_lm_prob < 1.0, "in [0, 1)"),
                  ("max_predictions_per_seq", self.max_predictions_per_seq >= 1, ">= 1")]
        for name, ok, allowed in checks:
            if not ok:
                raise ValueError(f"pretraining options: --{name} ({name}): got {getattr(self, name)!r}; expected "
                                 f"{allowed}")

    @property
    def masking(self) -> bool:
        return self.masked_lm_prob > 0


class Instance(NamedTuple):
    """One training example before padding; ids are vocabulary ids, positions index into input_ids."""

    input_ids: List[int]
    segment_ids: List[int]
    is_random_next: bool
    masked_lm_positions: List[int]
    masked_lm_ids: List[int]


class VocabInfo(NamedTuple):
    """The vocabulary facts instance generation needs, without token strings."""

    cls_id: int
    sep_id: int
    mask_id: int
    size: int
    continuation_ids: frozenset  # ids of "##" pieces, for whole-word masking

    @classmethod
    def from_vocab(cls, vocab: Dict[str, int]) -> "VocabInfo":
        if "[MASK]" not in vocab:
            raise ValueError("vocabulary has no [MASK] token; expected a BERT vocab.txt")
        return cls(vocab["[CLS]"], vocab["[SEP]"], vocab["[MASK]"], len(vocab),
                   frozenset(i for t, i in vocab.items() if t.startswith("##")))


# ----------------------------------------------------------------------------------------------------------------
# Reading documents


def _read_lines(path: str) -> Iterator[Tuple[int, str]]:
    """(line number, stripped line) of a UTF-8 text file; CRLF and LF both work.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a line is not valid UTF-8 (names the file and line).
    """
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                yield number, raw.decode("utf-8").strip()
            except UnicodeDecodeError as err:
                raise ValueError(f"{path}:{number}: not UTF-8 text ({err.reason} at byte {err.start}); expected "
                                 f"UTF-8, one sentence per line") from None


def read_sentence_documents(path: str) -> List[List[str]]:
    """Documents of a one-sentence-per-line file; blank lines separate documents (BERT's input format)."""
    documents: List[List[str]] = [[]]
    for _, line in _read_lines(path):
        if not line:
            documents.append([])
        else:
            documents[-1].append(line)
    return [d for d in documents if d]


def unescape_wikitext(line: str) -> str:
    """Undo WikiText's number/hyphen escapes: '1 @,@ 000' -> '1,000', 'well @-@ known' -> 'well-known'."""
    return _WIKITEXT_ESCAPES.sub(r"\1", line)


def read_wikitext_documents(path: str) -> List[List[str]]:
    """Documents of a WikiText raw file: split at ` = Title = ` lines, paragraphs split into sentences.

    The title line itself and ` = = Section = = ` headings are not text and are dropped.
    """
    documents: List[List[str]] = []
    for _, line in _read_lines(path):
        if not line or _WIKITEXT_SECTION.match(line):
            continue
        if _WIKITEXT_TITLE.match(line):
            documents.append([])
            continue
        if not documents:  # text before the first title still forms a document
            documents.append([])
        documents[-1].extend(split_sentences(unescape_wikitext(line)))
    return [d for d in documents if d]


def read_documents(paths: Sequence[str], input_format: str) -> List[List[str]]:
    """Documents (lists of sentences) of all input files, in order."""
    if input_format not in INPUT_FORMATS:
        raise ValueError(f"input_format: got {input_format!r}; expected one of {list(INPUT_FORMATS)}")
    reader = read_sentence_documents if input_format == "sentences" else read_wikitext_documents
    documents: List[List[str]] = []
    for path in paths:
        found = reader(path)
        logger.info("%s: %d documents, %d sentences (%s format)", path, len(found),
                    sum(map(len, found)), input_format)
        documents.extend(found)
    return documents


# ----------------------------------------------------------------------------------------------------------------
# Tokenizing (optionally in worker processes; order is preserved, so results do not depend on the worker count)

_WORKER_TOKENIZER: Optional[BertTokenizer] = None


def _init_worker(tokenizer: BertTokenizer) -> None:
    global _WORKER_TOKENIZER  # pylint: disable=global-statement
    _WORKER_TOKENIZER = tokenizer


def _tokenize_ids(sentence: str) -> List[int]:
    tok = _WORKER_TOKENIZER
    return tok.convert_tokens_to_ids(tok.tokenize(sentence))


def tokenize_documents(documents: Sequence[Sequence[str]], tokenizer: BertTokenizer,
                       num_workers: int = 1) -> List[Document]:
    """Token ids of every sentence; sentences without tokens and then empty documents are dropped (as Google)."""
    flat = [s for doc in documents for s in doc]
    if num_workers > 1 and len(flat) > 1000:
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(num_workers, initializer=_init_worker, initargs=(tokenizer,)) as pool:
            ids = pool.map(_tokenize_ids, flat, chunksize=max(1, len(flat) // (num_workers * 8)))
    else:
        _init_worker(tokenizer)
        ids = [_tokenize_ids(s) for s in flat]
    out: List[Document] = []
    pos = 0
    for doc in documents:
        sentences = [x for x in ids[pos:pos + len(doc)] if x]
        pos += len(doc)
        if sentences:
            out.append(sentences)
    empty = sum(1 for x in ids if not x)
    if empty or len(out) < len(documents):
        logger.info("dropped %d sentence(s) without any token and %d document(s) left empty (as Google)",
                    empty, len(documents) - len(out))
    return out


# ----------------------------------------------------------------------------------------------------------------
# Instances (same random draws, in the same order, as Google's create_pretraining_data.py)


def truncate_seq_pair(tokens_a: List[int], tokens_b: List[int], max_num_tokens: int, rng: random.Random) -> None:
    """Trim the longer segment, from the front or the back at random, until both fit (in place)."""
    while len(tokens_a) + len(tokens_b) > max_num_tokens:
        trunc = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        if rng.random() < 0.5:
            del trunc[0]
        else:
            trunc.pop()


def create_masked_lm_predictions(ids: List[int], opts: PretrainOptions, vocab: VocabInfo,
                                 rng: random.Random) -> Tuple[List[int], List[int], List[int]]:
    """Masked-LM corruption of one instance: (corrupted ids, sorted positions, original ids at them)."""
    cand_indexes: List[List[int]] = []
    for i, token in enumerate(ids):
        if token in (vocab.cls_id, vocab.sep_id):
            continue
        if opts.whole_word_mask and cand_indexes and token in vocab.continuation_ids:
            cand_indexes[-1].append(i)
        else:
            cand_indexes.append([i])
    rng.shuffle(cand_indexes)
    output = list(ids)
    num_to_predict = min(opts.max_predictions_per_seq, max(1, int(round(len(ids) * opts.masked_lm_prob))))
    masked: List[Tuple[int, int]] = []
    for index_set in cand_indexes:
        if len(masked) >= num_to_predict:
            break
        if len(masked) + len(index_set) > num_to_predict:  # a whole word that does not fit is skipped
            continue
        # Sets never overlap here; Google's covered-index check is therefore omitted (it draws no randomness).
        for index in index_set:
            if rng.random() < 0.8:
                output[index] = vocab.mask_id
            elif rng.random() < 0.5:
                pass  # keep the original token
            else:
                output[index] = rng.randint(0, vocab.size - 1)
            masked.append((index, ids[index]))
    masked.sort()
    return output, [p for p, _ in masked], [t for _, t in masked]


def _pick_random_next(all_documents: Sequence[Document], document_index: int, target_b_length: int,
                      rng: random.Random) -> List[int]:
    """Segment B taken from a random other document (Google tries 10 times to avoid the current one)."""
    for _ in range(10):
        random_document_index = rng.randint(0, len(all_documents) - 1)
        if random_document_index != document_index:
            break
    random_document = all_documents[random_document_index]
    tokens_b: List[int] = []
    for j in range(rng.randint(0, len(random_document) - 1), len(random_document)):
        tokens_b.extend(random_document[j])
        if len(tokens_b) >= target_b_length:
            break
    return tokens_b


def _build_instance(tokens_a: List[int], tokens_b: List[int], is_random_next: bool, opts: PretrainOptions,
                    vocab: VocabInfo, rng: random.Random) -> Instance:
    """[CLS] A [SEP] B [SEP] with segment ids, then masked-LM corruption when enabled."""
    truncate_seq_pair(tokens_a, tokens_b, opts.max_seq_length - 3, rng)
    ids = [vocab.cls_id] + tokens_a + [vocab.sep_id] + tokens_b + [vocab.sep_id]
    segment_ids = [0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1)
    if not opts.masking:
        return Instance(ids, segment_ids, is_random_next, [], [])
    ids, positions, labels = create_masked_lm_predictions(ids, opts, vocab, rng)
    return Instance(ids, segment_ids, is_random_next, positions, labels)


def create_instances_from_document(all_documents: Sequence[Document], document_index: int,
                                   opts: PretrainOptions, vocab: VocabInfo, rng: random.Random) -> List[Instance]:
    """Instances of one document: chunks of whole sentences split into A and B (see the module docstring)."""
    document = all_documents[document_index]
    max_num_tokens = opts.max_seq_length - 3
    target_seq_length = max_num_tokens
    if rng.random() < opts.short_seq_prob:
        target_seq_length = rng.randint(2, max_num_tokens)
    instances: List[Instance] = []
    chunk: List[List[int]] = []
    length = 0
    i = 0
    while i < len(document):
        chunk.append(document[i])
        length += len(document[i])
        if i == len(document) - 1 or length >= target_seq_length:
            a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
            tokens_a = [t for sentence in chunk[:a_end] for t in sentence]
            if len(chunk) == 1 or rng.random() < 0.5:
                tokens_b = _pick_random_next(all_documents, document_index, target_seq_length - len(tokens_a), rng)
                i -= len(chunk) - a_end  # the unused sentences are put back for the next chunk
                is_random_next = True
            else:
                tokens_b = [t for sentence in chunk[a_end:] for t in sentence]
                is_random_next = False
            instances.append(_build_instance(tokens_a, tokens_b, is_random_next, opts, vocab, rng))
            chunk, length = [], 0
        i += 1
    return instances


def create_training_instances(documents: List[Document], opts: PretrainOptions, vocab: VocabInfo,
                              rng: random.Random, progress: Optional[bool] = None) -> List[Instance]:
    """All instances of a tokenized corpus: shuffle documents, dupe_factor passes, shuffle instances (as Google).

    `documents` is shuffled in place. The progress bar counts documents and shows instances/s.
    """
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel

    if not documents:
        raise ValueError("no documents with any tokens in the input; expected text with at least one sentence")
    if len(documents) == 1:
        logger.warning("only one document: every 'random next' segment B comes from the same document")
    rng.shuffle(documents)
    instances: List[Instance] = []
    start = time.perf_counter()
    with tqdm(total=opts.dupe_factor * len(documents), unit=" docs", desc="instances",
              disable=not progress if progress is not None else None) as bar:
        for _ in range(opts.dupe_factor):
            for document_index in range(len(documents)):
                instances.extend(create_instances_from_document(documents, document_index, opts, vocab, rng))
                bar.update()
                if document_index % 256 == 0:
                    bar.set_postfix(instances=len(instances),
                                    per_s=f"{len(instances) / max(time.perf_counter() - start, 1e-9):.0f}")
    rng.shuffle(instances)
    return instances


# ----------------------------------------------------------------------------------------------------------------
# Records


def record_columns(opts: PretrainOptions) -> Dict[str, Tuple[str, Tuple[int, ...]]]:
    """Output columns: input_ids, input_mask, segment_ids, plus the masked-LM / NSP columns when masking.

    masked_lm_weights are 1 on real predictions and 0 on padding; they are stored as int32 because the record
    writer stores integers only (the loader casts them to float).
    """
    seq, pred = (opts.max_seq_length,), (opts.max_predictions_per_seq,)
    columns = {"input_ids": ("int32", seq), "input_mask": ("int32", seq), "segment_ids": ("int32", seq)}
    if opts.masking:
        columns.update(masked_lm_positions=("int32", pred), masked_lm_ids=("int32", pred),
                       masked_lm_weights=("int32", pred), next_sentence_labels=("int32", (1,)))
    return columns


def instance_to_row(instance: Instance, opts: PretrainOptions) -> Dict[str, List[int]]:
    """One padded record row (padding id 0, as Google); next_sentence_labels is 1 for a random next."""
    n = len(instance.input_ids)
    pad = opts.max_seq_length - n
    row = {"input_ids": instance.input_ids + [0] * pad, "input_mask": [1] * n + [0] * pad,
           "segment_ids": instance.segment_ids + [0] * pad}
    if opts.masking:
        k = len(instance.masked_lm_positions)
        pred_pad = [0] * (opts.max_predictions_per_seq - k)
        row.update(masked_lm_positions=instance.masked_lm_positions + pred_pad,
                   masked_lm_ids=instance.masked_lm_ids + pred_pad, masked_lm_weights=[1] * k + pred_pad,
                   next_sentence_labels=[int(instance.is_random_next)])
    return row


class _Rows:
    """Instances as record rows, converted lazily; has a length so the writer's progress bar has a total."""

    def __init__(self, instances: Sequence[Instance], opts: PretrainOptions):
        self.instances, self.opts = instances, opts

    def __len__(self) -> int:
        return len(self.instances)

    def __iter__(self) -> Iterator[Dict[str, List[int]]]:
        return (instance_to_row(inst, self.opts) for inst in self.instances)


def create_pretraining_records(input_files: Sequence[str], output: str, tokenizer: BertTokenizer,
                               opts: PretrainOptions, input_format: str = "sentences", seed: int = 12345,
                               fmt: str = "mindrecord", num_shards: int = 1,
                               num_workers: int = 1) -> Tuple[List[str], int]:
    """Read, tokenize, build instances and write them with src.data.records.write_records; returns (files, count)."""
    from src.data.records import write_records  # pylint: disable=import-outside-toplevel

    start = time.perf_counter()
    documents = tokenize_documents(read_documents(input_files, input_format), tokenizer, num_workers)
    logger.info("tokenized %d documents in %.1fs", len(documents), time.perf_counter() - start)
    if not documents:
        raise ValueError(f"{', '.join(input_files)}: no sentence with any token (empty input?); expected "
                         f"{input_format} text with at least one sentence")
    instances = create_training_instances(documents, opts, VocabInfo.from_vocab(tokenizer.vocab),
                                          random.Random(seed))
    elapsed = time.perf_counter() - start
    logger.info("%d instances in %.1fs (%.0f instances/s, reading and tokenizing included)",
                len(instances), elapsed, len(instances) / max(elapsed, 1e-9))
    files = write_records(_Rows(instances, opts), output, record_columns(opts), fmt=fmt, num_shards=num_shards,
                          vocab=tokenizer.vocab_fingerprint)
    return files, len(instances)
