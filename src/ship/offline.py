"""The offline-inference file contract (Ascend 310 C++ runner, scripts/run_infer_cpu.py): an evaluation set as
per-batch .bin files, written by preprocess.py, read by the runners and by postprocess.py.

    <result_path>/
        00_input_ids/tinybert_bs{B}_{i}.bin       int32 [B, S], C order (record column input_ids)
        01_token_type_ids/tinybert_bs{B}_{i}.bin  int32 [B, S]            (record column segment_ids)
        02_attention_mask/tinybert_bs{B}_{i}.bin  int32 [B, S], 1 = token (record column input_mask)
        label_ids/tinybert_bs{B}_{i}.bin          int32 [B] (classification) or [B, S] (NER, -1 = not scored),
                                                  float32 [B] (regression: the scores)
        meta.json                                 batch size, seq length, rows, batches, padding, task, metric,
                                                  labels.json path, number of labels
    <result dir of the runner>/
        tinybert_bs{B}_{i}_0.bin                  float32 logits: [B, C] (classification), [B, 1] (regression),
                                                  [B, S, C] = [B*S, C] (NER; same bytes in C order)

Batches are read in record order (no shuffling) and every row is kept: the last batch is padded up to B
rows (input_ids/mask/segment 0, label -1, or -1.0 for regression) and meta.json records how many rows are real,
so postprocess.py scores exactly the rows of the eval set. (The model zoo's preprocess dropped the last partial batch.)
The fixed batch size matters because an exported MINDIR/AIR/OM usually has a static shape [B, S].
Nothing here imports MindSpore until records are read (write_bins).
"""
from __future__ import annotations

import glob
import json
import logging
import os
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from src.data.dataset import MODEL_INPUT_COLUMNS
from src.infra.files import write_json_atomic
from src.metrics import IGNORE_INDEX
from src.ship.format import FORMAT as EXPORT_FORMAT

logger = logging.getLogger(__name__)

META_FILE = "meta.json"
META_FORMAT = "tinybert-offline-inference-bins"
META_VERSION = 1
INPUT_DIRS = ("00_input_ids", "01_token_type_ids", "02_attention_mask")  # model input order
INPUT_NAMES = ("input_ids", "token_type_ids", "attention_mask")
RECORD_COLUMNS = MODEL_INPUT_COLUMNS  # the record column feeding each input
LABEL_DIR = "label_ids"
TASK_METRICS = {"classification": ("accuracy", "f1", "mcc"), "ner": ("entity_f1",), "regression": ("pearson",)}
_BATCH_FILE = re.compile(r"^tinybert_bs(\d+)_(\d+)\.bin$")
DEFAULT_BATCH_SIZE, DEFAULT_SEQ_LENGTH = 32, 128


class BinFileError(ValueError):
    """A .bin file or meta.json of the offline-inference contract is missing or has the wrong size."""


def batch_file_name(batch_size: int, index: int) -> str:
    """Name of input/label batch `index`: tinybert_bs{B}_{i}.bin."""
    return f"tinybert_bs{batch_size}_{index}.bin"


def result_file_name(input_file_name: str, output_index: int = 0) -> str:
    """Result file a runner writes for one input batch file: tinybert_bs{B}_{i}.bin -> tinybert_bs{B}_{i}_{k}.bin."""
    stem = input_file_name[:-4] if input_file_name.endswith(".bin") else input_file_name
    return f"{stem}_{output_index}.bin"


def read_bin(path: str, dtype: Any, shape: Sequence[int], what: str) -> np.ndarray:
    """Read a raw C-order array file of exactly prod(shape) elements of `dtype`.

    Raises:
        BinFileError: the file is missing or its size is not the expected one (both named in the message).
    """
    dtype = np.dtype(dtype)
    expected = int(np.prod(shape)) * dtype.itemsize
    shape_text = "x".join(str(s) for s in shape)
    if not os.path.isfile(path):
        raise BinFileError(f"{path}: missing; expected {what}: {dtype.name} [{shape_text}] = {expected} bytes")
    size = os.path.getsize(path)
    if size != expected:
        raise BinFileError(f"{path}: {size} bytes; expected {what}: {dtype.name} [{shape_text}] = {expected} bytes "
                           f"(truncated, or written for another batch size / sequence length / label count?)")
    return np.fromfile(path, dtype=dtype).reshape(tuple(shape))


