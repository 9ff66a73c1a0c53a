"""Score the result .bin files of an offline-inference run (Ascend 310 C++ runner or scripts/run_infer_cpu.py).

    python postprocess.py --preprocess_path ./preprocess_Result --result_path ./result_Files

Reads meta.json and the label batches written by preprocess.py, and the float32 logits
`<result_path>/tinybert_bs{B}_{i}_0.bin` of every batch: [B, C] for classification, [B, 1] for regression,
[B*S, C] (the same bytes as [B, S, C]) for NER. Padding rows of the last batch are dropped (meta.json says how
many rows are real), then the task metric of src.metrics.evaluate is computed: accuracy (or F1 of class 1, or
Matthews correlation) for classification, Pearson (and Spearman) correlation with the float32 scores of the
label files for regression, entity-level span F1 with the tag names of labels.json for NER. Prints the metric and
writes the full result as JSON (--output). Exit status 1, with the file and the expected byte size named, when a
.bin file is missing or has the wrong size.

This script needs only NumPy (no MindSpore), so it also runs on a machine that just holds the result files.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Dict, Optional, Sequence

import numpy as np

ROOT = os.path.dirname(os.path.abspath(__file__))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from src.ship.offline import (LABEL_DIR, BinFileError, batch_file_name, label_dtype, label_shape,  # noqa: E402
                              logits_shape, read_bin, read_meta, result_file_name)
from src.metrics import METRICS, evaluate  # noqa: E402


def _load_label_names(path: str, expected: int) -> list:
    if not os.path.isfile(path):
        raise BinFileError(f"labels file {path} (from meta.json or --labels_file) does not exist")
    with open(path, encoding="utf-8") as f:
        content = json.load(f)
    names = content.get("labels") if isinstance(content, dict) else None
    if not isinstance(names, list):
        raise BinFileError(f"{path}: key 'labels' missing or not a list")
    if len(names) != expected:
        raise BinFileError(f"{path}: {len(names)} labels, but meta.json says the .bin files were written for "
                           f"{expected}")
    return [str(n) for n in names]


def collect(preprocess_path: str, result_path: str, output_index: int = 0) -> Dict[str, Any]:
    """Read every batch's logits and labels; returns {"meta", "logits", "labels"} with padding rows removed.

    logits: [N, C] (classification; [N, 1] regression) or [N*S, C] (NER); labels: [N] (float32 scores for
    regression) or [N, S].

    Raises:
        BinFileError: missing or wrongly sized meta.json / label / result file (named, with expected size).
    """
    meta = read_meta(preprocess_path)
    b, n_batches = meta["batch_size"], meta["num_batches"]
    per_batch_logits = logits_shape(meta)
    logits, labels = [], []
    for i in range(n_batches):
        name = batch_file_name(b, i)
        labels.append(read_bin(os.path.join(preprocess_path, LABEL_DIR, name), label_dtype(meta), label_shape(meta),
                               f"labels of batch {i} of {n_batches}"))
        logits.append(read_bin(os.path.join(result_path, result_file_name(name, output_index)), np.float32,
                               per_batch_logits, f"float32 logits of batch {i} of {n_batches}"))
    rows = meta["num_rows"]
    all_labels = np.concatenate(labels)[:rows]
    all_logits = np.concatenate(logits)
    if meta["task_type"] == "ner":
        all_logits = all_logits[:rows * meta["seq_length"]]  # keep the [N*S, C] layout the runner wrote
    else:
        all_logits = all_logits[:rows]
    return {"meta": meta, "logits": all_logits, "labels": all_labels}


def score(preprocess_path: str, result_path: str, metric: Optional[str] = None,
          labels_file: Optional[str] = None) -> Dict[str, Any]:
    """The evaluate() result for the run, plus "metric", "task_type" and "num_batches"."""
    data = collect(preprocess_path, result_path)
    meta = data["meta"]
    names = _load_label_names(labels_file or meta["labels_file"], meta["num_labels"])
    metric = metric or meta["metric"]
    if not np.isfinite(data["logits"]).all():
        bad = int((~np.isfinite(data["logits"])).sum())
        raise BinFileError(f"{result_path}: {bad} logits are NaN or infinite; the inference run is broken")
    result = evaluate(metric, data["logits"], data["labels"], names)
    result.update(metric=metric, task_type=meta["task_type"], num_batches=meta["num_batches"],
                  result_path=os.path.abspath(result_path))
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preprocess_path", default="./preprocess_Result",
                        help="folder written by preprocess.py (meta.json, label_ids/); default %(default)s")
    parser.add_argument("--result_path", default="./result_Files",
                        help="folder of the runner's tinybert_bs{B}_{i}_0.bin files; default %(default)s")
    parser.add_argument("--metric", choices=list(METRICS),
                        help="override the metric recorded by preprocess.py")
    parser.add_argument("--labels_file", help="override the labels.json recorded by preprocess.py")
    parser.add_argument("--output", help="JSON file for the full result (default <result_path>/metric.json)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = score(args.preprocess_path, args.result_path, args.metric, args.labels_file)
    except (BinFileError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    output = args.output or os.path.join(args.result_path, "metric.json")
    with open(output, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2, ensure_ascii=False)
        f.write("\n")
    metric = result["metric"]
    line = f"{metric}: {result['score']:.6f} ({result['examples']} examples, {result['num_batches']} batches)"
    if metric in ("f1", "mcc"):
        line += f"; accuracy {result['accuracy']:.6f}"
    elif metric == "pearson":
        line += f"; spearman {result['spearman']:.6f}"
    elif metric == "entity_f1":
        line += f"; precision {result['precision']:.6f}, recall {result['recall']:.6f}, " \
                f"token accuracy {result['token_accuracy']:.6f}"
    print(line)
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
