"""Evaluation metrics, each the one the task is judged by (not token accuracy for NER).

- accuracy: SST-2, QNLI, MNLI (matched and mismatched are two eval sets), TNEWS;
- F1 of class 1 (with accuracy beside it, as GLUE reports them): MRPC, QQP;
- Matthews correlation (with accuracy beside it): CoLA;
- entity-level span F1 (micro, exact type and boundaries) for CLUENER, from BIOES / BMES / BIO tags;
- Pearson and Spearman correlation for regression tasks (STS-B).

All functions take numpy arrays and return Python floats, so training, postprocess.py and tests share them.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

# Label id of positions that are not scored: NER [CLS], [SEP] and padding in the records (src/data/task_data.py),
# skipped by the losses (src/distill/losses.py), the metrics below and the offline-inference files.
IGNORE_INDEX = -1

Span = Tuple[str, int, int]  # (entity type, first position, last position), inclusive


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of equal entries; predictions and labels must have the same number of elements."""
    predictions, labels = np.asarray(predictions).reshape(-1), np.asarray(labels).reshape(-1)
    if predictions.shape != labels.shape:
        raise ValueError(f"accuracy: {predictions.size} predictions for {labels.size} labels")
    if labels.size == 0:
        raise ValueError("accuracy: no examples")
    return float(np.mean(predictions == labels))


def _split_tag(tag: str) -> Tuple[str, str]:
    if tag == "O" or "-" not in tag:
        return "O", ""
    prefix, kind = tag.split("-", 1)
    return prefix, kind


def entity_spans(tags: Sequence[str]) -> Set[Span]:
    """Well-formed entity spans of one tag sequence.

    BIOES/BMES: S-X is a one-position entity; B-X (I-X | M-X)* E-X is an entity. BIO: B-X I-X* is an entity.
    The scheme is read from the tags themselves: a sequence with E- or S- tags is BIOES/BMES, otherwise BIO.
    Ill-formed pieces (an I-X with no B-X, a B-X never closed by E-X in BIOES) are not entities, which is the
    strict reading used by seqeval's strict mode and the CLUENER baseline.
    """
    parsed = [_split_tag(t) for t in tags]
    closing = any(p in ("E", "S") for p, _ in parsed)
    spans: Set[Span] = set()
    start: Optional[int] = None
    kind = ""
    for i, (prefix, typ) in enumerate(parsed):
        if prefix == "S":
            spans.add((typ, i, i))
            start = None
        elif prefix == "B":
            if start is not None and not closing:
                spans.add((kind, start, i - 1))
            start, kind = i, typ
        elif prefix in ("I", "M") and start is not None and typ == kind:
            pass
        elif prefix == "E" and start is not None and typ == kind:
            spans.add((kind, start, i))
            start = None
        else:  # "O", or a piece that does not continue the open entity
            if start is not None and not closing:
                spans.add((kind, start, i - 1))
            start = None
    if start is not None and not closing:
        spans.add((kind, start, len(parsed) - 1))
    return spans


def entity_f1(predicted: Sequence[Sequence[str]], gold: Sequence[Sequence[str]]) -> Dict[str, object]:
    """Micro precision / recall / F1 over exact (type, start, end) spans, plus per-type figures."""
    if len(predicted) != len(gold):
        raise ValueError(f"entity_f1: {len(predicted)} predicted sequences for {len(gold)} gold sequences")
    counts: Dict[str, List[int]] = {}  # type -> [true positives, predicted, gold]
    for index, (pred_tags, gold_tags) in enumerate(zip(predicted, gold)):
        if len(pred_tags) != len(gold_tags):
            raise ValueError(f"entity_f1: sequence {index} has {len(pred_tags)} predicted tags and "
                             f"{len(gold_tags)} gold tags")
        pred_spans, gold_spans = entity_spans(pred_tags), entity_spans(gold_tags)
        for span in pred_spans:
            counts.setdefault(span[0], [0, 0, 0])[1] += 1
        for span in gold_spans:
            counts.setdefault(span[0], [0, 0, 0])[2] += 1
        for span in pred_spans & gold_spans:
            counts[span[0]][0] += 1

    def prf(tp: int, n_pred: int, n_gold: int) -> Dict[str, float]:
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / n_gold if n_gold else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"precision": precision, "recall": recall, "f1": f1, "support": n_gold}

    total = [sum(c[i] for c in counts.values()) for i in range(3)]
    result: Dict[str, object] = prf(*total)
    result["per_type"] = {kind: prf(*c) for kind, c in sorted(counts.items())}
    return result