def read_meta(preprocess_dir: str) -> Dict[str, Any]:
    """The meta.json written by preprocess.py into `preprocess_dir`, with its required keys checked."""
    path = os.path.join(preprocess_dir, META_FILE)
    if not os.path.isfile(path):
        raise BinFileError(f"{path}: missing; expected the {META_FILE} written by preprocess.py "
                           f"(is {preprocess_dir} the preprocess --result_path?)")
    with open(path, encoding="utf-8") as f:
        try:
            meta = json.load(f)
        except json.JSONDecodeError as err:
            raise BinFileError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT:
        raise BinFileError(f"{path}: format {meta.get('format') if isinstance(meta, dict) else None!r}; "
                           f"expected {META_FORMAT!r}")
    required = ("batch_size", "seq_length", "num_rows", "num_batches", "task_type", "metric", "labels_file",
                "num_labels")
    missing = [k for k in required if k not in meta]
    if missing:
        raise BinFileError(f"{path}: keys {missing} missing")
    return meta


def label_shape(meta: Dict[str, Any]) -> List[int]:
    """Shape of one label batch: [B] (classification) or [B, S] (NER)."""
    b, s = meta["batch_size"], meta["seq_length"]
    return [b, s] if meta["task_type"] == "ner" else [b]


def label_dtype(meta: Dict[str, Any]) -> str:
    """dtype of the label files: float32 for regression (the scores), int32 otherwise (label ids)."""
    return "float32" if meta["task_type"] == "regression" else "int32"


def logits_shape(meta: Dict[str, Any]) -> List[int]:
    """Shape of one result batch as the runners write it: [B, C] or, for NER, [B*S, C]."""
    b, s, c = meta["batch_size"], meta["seq_length"], meta["num_labels"]
    return [b * s, c] if meta["task_type"] == "ner" else [b, c]


# ---------------------------------------------------------------- writing
def _clear_stale(directory: str) -> int:
    """Remove batch files of an earlier run: the C++ runner reads every file of the folder."""
    stale = [p for p in glob.glob(os.path.join(directory, "tinybert_bs*.bin"))
             if _BATCH_FILE.match(os.path.basename(p))]
    for path in stale:
        os.remove(path)
    return len(stale)


def _pad_with(array: np.ndarray, rows: int, value: int) -> np.ndarray:
    """Pad axis 0 of `array` to `rows` rows with `value`."""
    missing = rows - array.shape[0]
    if missing <= 0:
        return array
    pad = np.full((missing,) + array.shape[1:], value, dtype=array.dtype)
    return np.concatenate([array, pad], axis=0)


def _check_labels(labels: np.ndarray, index: int, task_type: str, files: Sequence[str], seq_length: int,
                  labels_file: str, num_labels: int) -> None:
    """The label batch `index` fits the task type and the label ids of labels.json."""
    if task_type == "ner" and labels.ndim != 2:
        raise ValueError(f"--task_type ner: label_ids in {files} are one id per row; expected one per token "
                         f"[{seq_length}] (use --task_type classification for these records)")
    if task_type in ("classification", "regression") and labels.ndim != 1:
        raise ValueError(f"--task_type {task_type}: label_ids in {files} have shape {list(labels.shape[1:])} "
                         f"per row; expected one label per row (use --task_type ner for token labels)")
    if (task_type == "regression") != (labels.dtype.kind == "f"):
        raise ValueError(f"--task_type {task_type}: label_ids in {files} are {labels.dtype}; "
                         + ("expected float scores (records of a regression task such as stsb)" if task_type ==
                            "regression" else "expected label ids (use --task_type regression for float scores)"))
    if task_type == "regression":
        return
    scored = labels[labels != IGNORE_INDEX]
    bad = scored[(scored < 0) | (scored >= num_labels)]
    if bad.size:
        raise ValueError(f"batch {index}: label id {int(bad[0])} is outside the {num_labels} labels of "
                         f"{labels_file} (ids 0..{num_labels - 1}); is it the labels.json of these records?")


