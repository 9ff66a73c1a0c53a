"""Write an evaluation set as per-batch .bin files for offline inference (Ascend 310 C++ runner or the CPU runner).

    python preprocess.py --eval_data_file data/sst2/dev.mindrecord --task_type classification \
        --model_file deploy/sst2.mindir --result_path ./preprocess_Result
    (or --batch_size 32 --seq_length 64 instead of --model_file)

The .bin file contract shared by preprocess.py, ascend310_infer/ (C++), scripts/run_infer_cpu.py and
postprocess.py is described and implemented in src/ship/offline.py: every row of the eval set is written (the
last batch padded; meta.json says how many rows are real), at the fixed batch size of the exported model.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Optional, Sequence

ROOT = os.path.dirname(os.path.abspath(__file__))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from src.ship.offline import (DEFAULT_BATCH_SIZE, DEFAULT_SEQ_LENGTH, TASK_METRICS, shapes_from_model,  # noqa: E402
                              write_bins)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eval_data_file", required=True, nargs="+",
                        help="eval records: file(s) or glob(s), e.g. data/sst2/dev.mindrecord")
    parser.add_argument("--dataset_type", choices=["mindrecord", "tfrecord"],
                        help="record format (default: from the file extension)")
    parser.add_argument("--schema_file", help="schema JSON for TFRecord files (default: <file>.schema.json if present)")
    parser.add_argument("--result_path", default="./preprocess_Result", help="output folder (default %(default)s)")
    parser.add_argument("--model_file",
                        help="exported model (.mindir/.onnx/.air) whose <file>.json, written by export.py, gives "
                             "the batch size and sequence length (and the label count, checked)")
    parser.add_argument("--batch_size", type=int,
                        help=f"B: rows per .bin file; must equal the exported model's batch size (default: from "
                             f"--model_file, else {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--seq_length", type=int,
                        help=f"S: must equal the records' and the exported model's sequence length (default: from "
                             f"--model_file, else {DEFAULT_SEQ_LENGTH})")
    parser.add_argument("--task_type", required=True, choices=sorted(TASK_METRICS),
                        help="classification (label per row) or ner (label per token)")
    parser.add_argument("--labels_file",
                        help="labels.json of the records (default: labels.json beside the first record file)")
    parser.add_argument("--metric", help="accuracy (default), f1 or mcc for classification; entity_f1 for ner; "
                                         "pearson for regression")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    metric = args.metric or TASK_METRICS[args.task_type][0]
    labels_file = args.labels_file
    try:
        batch_size, seq_length, num_labels = shapes_from_model(args.model_file, args.batch_size, args.seq_length)
        if labels_file is None:
            from src.data.dataset import resolve_files

            first = resolve_files(list(args.eval_data_file))[0]
            labels_file = os.path.join(os.path.dirname(os.path.abspath(first)), "labels.json")
        meta = write_bins(args.eval_data_file, args.result_path, batch_size, seq_length, args.task_type,
                          labels_file, metric, args.dataset_type, args.schema_file, num_labels, args.model_file)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {meta['num_batches']} batches of {meta['batch_size']} x {meta['seq_length']} "
          f"({meta['num_rows']} rows, {meta['pad_rows_last_batch']} padding rows in the last batch) to "
          f"{os.path.abspath(args.result_path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