def token_tag_sequences(predictions: np.ndarray, labels: np.ndarray, label_names: Sequence[str]
                        ) -> Tuple[List[List[str]], List[List[str]]]:
    """[B, S] predicted and gold tag ids -> per-example tag strings at the scored positions (label != -1)."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape or labels.ndim != 2:
        raise ValueError(f"token predictions {predictions.shape} and labels {labels.shape}: expected two equal "
                         f"[batch, seq] shapes")
    pred_seqs, gold_seqs = [], []
    for pred_row, gold_row in zip(predictions, labels):
        keep = gold_row != IGNORE_INDEX
        pred_seqs.append([label_names[i] for i in pred_row[keep]])
        gold_seqs.append([label_names[i] for i in gold_row[keep]])
    return pred_seqs, gold_seqs


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = np.asarray(x, np.float64).reshape(-1), np.asarray(y, np.float64).reshape(-1)
    if x.size != y.size or x.size < 2:
        raise ValueError(f"pearson: needs two equal-length inputs of at least 2 values, got {x.size} and {y.size}")
    x, y = x - x.mean(), y - y.mean()
    denominator = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denominator) if denominator else 0.0


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean rank), as scipy.stats.rankdata."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(x.size, np.float64)
    sorted_x = x[order]
    i = 0
    while i < x.size:
        j = i
        while j + 1 < x.size and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1
        i = j + 1
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    x, y = np.asarray(x, np.float64).reshape(-1), np.asarray(y, np.float64).reshape(-1)
    return pearson(_ranks(x), _ranks(y))


def binary_f1(predictions: np.ndarray, labels: np.ndarray, positive: int = 1) -> float:
    """F1 of the positive class: 2TP / (2TP + FP + FN)."""
    predictions, labels = np.asarray(predictions).reshape(-1), np.asarray(labels).reshape(-1)
    tp = int(np.sum((predictions == positive) & (labels == positive)))
    fp = int(np.sum((predictions == positive) & (labels != positive)))
    fn = int(np.sum((predictions != positive) & (labels == positive)))
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


def confusion_matrix(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """[K, K] int64 counts, rows the true class and columns the predicted one; ids must be in [0, K)."""
    predictions, labels = np.asarray(predictions).reshape(-1), np.asarray(labels).reshape(-1)
    if predictions.shape != labels.shape:
        raise ValueError(f"confusion_matrix: {predictions.size} predictions for {labels.size} labels")
    for name, ids in (("label", labels), ("prediction", predictions)):
        bad = ids[(ids < 0) | (ids >= num_classes) | (ids != np.round(ids))]
        if bad.size:
            raise ValueError(f"confusion_matrix: {name} {bad[0]!r} is not a class id in [0, {num_classes})")
    counts = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(counts, (labels.astype(np.int64), predictions.astype(np.int64)), 1)
    return counts


def matthews_corrcoef(predictions: np.ndarray, labels: np.ndarray, num_classes: int = 2) -> float:
    """Matthews correlation coefficient (CoLA's GLUE metric), Gorodkin's K-class form, as sklearn computes it.

    With t_k true and p_k predicted counts of class k, c correct and s examples:
    (c s - sum p_k t_k) / sqrt((s^2 - sum p_k^2) (s^2 - sum t_k^2)); for two classes this is
    (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)). 0.0 when a factor of the denominator is 0 (all
    predictions or all labels one class), not NaN.
    """
    counts = confusion_matrix(predictions, labels, num_classes).astype(np.float64)
    if counts.sum() == 0:
        raise ValueError("matthews_corrcoef: no examples")
    true, predicted = counts.sum(axis=1), counts.sum(axis=0)
    correct, total = np.trace(counts), counts.sum()
    denominator = np.sqrt((total ** 2 - predicted @ predicted) * (total ** 2 - true @ true))
    return float((correct * total - predicted @ true) / denominator) if denominator else 0.0


METRICS = ("accuracy", "f1", "mcc", "entity_f1", "pearson")


def _classification_metric(metric: str, logits: np.ndarray, labels: np.ndarray) -> Dict[str, object]:
    """accuracy, f1 or mcc of [N, C] logits against [N] label ids; f1 and mcc report accuracy too."""
    if logits.ndim != 2 or labels.reshape(-1).size != logits.shape[0]:
        raise ValueError(f"{metric}: logits {logits.shape} and labels {labels.shape}: expected [N, C] and [N]")
    predictions, labels = logits.argmax(-1), labels.reshape(-1)
    result: Dict[str, object] = {"accuracy": accuracy(predictions, labels)}
    if metric == "f1":
        result["f1"] = binary_f1(predictions, labels)
    elif metric == "mcc":
        result["mcc"] = matthews_corrcoef(predictions, labels, logits.shape[1])
    return {"score": result[metric], **result, "examples": int(logits.shape[0])}


def evaluate(metric: str, logits: np.ndarray, labels: np.ndarray,
             label_names: Optional[Sequence[str]] = None) -> Dict[str, object]:
    """Score logits against labels with the task's metric; returns a dict whose "score" is the headline value.

    accuracy, f1 (of class 1), mcc: logits [N, C], labels [N]; f1 and mcc results hold accuracy too.
    entity_f1: logits [N, S, C] (or [N*S, C] with labels [N, S]), labels [N, S] with -1 at unscored positions,
    label_names the tag list. pearson: logits [N] or [N, 1] (the one output of a regression head), labels [N]
    floats; the result holds spearman too.
    """
    logits, labels = np.asarray(logits), np.asarray(labels)
    if metric in ("accuracy", "f1", "mcc"):
        return _classification_metric(metric, logits, labels)
    if metric == "entity_f1":
        if label_names is None:
            raise ValueError("entity_f1 needs the tag names (labels.json of the task records)")
        if labels.ndim != 2:
            raise ValueError(f"entity_f1: labels {labels.shape}: expected [N, S]")
        if logits.ndim == 2:  # [N*S, C], what the Ascend 310 program writes
            logits = logits.reshape(labels.shape[0], labels.shape[1], -1)
        if logits.shape[:2] != labels.shape:
            raise ValueError(f"entity_f1: logits {logits.shape} do not match labels {labels.shape}")
        pred_seqs, gold_seqs = token_tag_sequences(logits.argmax(-1), labels, label_names)
        result = entity_f1(pred_seqs, gold_seqs)
        scored = labels != IGNORE_INDEX
        result.update(score=result["f1"], examples=int(labels.shape[0]),
                      token_accuracy=accuracy(logits.argmax(-1)[scored], labels[scored]))
        return result
    if metric == "pearson":
        if not (logits.ndim == 1 or (logits.ndim == 2 and logits.shape[1] == 1)) or labels.size != logits.shape[0]:
            raise ValueError(f"pearson: logits {logits.shape} and labels {labels.shape}: expected [N] or [N, 1] "
                             f"(one regression output per example) and [N]")
        predictions = logits.reshape(-1)
        value = pearson(predictions, labels)
        return {"score": value, "pearson": value, "spearman": spearman(predictions, labels),
                "examples": int(predictions.size)}
    raise ValueError(f"metric {metric!r}; expected one of {METRICS}")