def _meta(files: Sequence[str], batch_size: int, seq_length: int, num_rows: int, num_batches: int, pad_rows: int,
          task_type: str, metric: str, labels_file: str, num_labels: int) -> Dict[str, Any]:
    """meta.json of a preprocess result."""
    return {
        "format": META_FORMAT, "format_version": META_VERSION,
        "batch_size": batch_size, "seq_length": seq_length,
        "num_rows": num_rows, "num_batches": num_batches, "pad_rows_last_batch": pad_rows,
        "task_type": task_type, "metric": metric,
        "labels_file": os.path.abspath(labels_file), "num_labels": num_labels,
        "inputs": [{"dir": d, "name": n, "record_column": c, "dtype": "int32", "shape": [batch_size, seq_length]}
                   for d, n, c in zip(INPUT_DIRS, INPUT_NAMES, RECORD_COLUMNS)],
        "labels": {"dir": LABEL_DIR, "dtype": label_dtype({"task_type": task_type}),
                   "shape": label_shape({"batch_size": batch_size, "seq_length": seq_length, "task_type": task_type})},
        "file_pattern": f"tinybert_bs{batch_size}_{{i}}.bin",
        "source_files": [os.path.abspath(f) for f in files],
    }


def write_bins(eval_data_file: Sequence[str], result_path: str, batch_size: int, seq_length: int, task_type: str,
               labels_file: str, metric: str, dataset_type: Optional[str] = None,
               schema_file: Optional[str] = None, model_num_labels: Optional[int] = None,
               model_file: Optional[str] = None) -> Dict[str, Any]:
    """Write the per-batch .bin files and meta.json (see the module docstring); returns the meta dict.

    model_num_labels: the label count of the exported model (`model_file`), checked against labels.json.

    Raises:
        ValueError: bad flag values, labels that do not fit the task type or labels.json, no rows.
        FileNotFoundError: missing record or labels file.
    """
    from src.data.dataset import create_tinybert_dataset, resolve_files  # mindspore.dataset: imported on use
    from src.data.task_data import load_label_map

    if task_type not in TASK_METRICS:
        raise ValueError(f"--task_type: got {task_type!r}; expected one of {sorted(TASK_METRICS)}")
    if metric not in TASK_METRICS[task_type]:
        raise ValueError(f"--metric: got {metric!r}; a {task_type} task allows {list(TASK_METRICS[task_type])}")
    if batch_size < 1 or seq_length < 2:
        raise ValueError(f"--batch_size {batch_size} / --seq_length {seq_length}: expected >= 1 and >= 2")
    if not os.path.isfile(labels_file):
        raise FileNotFoundError(f"--labels_file: {labels_file} does not exist; pass the labels.json that "
                                f"scripts/convert_task_data.py wrote beside the records")
    label_names = load_label_map(labels_file)
    if model_num_labels is not None and model_num_labels != len(label_names):
        raise ValueError(f"--model_file {model_file} has {model_num_labels} labels; {labels_file} has "
                         f"{len(label_names)}: they are not for the same task")
    files = resolve_files(list(eval_data_file))
    if model_file:
        _check_records_vocab(files, model_file)

    columns = list(RECORD_COLUMNS) + ["label_ids"]
    dataset = create_tinybert_dataset(files, columns, batch_size, seq_length, dataset_type=dataset_type,
                                      schema_file=schema_file, shuffle=False, drop_remainder=False)
    os.makedirs(result_path, exist_ok=True)
    meta_path = os.path.join(result_path, META_FILE)
    if os.path.exists(meta_path):  # written again at the end: a failed run leaves no meta.json behind
        os.remove(meta_path)
    dirs = [os.path.join(result_path, d) for d in INPUT_DIRS + (LABEL_DIR,)]
    removed = 0
    for directory in dirs:
        os.makedirs(directory, exist_ok=True)
        removed += _clear_stale(directory)
    if removed:
        logger.info("removed %d .bin files of an earlier run under %s", removed, result_path)

    num_rows, index, pad_rows = 0, 0, 0
    for index, batch in enumerate(dataset.create_dict_iterator(output_numpy=True, num_epochs=1)):
        labels = batch["label_ids"]
        rows = labels.shape[0]
        if pad_rows:  # only the final batch may be short
            raise ValueError(f"batch {index - 1} had {batch_size - pad_rows} rows but was not the last one")
        _check_labels(labels, index, task_type, files, seq_length, labels_file, len(label_names))
        pad_rows = batch_size - rows
        arrays = [batch[c] for c in RECORD_COLUMNS] + [labels]
        pad_values = [0, 0, 0, IGNORE_INDEX]
        name = batch_file_name(batch_size, index)
        dtypes = [np.int32] * len(RECORD_COLUMNS) + [label_dtype({"task_type": task_type})]
        for directory, array, value, dtype in zip(dirs, arrays, pad_values, dtypes):
            padded = _pad_with(np.ascontiguousarray(array, dtype=dtype), batch_size, value)
            padded.tofile(os.path.join(directory, name))
        num_rows += rows
    if num_rows == 0:
        raise ValueError(f"{files}: no rows to write")

    meta = _meta(files, batch_size, seq_length, num_rows, index + 1, pad_rows, task_type, metric, labels_file,
                 len(label_names))
    write_json_atomic(meta_path, meta)
    return meta


