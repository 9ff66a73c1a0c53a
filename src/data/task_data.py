"""Task data (GLUE, CLUE, generic TSV) -> ``input_ids, input_mask, segment_ids, label_ids`` records.

Supported tasks (``TASKS``) and their input formats:

- ``sst2``: GLUE SST-2 TSV with header ``sentence<TAB>label``; labels ``0``, ``1``.
- ``mnli``: GLUE MNLI TSV (train / dev_matched / dev_mismatched), columns found by header name
  ``sentence1``, ``sentence2``, ``gold_label``. Label order pinned to ``MNLI_LABELS`` =
  [contradiction, entailment, neutral] (id 0, 1, 2), because teachers fine-tuned elsewhere use other orders.
- ``qnli``: GLUE QNLI TSV ``index question sentence label``; labels [entailment, not_entailment].
- ``cola``: GLUE CoLA train / dev TSV, no header, 4 columns ``source label original_label sentence``;
  labels ``0`` (unacceptable), ``1`` (acceptable).
- ``mrpc``: GLUE MRPC TSV, columns found by header name ``Quality``, ``#1 String``, ``#2 String``; labels
  ``0``, ``1`` (Quality: 1 = paraphrase).
- ``qqp``: GLUE QQP TSV, columns ``question1``, ``question2``, ``is_duplicate`` found by header name;
  labels ``0``, ``1``.
- ``stsb``: GLUE STS-B TSV, columns ``sentence1``, ``sentence2``, ``score`` found by header name; a
  regression task: the label is the similarity score, a float from 0 to 5, stored as float32.
- ``tsv``: any single-sentence or pair TSV; columns given by 0-based index, optional header.
- ``label_text``: ``label<TAB>text`` lines, no header.
- ``tnews``: CLUE TNEWS JSON lines (``label`` 100..116 with gaps, ``sentence``); ids mapped to 0..14 in
  sorted order of ``TNEWS_LABEL_IDS``.
- ``cluener``: CLUENER JSON lines ``{"text", "label": {type: {span: [[start, end_inclusive], ...]}}}``;
  one token per character; character tags BIOES (default) or BMES derived from the spans; the tag list is
  computed from the entity types in the data (pass the train split's ``labels.json`` when converting dev).

Output shapes per row: ``input_ids, input_mask, segment_ids`` [S] int32; ``label_ids`` [] int32 for
classification, [] float32 for regression (STS-B), [S] int32 for CLUENER with ``IGNORE_INDEX`` (-1) on [CLS],
[SEP] and padding. A ``labels.json`` label map is written next to the records; a regression task's map names
its one output, ``{"task": "stsb", "type": "regression", "labels": ["score"], "num_labels": 1, ...}``.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Type

from src.data.records import write_records
from src.metrics import IGNORE_INDEX
from src.infra.files import atomic_output
from src.data.tokenization import BertTokenizer

logger = logging.getLogger(__name__)

MNLI_LABELS = ["contradiction", "entailment", "neutral"]
QNLI_LABELS = ["entailment", "not_entailment"]
SST2_LABELS = ["0", "1"]
BINARY_LABELS = ["0", "1"]  # CoLA (1 = acceptable), MRPC (1 = paraphrase), QQP (1 = duplicate)
# Regression tasks: their one output's name (labels.json "labels") and the range of their scores.
REGRESSION_TASKS = {"stsb": ("score", 0.0, 5.0)}
PAIR_TASKS = ("mnli", "qnli", "mrpc", "qqp", "stsb")
TNEWS_LABEL_IDS = [100, 101, 102, 103, 104, 106, 107, 108, 109, 110, 112, 113, 114, 115, 116]
TAG_PREFIXES = {"bioes": ("B", "I", "E", "S"), "bmes": ("B", "M", "E", "S")}
TASKS = ("sst2", "mnli", "qnli", "cola", "mrpc", "qqp", "stsb", "tsv", "label_text", "tnews", "cluener")
LABELS_FILE = "labels.json"


class BadRowError(ValueError):
    """A malformed input row; the message starts with ``file:line:``."""


@dataclass
class Example:
    """One parsed row: texts and a raw label (str), or for NER characters and per-character tags."""

    where: str                      # "file:line"
    text_a: str = ""
    text_b: Optional[str] = None
    label: Optional[str] = None
    tags: Optional[List[str]] = None  # NER: one tag per character of text_a
    score: Optional[float] = None     # regression: the label as a number


@dataclass
class Summary:
    """What a conversion did; printed by the CLI."""

    rows_read: int = 0
    rows_written: int = 0
    skipped: List[str] = field(default_factory=list)   # "file:line: reason" of every skipped row
    truncated: int = 0
    files: List[str] = field(default_factory=list)
    labels_file: str = ""


# ---------------------------------------------------------------- readers: yield Examples or raise BadRowError
def sample_tsv_rows(src: str, dst: str, rows: int, seed: int) -> str:
    """Write to `dst` the header of TSV `src` plus `rows` of its lines drawn without replacement (numpy seed
    `seed`), kept in file order; the file appears atomically. Returns `dst`."""
    import numpy as np  # pylint: disable=import-outside-toplevel

    with open(src, encoding="utf-8") as f:
        lines = f.read().splitlines()
    header, body = lines[0], lines[1:]
    if not 0 < rows <= len(body):
        raise ValueError(f"{src}: asked for {rows} rows; it has {len(body)} (after the header)")
    picked = np.random.default_rng(seed).choice(len(body), size=rows, replace=False)
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    with atomic_output(dst) as f:
        f.write("\n".join([header] + [body[i] for i in sorted(picked)]) + "\n")
    return dst


def read_tsv_lines(path: str, error: Optional[Type[Exception]] = None,
                   yield_errors: bool = False) -> Iterator[Tuple[int, Any]]:
    """(line number, cells) of every line of a TSV; the one TSV reader of the project (task converters and
    data augmentation).

    Cells are split at tabs and nothing else: quotes are plain characters (GLUE TSVs have unmatched quotes
    inside sentences), there is no field size limit, and a line ends only at ``\n`` (``\r\n`` also works;
    the line end is removed). A UTF-8 byte order mark on line 1 is dropped. An empty line is one empty cell.

    A line that is not UTF-8 raises ``error`` (default BadRowError) as ``file:line: reason``, or with
    ``yield_errors`` is yielded as ``(line number, that exception)`` so the caller can skip and count it.
    """
    error = error or BadRowError
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                bad = error(f"{path}:{lineno}: not UTF-8 text ({err.reason} at byte {err.start}); "
                            f"expected a UTF-8 TSV")
                if not yield_errors:
                    raise bad from None
                yield lineno, bad
                continue
            if lineno == 1 and line.startswith("\ufeff"):
                line = line[1:]
            yield lineno, line.rstrip("\r\n").split("\t")


def _header_tsv(path: str, names: Sequence[str]) -> Iterator[Any]:
    """Rows of a TSV with a header, as (where, {name: value}); columns located by header name."""
    lines = read_tsv_lines(path, yield_errors=True)
    _, header = next(lines, (1, []))
    if isinstance(header, BadRowError):
        raise header
    missing = [n for n in names if n not in header]
    if missing:
        raise BadRowError(f"{path}:1: header {header} lacks column(s) {missing}")
    for lineno, fields in lines:
        where = f"{path}:{lineno}"
        if isinstance(fields, BadRowError):
            yield fields
            continue
        if len(fields) != len(header):
            yield BadRowError(f"{where}: {len(fields)} columns; expected {len(header)} (header {header})")
            continue
        yield where, {n: fields[header.index(n)] for n in names}


def read_sst2(path: str, **_) -> Iterator[Any]:
    for item in _header_tsv(path, ["sentence", "label"]):
        yield item if isinstance(item, BadRowError) else Example(item[0], item[1]["sentence"], None,
                                                                  item[1]["label"])


def read_mnli(path: str, **_) -> Iterator[Any]:
    for item in _header_tsv(path, ["sentence1", "sentence2", "gold_label"]):
        yield item if isinstance(item, BadRowError) else Example(
            item[0], item[1]["sentence1"], item[1]["sentence2"], item[1]["gold_label"])


def read_qnli(path: str, **_) -> Iterator[Any]:
    for item in _header_tsv(path, ["question", "sentence", "label"]):
        yield item if isinstance(item, BadRowError) else Example(
            item[0], item[1]["question"], item[1]["sentence"], item[1]["label"])


def read_cola(path: str, **_) -> Iterator[Any]:
    """GLUE CoLA train / dev: no header, ``source<TAB>label<TAB>original_label<TAB>sentence``."""
    for lineno, fields in read_tsv_lines(path, yield_errors=True):
        if isinstance(fields, BadRowError):
            yield fields
        elif len(fields) != 4:
            yield BadRowError(f"{path}:{lineno}: {len(fields)} columns; expected 4 (CoLA: source<TAB>label<TAB>"
                              f"original_label<TAB>sentence, no header)")
        else:
            yield Example(f"{path}:{lineno}", fields[3], None, fields[1])


def read_mrpc(path: str, **_) -> Iterator[Any]:
    for item in _header_tsv(path, ["Quality", "#1 String", "#2 String"]):
        yield item if isinstance(item, BadRowError) else Example(
            item[0], item[1]["#1 String"], item[1]["#2 String"], item[1]["Quality"])


def read_qqp(path: str, **_) -> Iterator[Any]:
    for item in _header_tsv(path, ["question1", "question2", "is_duplicate"]):
        yield item if isinstance(item, BadRowError) else Example(
            item[0], item[1]["question1"], item[1]["question2"], item[1]["is_duplicate"])


def parse_score(text: str, where: str, task: str) -> float:
    """The float label of a regression row, checked to be a finite number in the task's range."""
    name, low, high = REGRESSION_TASKS[task]
    try:
        value = float(text)
    except ValueError:
        raise BadRowError(f"{where}: {name} {text!r} is not a number; expected a {task} {name} from {low:g} to "
                          f"{high:g}") from None
    if not low <= value <= high:  # also refuses nan
        raise BadRowError(f"{where}: {name} {text!r} is outside [{low:g}, {high:g}]; expected a {task} {name} "
                          f"from {low:g} to {high:g}")
    return value


