"""Predict labels for raw text with an exported model (MINDIR, ONNX) or a checkpoint.

    python predict.py --model deploy/sst2.mindir --vocab_file ../shared/data/vocab/bert-base-uncased-vocab.txt \
        --labels_file data/sst2/labels.json "a gripping , funny film ." "a tedious mess ."
    printf 'A man is eating.\tSomeone eats.\n' | python predict.py --model mnli.onnx --vocab_file vocab.txt \
        --format jsonl
    python predict.py --model cluener.ckpt --vocab_file bert-base-chinese-vocab.txt --labels_file labels.json \
        --input_file sentences.txt

Input: sentences as arguments, or lines of --input_file (`-` = stdin), or lines piped to stdin. A line with a
tab is a sentence pair (text_a<TAB>text_b); blank lines are skipped. Text is tokenized with BertTokenizer as the
task converters do (WordPiece; NER one token per character), encoded to the model's sequence length (fixed by
a fixed-shape export, else --seq_length) and run in batches through src.ship.inference.load_runner.

Output, one line per input:
    classification, text:  <label><TAB><probability><TAB><input line>
    classification, jsonl: {"text", ["text_pair",] "label", "label_id", "probability", "probabilities"}
    regression, text:      <score><TAB><input line>          (a one-output head, e.g. STS-B: the raw prediction)
    regression, jsonl:     {"text", ["text_pair",] "score"}
    NER, text:             <input line><TAB><type>:<span>[<start>,<end>] ...   (character offsets, end inclusive)
    NER, jsonl:            {"text", "entities": [{"type", "text", "start", "end"}], "tags"}
Label names come from --labels_file (the labels.json the converters write beside the records); without it,
classification labels are printed as ids. Probabilities are the softmax of the logits.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

os.environ.setdefault("GLOG_v", "3")  # MindSpore C++ logging: errors only

ROOT = os.path.dirname(os.path.abspath(__file__))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from src.metrics import entity_spans  # noqa: E402
from src.data.task_data import encode_chars, load_label_map  # noqa: E402
from src.data.tokenization import BertTokenizer  # noqa: E402

logger = logging.getLogger("predict")

DEFAULT_SEQ_LENGTH = 128
HEADS = ("sequence_classification", "token_classification")


class InputError(ValueError):
    """Bad input text or flags; the message names the line or flag."""


Example = Tuple[str, str, Optional[str]]  # (where, text_a, text_b)


# ---------------------------------------------------------------- reading input
def parse_line(line: str, where: str) -> Optional[Example]:
    """A line -> (where, text_a, text_b or None); None for a blank line."""
    line = line.rstrip("\r\n")
    if not line.strip():
        return None
    fields = line.split("\t")
    if len(fields) > 2:
        raise InputError(f"{where}: {len(fields)} tab-separated fields; expected a sentence or a pair "
                         f"(sentence<TAB>sentence)")
    if any(not f.strip() for f in fields):
        raise InputError(f"{where}: empty sentence in a pair")
    return where, fields[0], fields[1] if len(fields) == 2 else None


def read_examples(texts: Sequence[str], input_file: Optional[str], stdin: Any) -> Iterator[Example]:
    """Examples from the positional texts, else --input_file (`-` = stdin), else piped stdin."""
    if texts and input_file:
        raise InputError("give sentences as arguments or --input_file, not both")
    if texts:
        for index, text in enumerate(texts, start=1):
            example = parse_line(text, f"argument {index}")
            if example is not None:
                yield example
        return
    if input_file and input_file != "-":
        if not os.path.isfile(input_file):
            raise InputError(f"--input_file {input_file} does not exist")
        with open(input_file, "rb") as f:
            yield from _lines(_utf8_lines(f, input_file), input_file)
        return
    if input_file is None and stdin.isatty():
        raise InputError("no input: give sentences as arguments, --input_file FILE, or pipe lines to stdin")
    yield from _lines(stdin, "<stdin>")


def _utf8_lines(stream: Iterable[bytes], name: str) -> Iterator[str]:
    """Decoded lines of a binary file; a line that is not UTF-8 is an error naming the file and the line."""
    for lineno, raw in enumerate(stream, start=1):
        try:
            yield raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError as err:
            raise InputError(f"{name}:{lineno}: not UTF-8 text ({err.reason} at byte {err.start}); expected UTF-8, "
                             f"one sentence (or JSON object) per line") from None


def _lines(stream: Iterable[str], name: str) -> Iterator[Example]:
    for lineno, line in enumerate(stream, start=1):
        example = parse_line(line, f"{name}:{lineno}")
        if example is not None:
            yield example


def _chunks(items: Iterable[Example], size: int) -> Iterator[List[Example]]:
    chunk: List[Example] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# ---------------------------------------------------------------- encoding and decoding
def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax over the last axis, in float64 for stable probabilities."""
    z = np.asarray(logits, np.float64)
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def encode_sentences(tokenizer: BertTokenizer, examples: Sequence[Example], seq_length: int
                     ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """int32 [N, S] ids, token types and mask for sentences or pairs; also the count of truncated examples."""
    rows, truncated = [], 0
    for _, a, b in examples:
        tokens_a = tokenizer.tokenize(a)
        tokens_b = tokenizer.tokenize(b) if b is not None else None
        truncated += len(tokens_a) + len(tokens_b or ()) > seq_length - (3 if b is not None else 2)
        rows.append(tokenizer.encode_tokens(tokens_a, tokens_b, seq_length))
    ids, types, mask = (np.array([getattr(r, k) for r in rows], np.int32)
                        for k in ("input_ids", "token_type_ids", "attention_mask"))
    return ids, types, mask, truncated


def encode_characters(tokenizer: BertTokenizer, examples: Sequence[Example], seq_length: int
                      ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """NER encoding, as the CLUENER converter: [CLS] one token per character [SEP], padded to S."""
    rows, truncated = [], 0
    for where, a, b in examples:
        if b is not None:
            raise InputError(f"{where}: a sentence pair was given to a token-classification (NER) model; "
                             f"give one sentence per line")
        row, cut = encode_chars(tokenizer, a, [0] * len(a), seq_length)
        rows.append(row)
        truncated += cut
    ids, types, mask = (np.array([r[k] for r in rows], np.int32) for k in ("input_ids", "segment_ids", "input_mask"))
    return ids, types, mask, truncated


def decode_entities(text: str, tag_ids: Sequence[int],
                    tag_names: Sequence[str]) -> Tuple[List[Dict[str, Any]], List[str]]:
    """Entities of one NER prediction: tag ids of the character positions (after [CLS]) -> spans of `text`.

    Returns (entities sorted by start, the predicted tag of each character that fit in the sequence).
    Spans follow src.metrics.entity_spans (strict BIOES/BMES, or BIO), ends inclusive as in CLUENER.
    """
    tags = [tag_names[int(t)] for t in tag_ids[:len(text)]]
    entities = [{"type": kind, "text": text[start:end + 1], "start": start, "end": end}
                for kind, start, end in sorted(entity_spans(tags), key=lambda s: (s[1], s[2], s[0]))]
    return entities, tags


def classification_records(examples: Sequence[Example], logits: np.ndarray,
                           names: Sequence[str]) -> List[Dict[str, Any]]:
    """One output record per example: best label, its probability and all probabilities."""
    probs = softmax(logits)
    records = []
    for (_, a, b), p in zip(examples, probs):
        best = int(p.argmax())
        record: Dict[str, Any] = {"text": a}
        if b is not None:
            record["text_pair"] = b
        record.update(label=names[best], label_id=best, probability=float(p[best]),
                      probabilities={n: float(v) for n, v in zip(names, p)})
        records.append(record)
    return records


def regression_records(examples: Sequence[Example], logits: np.ndarray) -> List[Dict[str, Any]]:
    """One output record per example of a one-output (regression) head: its prediction, as is."""
    records = []
    for (_, a, b), value in zip(examples, np.asarray(logits).reshape(-1)):
        record: Dict[str, Any] = {"text": a}
        if b is not None:
            record["text_pair"] = b
        record["score"] = float(value)
        records.append(record)
    return records


def ner_records(examples: Sequence[Example], logits: np.ndarray, names: Sequence[str]) -> List[Dict[str, Any]]:
    """One output record per example: entities and character tags from the argmax of [N, S, C] logits."""
    predicted = np.asarray(logits).argmax(-1)
    records = []
    for (_, text, _), row in zip(examples, predicted):
        entities, tags = decode_entities(text, row[1:-1], names)  # position 0 is [CLS]
        records.append({"text": text, "entities": entities, "tags": tags})
    return records


def format_text(record: Dict[str, Any]) -> str:
    """The plain-text output line of a record."""
    if "entities" in record:
        spans = " ".join(f"{e['type']}:{e['text']}[{e['start']},{e['end']}]" for e in record["entities"])
        return f"{record['text']}\t{spans or '(no entities)'}"
    text = record["text"] + (f"\t{record['text_pair']}" if "text_pair" in record else "")
    if "score" in record:
        return f"{record['score']:.4f}\t{text}"
    return f"{record['label']}\t{record['probability']:.4f}\t{text}"


# ---------------------------------------------------------------- model
def resolve_seq_length(runner: Any, requested: Optional[int]) -> int:
    """The export's fixed sequence length, else --seq_length, else DEFAULT_SEQ_LENGTH (capped at max positions)."""
    fixed = runner.seq_length
    if fixed is not None:
        if requested not in (None, fixed):
            raise InputError(f"--seq_length {requested}: {runner.path} was exported for seq_length {fixed} (fixed)")
        return int(fixed)
    limit = runner.config.max_position_embeddings
    seq_length = requested or min(DEFAULT_SEQ_LENGTH, limit)
    if not 2 < seq_length <= limit:
        raise InputError(f"--seq_length {seq_length}: expected 3..{limit} (max_position_embeddings of {runner.path})")
    return seq_length


def label_names(runner: Any, labels_file: Optional[str], ner: bool) -> List[str]:
    """Label names from --labels_file (checked against the model's label count), else "0".."C-1"."""
    if runner.num_labels == 1 and not ner:  # a regression head: no classes; a labels file must be such a task's
        if labels_file is not None:
            if not os.path.isfile(labels_file):
                raise InputError(f"--labels_file {labels_file} does not exist")
            names = load_label_map(labels_file)  # checks the file is a labels.json
            with open(labels_file, encoding="utf-8") as f:
                if json.load(f).get("type") != "regression":
                    raise InputError(f"--labels_file {labels_file} is a classification task's labels.json, but "
                                     f"{runner.path} has one output (a regression head, e.g. STS-B)")
            return names
        return ["score"]
    if labels_file is None:
        if ner:
            raise InputError(f"{runner.path} is a token-classification (NER) model: --labels_file (the labels.json "
                             f"of its training records) is needed to turn tags into entities")
        return [str(i) for i in range(runner.num_labels)]
    if not os.path.isfile(labels_file):
        raise InputError(f"--labels_file {labels_file} does not exist")
    names = load_label_map(labels_file)
    if len(names) != runner.num_labels:
        raise InputError(f"--labels_file {labels_file} has {len(names)} labels but {runner.path} predicts "
                         f"{runner.num_labels}; it belongs to another task")
    return names


def predict(args: argparse.Namespace, stdin: Any, stdout: Any) -> int:
    """Run the whole command; returns the number of examples predicted."""
    from src.ship.inference import load_runner  # imports MindSpore

    if args.batch_size < 1:
        raise InputError(f"--batch_size {args.batch_size}: expected >= 1")
    if not os.path.isfile(args.vocab_file):
        raise InputError(f"--vocab_file {args.vocab_file} does not exist")
    examples = read_examples(args.texts, args.input_file, stdin)
    first = next(examples, None)  # fail on bad input before the (slower) model load
    if first is None:
        raise InputError("no sentences in the input (blank lines are skipped)")
    runner = load_runner(args.model)
    head = runner.head.get("type")
    if head not in HEADS:
        raise InputError(f"{args.model}: a {head} model has no labels to predict; expected one of {', '.join(HEADS)}")
    ner = head == "token_classification"
    names = label_names(runner, args.labels_file, ner)
    seq_length = resolve_seq_length(runner, args.seq_length)
    tokenizer = BertTokenizer(args.vocab_file, do_lower_case=args.do_lower_case)
    runner.check_vocab(tokenizer.vocab_fingerprint, f"--vocab_file {args.vocab_file}")
    if runner.batch_size is not None and args.batch_size != runner.batch_size and args.batch_size_given:
        logger.warning("--batch_size %d ignored: %s was exported for batch size %d", args.batch_size, args.model,
                       runner.batch_size)
    chunk_rows = runner.batch_size or args.batch_size
    count = truncated = 0
    for chunk in _chunks(_prepend(first, examples), chunk_rows):
        encode = encode_characters if ner else encode_sentences
        ids, types, mask, cut = encode(tokenizer, chunk, seq_length)
        truncated += cut
        logits = runner.predict_batches(ids, types, mask,
                                        batch_size=None if runner.batch_size else args.batch_size)
        if ner:
            records = ner_records(chunk, logits, names)
        elif runner.num_labels == 1:  # a regression head (STS-B): its prediction, no softmax
            records = regression_records(chunk, logits)
        else:
            records = classification_records(chunk, logits, names)
        for record in records:
            line = json.dumps(record, ensure_ascii=False) if args.format == "jsonl" else format_text(record)
            stdout.write(line + "\n")
        stdout.flush()
        count += len(chunk)
    if truncated:
        logger.warning("%d of %d inputs were longer than seq_length %d and were truncated", truncated, count,
                       seq_length)
    return count


def _prepend(first: Example, rest: Iterator[Example]) -> Iterator[Example]:
    yield first
    yield from rest


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("texts", nargs="*", help="sentences (a tab inside one makes a pair)")
    parser.add_argument("--input_file", help="one sentence or tab-separated pair per line; '-' = stdin")
    parser.add_argument("--model", required=True,
                        help="exported .mindir / .onnx (with its .json from export.py) or a .ckpt with its .json")
    parser.add_argument("--vocab_file", required=True, help="WordPiece vocab.txt the model was trained with")
    parser.add_argument("--no_lower_case", dest="do_lower_case", action="store_false",
                        help="keep case (cased vocabularies); the default lower-cases as the uncased BERT vocab")
    parser.add_argument("--labels_file", help="labels.json of the task records (label / tag names)")
    parser.add_argument("--batch_size", type=int, default=None,
                        help="rows per model call (default 32; a fixed-batch export uses its own)")
    parser.add_argument("--seq_length", type=int,
                        help=f"tokens per input (default: the export's fixed length, else {DEFAULT_SEQ_LENGTH})")
    parser.add_argument("--format", choices=["text", "jsonl"], default="text", help="output format")
    return parser


def main(argv: Optional[Sequence[str]] = None, stdin: Any = None, stdout: Any = None) -> int:
    args = build_parser().parse_args(argv)
    args.batch_size_given = args.batch_size is not None
    args.batch_size = args.batch_size or 32
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        predict(args, stdin or sys.stdin, stdout or sys.stdout)
    except (InputError, ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