def _check_records_vocab(files: Sequence[str], model_file: str) -> None:
    """The records' vocabulary (their schema JSON) must be the exported model's (its <file>.json), see
    src/data/vocab.py."""
    from src.data import vocab  # pylint: disable=import-outside-toplevel
    from src.data.records import records_vocab  # pylint: disable=import-outside-toplevel

    with open(model_file + ".json", encoding="utf-8") as f:
        info = json.load(f)
    for path in files:
        found = records_vocab(path)
        vocab.check_pair(found, f"--eval_data_file {path}", info.get(vocab.KEY), model_file)
        vocab_size = (info.get("model") or {}).get("vocab_size")
        if vocab_size:
            vocab.check_size(found, f"--eval_data_file {path}", vocab_size, f"the vocab_size of {model_file}")


def shapes_from_model(model_file: Optional[str], batch_size: Optional[int],
                      seq_length: Optional[int]) -> Tuple[int, int, Optional[int]]:
    """(batch size, seq length, number of labels or None) from the flags and the export's `<file>.json`.

    A value fixed by the export wins over the default; a flag that contradicts it is an error.
    """
    if not model_file:
        return batch_size or DEFAULT_BATCH_SIZE, seq_length or DEFAULT_SEQ_LENGTH, None
    info_path = model_file + ".json"
    if not os.path.isfile(info_path):
        raise FileNotFoundError(f"--model_file: {info_path} does not exist; expected the description export.py "
                                f"writes beside {model_file}")
    with open(info_path, encoding="utf-8") as f:
        info = json.load(f)
    if not isinstance(info, dict) or info.get("format") != EXPORT_FORMAT:
        raise ValueError(f"--model_file: {info_path} is not an export description (format {EXPORT_FORMAT!r})")
    resolved = []
    for flag, given, fixed, default in (("--batch_size", batch_size, info.get("batch_size"), DEFAULT_BATCH_SIZE),
                                        ("--seq_length", seq_length, info.get("seq_length"), DEFAULT_SEQ_LENGTH)):
        if fixed is not None and given is not None and given != fixed:
            raise ValueError(f"{flag} {given} contradicts {model_file}, exported with {flag[2:]} {fixed}")
        resolved.append(fixed if fixed is not None else (given or default))
    head = info.get("head") or {}
    return resolved[0], resolved[1], head.get("num_labels")