def read_stsb(path: str, **_) -> Iterator[Any]:
    for item in _header_tsv(path, ["sentence1", "sentence2", "score"]):
        if isinstance(item, BadRowError):
            yield item
            continue
        where, row = item
        try:
            score = parse_score(row["score"], where, "stsb")
        except BadRowError as err:
            yield err
            continue
        yield Example(where, row["sentence1"], row["sentence2"], row["score"], score=score)


def read_tsv(path: str, text_a_col: int = 0, text_b_col: Optional[int] = None, label_col: int = 1,
             has_header: bool = False, **_) -> Iterator[Any]:
    """Any TSV with fixed column indices (0-based); every row must have as many columns as the first."""
    expected = None
    for lineno, fields in read_tsv_lines(path, yield_errors=True):
        if isinstance(fields, BadRowError):
            if has_header and lineno == 1:
                raise fields
            yield fields
            continue
        if has_header and lineno == 1:
            expected = len(fields)
            continue
        expected = expected or len(fields)
        needed = max(c for c in (text_a_col, text_b_col, label_col) if c is not None) + 1
        if len(fields) != expected or len(fields) < needed:
            yield BadRowError(f"{path}:{lineno}: {len(fields)} columns; expected {max(expected, needed)}")
            continue
        yield Example(f"{path}:{lineno}", fields[text_a_col],
                      fields[text_b_col] if text_b_col is not None else None, fields[label_col])


