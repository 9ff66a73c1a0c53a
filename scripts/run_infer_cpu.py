"""CPU stand-in for the Ascend 310 C++ runner: same input folders, same result file names, same timing line.

    python scripts/run_infer_cpu.py --mindir_path sst2_student.mindir --input_path ./preprocess_Result \
        --result_path ./result_Files

Reads the three input folders written by preprocess.py (00_input_ids, 01_token_type_ids, 02_attention_mask;
int32 [B, S] per file), lists them in sorted order as ascend310_infer/src/main.cc does, runs each batch through
src.ship.inference.load_runner (a .mindir through mindspore.nn.GraphCell, an .onnx through onnxruntime, or a .ckpt
through the training graph) and writes float32 logits to <result_path>/tinybert_bs{B}_{i}_0.bin ([B, C], or
[B, S, C] = [B*S, C] bytes for NER). postprocess.py then scores them exactly as it scores the 310 results.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from typing import List, Optional, Sequence

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from src.ship.offline import INPUT_DIRS, BinFileError, read_bin, read_meta, result_file_name  # noqa: E402

_RESULT_FILE = re.compile(r"^tinybert_bs\d+_\d+_\d+\.bin$")


def list_batches(input_path: str) -> List[str]:
    """Sorted .bin names of 00_input_ids, checked to be present in the other two input folders."""
    folders = [os.path.join(input_path, d) for d in INPUT_DIRS]
    for folder in folders:
        if not os.path.isdir(folder):
            raise BinFileError(f"{folder}: missing input folder; expected the output of preprocess.py "
                               f"(--result_path of preprocess = --input_path here)")
    names = sorted(n for n in os.listdir(folders[0]) if n.endswith(".bin"))
    if not names:
        raise BinFileError(f"{folders[0]}: no .bin files")
    for folder in folders[1:]:
        others = sorted(n for n in os.listdir(folder) if n.endswith(".bin"))
        if others != names:
            only = sorted(set(names) ^ set(others))
            raise BinFileError(f"{folder}: its .bin files differ from those of {folders[0]} "
                               f"(e.g. {only[:3]}); the three input folders must hold the same batch names")
    return names


def run(model_path: str, input_path: str, result_path: str) -> dict:
    """Run every batch; returns timing figures {"batches", "first_ms", "mean_ms", "mean_after_first_ms"}.

    Raises:
        BinFileError: missing or wrongly sized input files. ValueError: model shape != .bin shape.
    """
    from src.ship.inference import load_runner  # imports MindSpore; kept out of --help

    meta = read_meta(input_path)
    b, s = meta["batch_size"], meta["seq_length"]
    names = list_batches(input_path)
    if len(names) != meta["num_batches"]:
        raise BinFileError(f"{os.path.join(input_path, INPUT_DIRS[0])}: {len(names)} .bin files; meta.json says "
                           f"{meta['num_batches']} batches (files of another run mixed in?)")
    runner = load_runner(model_path)
    if runner.seq_length not in (None, s):
        raise ValueError(f"{model_path}: the model takes seq_length {runner.seq_length}, the .bin files hold "
                         f"{s} (preprocess.py --seq_length); export and preprocess must agree")
    if runner.batch_size not in (None, b):
        raise ValueError(f"{model_path}: the model takes batch size {runner.batch_size}, the .bin files hold "
                         f"{b} rows (preprocess.py --batch_size); export and preprocess must agree")
    if runner.num_labels != meta["num_labels"]:
        raise ValueError(f"{model_path}: the model has {runner.num_labels} labels, {meta['labels_file']} has "
                         f"{meta['num_labels']}")
    os.makedirs(result_path, exist_ok=True)
    for stale in os.listdir(result_path):
        if _RESULT_FILE.match(stale):  # results of an earlier run must not be scored with this one
            os.remove(os.path.join(result_path, stale))

    times = []
    for index, name in enumerate(names):
        arrays = [read_bin(os.path.join(input_path, d, name), np.int32, [b, s], f"int32 {d[3:]} batch")
                  for d in INPUT_DIRS]
        start = time.perf_counter()
        logits = runner(*arrays)
        times.append((time.perf_counter() - start) * 1000.0)
        logits = np.ascontiguousarray(np.asarray(logits), dtype=np.float32)
        if logits.shape[0] != b:
            raise ValueError(f"{model_path}: batch {index} gave logits {logits.shape}; expected {b} rows")
        logits.tofile(os.path.join(result_path, result_file_name(name, 0)))
    return {"batches": len(times), "first_ms": times[0], "mean_ms": float(np.mean(times)),
            "mean_after_first_ms": float(np.mean(times[1:])) if len(times) > 1 else times[0]}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mindir_path", required=True,
                        help="exported model: .mindir (GraphCell), .onnx (onnxruntime) or a .ckpt with its .json")
    parser.add_argument("--input_path", default="./preprocess_Result",
                        help="folder written by preprocess.py; default %(default)s")
    parser.add_argument("--result_path", default="./result_Files", help="where to write the logits; "
                        "default %(default)s")
    parser.add_argument("--time_file", help="also write the timing figures as JSON here")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if not os.path.isfile(args.mindir_path):
        print(f"error: --mindir_path {args.mindir_path} does not exist", file=sys.stderr)
        return 1
    try:
        timing = run(args.mindir_path, args.input_path, args.result_path)
    except (BinFileError, ValueError, TypeError, RuntimeError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    # Same wording as the Ascend 310 program; the first batch includes graph compilation on CPU.
    print(f"NN inference cost average time: {timing['mean_ms']:.3f} ms of infer_count {timing['batches']} "
          f"(first batch {timing['first_ms']:.3f} ms, later batches {timing['mean_after_first_ms']:.3f} ms)")
    if args.time_file:
        os.makedirs(os.path.dirname(os.path.abspath(args.time_file)), exist_ok=True)
        with open(args.time_file, "w", encoding="utf-8") as f:
            json.dump(timing, f, indent=2)
            f.write("\n")
    print(f"wrote {timing['batches']} result files to {os.path.abspath(args.result_path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