def read_label_text(path: str, **_) -> Iterator[Any]:
    for lineno, fields in read_tsv_lines(path, yield_errors=True):
        if isinstance(fields, BadRowError):
            yield fields
            continue
        if len(fields) != 2:
            yield BadRowError(f"{path}:{lineno}: {len(fields)} columns; expected 2 (label<TAB>text)")
            continue
        yield Example(f"{path}:{lineno}", fields[1], None, fields[0])


def _json_lines(path: str) -> Iterator[Any]:
    """(where, object) per non-blank line, or a BadRowError for invalid JSON / a non-object."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as err:
                yield BadRowError(f"{where}: not UTF-8 text ({err.reason} at byte {err.start}); "
                                  f"expected UTF-8 JSON lines")
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                yield BadRowError(f"{where}: invalid JSON: {err.msg} (column {err.colno})")
                continue
            yield (where, obj) if isinstance(obj, dict) else BadRowError(f"{where}: expected a JSON object")


def read_tnews(path: str, **_) -> Iterator[Any]:
    for item in _json_lines(path):
        if isinstance(item, BadRowError):
            yield item
        elif "label" not in item[1] or not isinstance(item[1].get("sentence"), str):
            yield BadRowError(f"{item[0]}: expected keys 'label' and 'sentence' (a string); "
                              f"got {sorted(item[1])}")
        else:
            yield Example(item[0], item[1]["sentence"], None, str(item[1]["label"]))


def span_tags(text: str, spans: Dict[str, Any], where: str, scheme: str = "bioes") -> List[str]:
    """Character tags for ``text`` from CLUENER spans ``{type: {span_text: [[start, end_inclusive], ...]}}``.

    Raises:
        BadRowError: malformed spans, a span outside the text, text not matching, or overlapping spans.
    """
    begin, inside, end, single = TAG_PREFIXES[scheme]
    tags = ["O"] * len(text)
    if not isinstance(spans, dict):
        raise BadRowError(f"{where}: 'label' must be an object {{type: {{span: [[start, end]]}}}}")
    for etype, entities in spans.items():
        if not isinstance(entities, dict):
            raise BadRowError(f"{where}: label.{etype} must be an object {{span_text: [[start, end]]}}")
        for span_text, positions in entities.items():
            for pos in positions if isinstance(positions, list) else [positions]:
                if not (isinstance(pos, list) and len(pos) == 2 and all(isinstance(p, int) for p in pos)):
                    raise BadRowError(f"{where}: label.{etype}.{span_text}: {pos!r} is not [start, end]")
                start, stop = pos
                if not 0 <= start <= stop < len(text):
                    raise BadRowError(f"{where}: label.{etype}.{span_text}: span [{start}, {stop}] is outside "
                                      f"the text (length {len(text)}; ends are inclusive)")
                if text[start:stop + 1] != span_text:
                    raise BadRowError(f"{where}: label.{etype}: span [{start}, {stop}] is "
                                      f"{text[start:stop + 1]!r} in the text; expected {span_text!r}")
                if any(t != "O" for t in tags[start:stop + 1]):
                    raise BadRowError(f"{where}: label.{etype}.{span_text}: span [{start}, {stop}] overlaps "
                                      f"another entity")
                if start == stop:
                    tags[start] = f"{single}-{etype}"
                else:
                    tags[start:stop + 1] = ([f"{begin}-{etype}"] + [f"{inside}-{etype}"] * (stop - start - 1)
                                            + [f"{end}-{etype}"])
    return tags


def read_cluener(path: str, tag_scheme: str = "bioes", **_) -> Iterator[Any]:
    for item in _json_lines(path):
        if isinstance(item, BadRowError):
            yield item
            continue
        where, obj = item
        if not isinstance(obj.get("text"), str):
            yield BadRowError(f"{where}: expected key 'text' (a string); got keys {sorted(obj)}")
            continue
        try:
            tags = span_tags(obj["text"], obj.get("label", {}), where, tag_scheme)
        except BadRowError as err:
            yield err
            continue
        yield Example(where, obj["text"], None, None, tags)


READERS = {"sst2": read_sst2, "mnli": read_mnli, "qnli": read_qnli, "cola": read_cola, "mrpc": read_mrpc,
           "qqp": read_qqp, "stsb": read_stsb, "tsv": read_tsv, "label_text": read_label_text, "tnews": read_tnews,
           "cluener": read_cluener}


# ---------------------------------------------------------------- label maps
def fixed_labels(task: str) -> Optional[List[str]]:
    """The pinned label order of a task (a regression task's one output name), or None when labels come from
    the data."""
    if task in REGRESSION_TASKS:
        return [REGRESSION_TASKS[task][0]]
    return {"sst2": SST2_LABELS, "mnli": MNLI_LABELS, "qnli": QNLI_LABELS, "cola": BINARY_LABELS,
            "mrpc": BINARY_LABELS, "qqp": BINARY_LABELS, "tnews": [str(i) for i in TNEWS_LABEL_IDS]}.get(task)


def labels_from_data(task: str, examples: Sequence[Example], tag_scheme: str = "bioes") -> List[str]:
    """Sorted labels seen in the data; for NER "O" then every prefix of every entity type seen."""
    if task == "cluener":
        types = sorted({t.split("-", 1)[1] for ex in examples for t in ex.tags if t != "O"})
        return ["O"] + [f"{p}-{t}" for t in types for p in TAG_PREFIXES[tag_scheme]]
    return sorted({ex.label for ex in examples})


def load_label_map(path: str) -> List[str]:
    """The ``labels`` list of a labels.json written by a previous conversion (e.g. of the train split)."""
    with open(path, encoding="utf-8") as f:
        try:
            content = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{err.lineno}: invalid JSON: {err.msg}; expected a labels.json "
                             f"written by the converter") from None
    if not isinstance(content, dict) or not isinstance(content.get("labels"), list):
        raise ValueError(f"{path}: key 'labels' missing or not a list")
    return [str(x) for x in content["labels"]]


def check_label_map(directory: str, labels: List[str]) -> str:
    """The labels.json path in ``directory``; raises if it already holds a different label list."""
    path = os.path.join(directory, LABELS_FILE)
    if os.path.exists(path) and load_label_map(path) != labels:
        raise ValueError(f"{path} already holds a different label list {load_label_map(path)}; expected "
                         f"{labels}. Convert the train split first and pass --label_map {path} for the others")
    return path


def write_label_map(directory: str, task: str, labels: List[str], tag_scheme: Optional[str]) -> str:
    """Write labels.json; refuses to overwrite a different map (e.g. dev computed apart from train)."""
    content: Dict[str, Any] = {"task": task, "labels": labels, "label_to_id": {l: i for i, l in enumerate(labels)},
                               "num_labels": len(labels)}
    if task in REGRESSION_TASKS:  # no classes: the one output's name, and the range of the float labels
        low, high = REGRESSION_TASKS[task][1:]
        content = {"task": task, "type": "regression", "labels": labels, "num_labels": 1, "range": [low, high],
                   "note": f"label_ids: the {labels[0]} as written, float32 from {low:g} to {high:g}"}
    if task == "cluener":
        content.update(tag_scheme=tag_scheme, ignore_index=IGNORE_INDEX)
    if task == "mnli":
        content["note"] = "label order pinned: contradiction=0, entailment=1, neutral=2"
    path = check_label_map(directory, labels)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(content, f, ensure_ascii=False, indent=2)
        f.write("\n")
    return path


# ---------------------------------------------------------------- encoding
def encode_pair(tokenizer: BertTokenizer, text_a: str, text_b: Optional[str],
                seq_length: int) -> Tuple[Dict[str, List[int]], bool]:
    """[CLS] A [SEP] (B [SEP]) padded to S, as BertTokenizer.encode. Returns (row, truncated)."""
    a = tokenizer.tokenize(text_a)
    b = tokenizer.tokenize(text_b) if text_b is not None else None
    truncated = len(a) + len(b or ()) > seq_length - (3 if b is not None else 2)
    enc = tokenizer.encode_tokens(a, b, seq_length)
    return {"input_ids": enc.input_ids, "input_mask": enc.attention_mask, "segment_ids": enc.token_type_ids}, truncated


def char_token_id(tokenizer: BertTokenizer, ch: str) -> int:
    """One vocab id per character (keeps NER tags aligned): as is, else lower-cased, else [UNK]."""
    vocab = tokenizer.vocab
    return vocab.get(ch, vocab.get(ch.lower(), vocab["[UNK]"]))


def encode_chars(tokenizer: BertTokenizer, text: str, tag_ids: List[int],
                 seq_length: int) -> Tuple[Dict[str, List[int]], bool]:
    """NER row: one token per character, label_ids [S] with IGNORE_INDEX on [CLS], [SEP] and padding."""
    keep = seq_length - 2
    truncated = len(text) > keep
    chars, tag_ids = text[:keep], tag_ids[:keep]
    ids = [tokenizer.vocab["[CLS]"]] + [char_token_id(tokenizer, c) for c in chars] + [tokenizer.vocab["[SEP]"]]
    pad = seq_length - len(ids)
    return {"input_ids": ids + [tokenizer.vocab["[PAD]"]] * pad, "input_mask": [1] * len(ids) + [0] * pad,
            "segment_ids": [0] * seq_length,
            "label_ids": [IGNORE_INDEX] + tag_ids + [IGNORE_INDEX] * (pad + 1)}, truncated


def task_columns(task: str, seq_length: int) -> Dict[str, Tuple[str, Tuple[int, ...]]]:
    """write_records column spec: three [S] int32 columns plus label_ids ([S] for NER, a scalar otherwise:
    float32 for regression, int32 for classification)."""
    seq = ("int32", (seq_length,))
    label = seq if task == "cluener" else ("float32", ()) if task in REGRESSION_TASKS else ("int32", ())
    return {"input_ids": seq, "input_mask": seq, "segment_ids": seq, "label_ids": label}


# ---------------------------------------------------------------- conversion
def parse_examples(task: str, path: str, skip_bad_rows: bool, summary: Summary, **reader_args) -> List[Example]:
    """All good examples of ``path``; bad rows raise, or are counted in ``summary.skipped``."""
    if task not in READERS:
        raise ValueError(f"task {task!r}; expected one of {list(TASKS)}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"input file {path!r} does not exist")
    examples = []
    for item in READERS[task](path, **reader_args):
        summary.rows_read += 1
        if not isinstance(item, BadRowError):
            item = _check_text(item)
        if isinstance(item, BadRowError):
            if not skip_bad_rows:
                raise item
            summary.skipped.append(str(item))
            logger.warning("skipped %s", item)
        else:
            examples.append(item)
    return examples


def _check_text(example: Example) -> Any:
    """The example, or a BadRowError when a text it needs is empty or only white space (it would become an
    example of [CLS] [SEP] alone)."""
    for name, text in (("text", example.text_a), ("second text", example.text_b)):
        if text is not None and not text.strip():
            return BadRowError(f"{example.where}: the {name} is empty; expected words to classify")
    return example


MIN_SEQ_LENGTH = {"single": 3, "pair": 5}  # [CLS] a [SEP] and [CLS] a [SEP] b [SEP], one token each


def check_seq_length(task: str, seq_length: int, pair: bool) -> None:
    """The sequence length must hold [CLS], [SEP] and at least one token of every text."""
    need = MIN_SEQ_LENGTH["pair" if pair else "single"]
    if not isinstance(seq_length, int) or seq_length < need:
        raise ValueError(f"--max_seq_length (seq_length): got {seq_length!r}; {task} needs at least {need} "
                         f"([CLS], {'[SEP] after each text' if pair else '[SEP]'} and one token per text)")


def _check_labels(examples: List[Example], labels: List[str], skip_bad_rows: bool,
                  summary: Summary) -> List[Example]:
    """Drop (counted) or raise on examples whose label or tag is not in ``labels``."""
    known, good = set(labels), []
    for ex in examples:
        unknown = [t for t in (ex.tags if ex.tags is not None else [ex.label]) if t not in known]
        if not unknown:
            good.append(ex)
            continue
        err = BadRowError(f"{ex.where}: unknown label {unknown[0]!r}; expected one of {labels}")
        if not skip_bad_rows:
            raise err
        summary.skipped.append(str(err))
        logger.warning("skipped %s", err)
    return good


def _check_regression_map(task: str, labels: List[str], label_map: Optional[str]) -> None:
    """A --label_map given for a regression task must be the task's own (one output named as fixed_labels)."""
    if labels != fixed_labels(task):
        raise ValueError(f"--label_map {label_map}: labels {labels}; {task} is a regression task whose labels.json "
                         f"lists its one output {fixed_labels(task)} (omit --label_map for {task})")


def _rows(task: str, examples: List[Example], tokenizer: BertTokenizer, labels: List[str],
          seq_length: int, summary: Summary) -> Iterator[Dict[str, Any]]:
    label_id = {l: i for i, l in enumerate(labels)}
    for ex in examples:
        if task == "cluener":
            row, cut = encode_chars(tokenizer, ex.text_a, [label_id[t] for t in ex.tags], seq_length)
        else:
            row, cut = encode_pair(tokenizer, ex.text_a, ex.text_b, seq_length)
            row["label_ids"] = ex.score if task in REGRESSION_TASKS else label_id[ex.label]
        summary.truncated += cut
        summary.rows_written += 1
        yield row


def convert_task_data(task: str, input_file: str, output: str, vocab_file: str, seq_length: int = 128,
                      fmt: str = "mindrecord", num_shards: int = 1, label_map: Optional[str] = None,
                      do_lower_case: bool = True, skip_bad_rows: bool = False, tag_scheme: str = "bioes",
                      **reader_args) -> Summary:
    """Convert one task file to records plus ``labels.json`` next to them; returns the Summary.

    Labels: the task's pinned list (SST-2, MNLI, QNLI, CoLA, MRPC, QQP, TNEWS; STS-B's one output), else
    ``label_map`` (a labels.json from the train split), else computed from this file (do that for train only).
    Regression tasks (STS-B) write their float scores as float32 ``label_ids``. ``reader_args`` go to the reader
    (``read_tsv``: text_a_col, text_b_col, label_col, has_header).

    Raises:
        BadRowError: the first malformed row ("file:line: reason") unless ``skip_bad_rows``.
        ValueError: no rows left to write, or a labels.json with a different label list already there.
    """
    if tag_scheme not in TAG_PREFIXES:
        raise ValueError(f"tag_scheme {tag_scheme!r}; expected one of {sorted(TAG_PREFIXES)}")
    check_seq_length(task, seq_length, task in PAIR_TASKS or reader_args.get("text_b_col") is not None)
    summary = Summary()
    examples = parse_examples(task, input_file, skip_bad_rows, summary, tag_scheme=tag_scheme, **reader_args)
    labels = (load_label_map(label_map) if label_map else fixed_labels(task)
              or labels_from_data(task, examples, tag_scheme))
    if task in REGRESSION_TASKS:
        _check_regression_map(task, labels, label_map)
    else:
        examples = _check_labels(examples, labels, skip_bad_rows, summary)
    if not examples:
        raise ValueError(f"{input_file}: no valid rows to write ({len(summary.skipped)} skipped)")
    check_label_map(os.path.dirname(os.path.abspath(output)), labels)  # before any record is written
    tokenizer = BertTokenizer(vocab_file, do_lower_case=do_lower_case)
    summary.files = write_records(_rows(task, examples, tokenizer, labels, seq_length, summary), output,
                                  task_columns(task, seq_length), fmt=fmt, num_shards=num_shards,
                                  vocab=tokenizer.vocab_fingerprint)
    summary.labels_file = write_label_map(os.path.dirname(os.path.abspath(output)), task, labels,
                                          tag_scheme if task == "cluener" else None)
    if summary.truncated:
        logger.warning("%s: %d of %d examples were longer than seq_length=%d and were truncated",
                       input_file, summary.truncated, summary.rows_written, seq_length)
    return summary
