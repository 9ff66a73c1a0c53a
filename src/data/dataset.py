"""``create_tinybert_dataset``: batches of TinyBERT inputs (int32; float32 columns as stored) from TFRecord or
MindRecord files.

Name and role kept from the MindSpore model zoo, with its gaps closed: files are given explicitly (a path, a
list or a glob, never "every file of a folder"), shuffling works on one device too, the last partial batch can
be kept for evaluation, shapes are checked against ``seq_length`` before any graph is built, and optional
length bucketing pads each batch to its bucket instead of ``seq_length``.

Column shapes: sequence columns (``input_ids``, ``input_mask``, ``segment_ids``, NER ``label_ids``) are
``[B, S]`` int32 with S = seq_length (or the batch's bucket length); scalar columns (classification
``label_ids``; stored as ``[1]`` in TFRecord) come out as ``[B]`` int32, a regression task's float32
``label_ids`` as ``[B]`` float32; other float32 columns (stored teacher logits) keep their stored shape.
"""
from __future__ import annotations

import glob
import logging
import os
import re
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from src.data.batching import bucket_lengths
from src.data.records import iter_tfrecord, read_schema, schema_path_for

logger = logging.getLogger(__name__)

_EXTENSIONS = {"tfrecord": re.compile(r"\.(tfrecords?|tf_record)$"), "mindrecord": re.compile(r"\.mindrecord\d*$")}
_SIDE_FILES = (".db", ".json")  # MindRecord indexes and schemas, matched by globs like train.mindrecord*
MASK_COLUMN = "input_mask"
# The record columns that feed the model, in the order every network takes them: (input_ids, token_type_ids,
# attention_mask) are stored as input_ids, segment_ids, input_mask (the model zoo's names). Every loader of this
# project reads them in this order, so a batch goes into a network as it comes out of the loader.
MODEL_INPUT_COLUMNS = ("input_ids", "segment_ids", "input_mask")
LABEL_COLUMN = "label_ids"
GD_COLUMNS = MODEL_INPUT_COLUMNS  # general distillation: no labels
TD_COLUMNS = MODEL_INPUT_COLUMNS + (LABEL_COLUMN,)


class Batch(NamedTuple):
    """One training batch, columns by name (tensors or numpy arrays): ids, segments and mask [B, S]; labels [B] or
    [B, S] (a placeholder the loss does not read in GD); the stored teacher logits [B, C] in TD phase 2."""

    input_ids: Any
    segment_ids: Any
    input_mask: Any
    label_ids: Any = None
    teacher_logits: Any = None


def resolve_files(files: Union[str, Sequence[str]]) -> List[str]:
    """Expand a path, a list of paths or glob patterns into a sorted, de-duplicated list of data files.

    Raises:
        FileNotFoundError: a pattern that matches nothing or a path that does not exist (named).
    """
    patterns = [files] if isinstance(files, str) else list(files)
    if not patterns:
        raise ValueError("create_tinybert_dataset: files is empty; expected a path, a list or a glob pattern")
    found: List[str] = []
    for pattern in patterns:
        if glob.has_magic(pattern):
            matches = [m for m in sorted(glob.glob(pattern)) if not m.endswith(_SIDE_FILES)]
            if not matches:
                raise FileNotFoundError(f"no record file matches the pattern {pattern!r}")
            found.extend(matches)
        elif os.path.isfile(pattern):
            found.append(pattern)
        else:
            raise FileNotFoundError(f"record file {pattern!r} does not exist (a folder is not accepted; "
                                    f"give files or a glob such as 'dir/train*.tfrecord')")
    return list(dict.fromkeys(found))


def infer_dataset_type(files: Sequence[str]) -> str:
    """'tfrecord' or 'mindrecord' from the file extensions, which must all agree."""
    kinds = set()
    for path in files:
        kind = next((k for k, rx in _EXTENSIONS.items() if rx.search(path)), None)
        if kind is None:
            raise ValueError(f"{path}: cannot infer the dataset type from the extension; expected .tfrecord "
                             f"or .mindrecord[N], or pass dataset_type='tfrecord'|'mindrecord'")
        kinds.add(kind)
    if len(kinds) > 1:
        raise ValueError(f"files mix dataset types {sorted(kinds)}: {list(files)}")
    return kinds.pop()


def _file_columns(path: str, dataset_type: str, schema_file: Optional[str]) -> Dict[str, Tuple[str, List[int]]]:
    """{column: (dtype on disk, shape)} of one file: from the schema JSON, else from the file itself."""
    if schema_file or os.path.exists(schema_path_for(path)):
        schema = read_schema(schema_file or path)
        return {name: (col["type"], list(col["shape"])) for name, col in schema["columns"].items()}
    if dataset_type == "tfrecord":
        first = next(iter_tfrecord(path), None)
        if first is None:
            raise ValueError(f"{path}: empty TFRecord file and no schema JSON")
        return {name: ("float32" if values and isinstance(values[0], float) else "int64", [len(values)])
                for name, values in first.items()}
    from mindspore.mindrecord import FileReader

    reader = FileReader(path)
    try:
        return {name: (col.get("type", "int64"), list(col.get("shape", []))) for name, col in reader.schema().items()}
    finally:
        reader.close()


def mindrecord_rows(path: str) -> int:
    """Number of rows in a MindRecord file (what the loader will read from it)."""
    from mindspore.mindrecord import FileReader

    reader = FileReader(path)
    try:
        return reader.len()
    finally:
        reader.close()


def validate_files(files: Sequence[str], columns: Sequence[str], seq_length: int, dataset_type: str,
                   schema_file: Optional[str] = None, dtypes: Optional[Dict[str, str]] = None
                   ) -> Dict[str, List[int]]:
    """Check every file has ``columns`` and that non-scalar columns are ``[seq_length]``; return the shapes.

    ``dtypes``, when given, is filled with each column's dtype on disk (``int64`` if any file has int64).

    Raises:
        ValueError: naming the file, the column, the shape found and the shape expected.
    """
    shapes: Dict[str, List[int]] = {}
    for path in files:
        found = _file_columns(path, dataset_type, schema_file)
        where = f"{path}" + (f" (schema {schema_file})" if schema_file else "")
        for name in columns:
            if name not in found:
                raise ValueError(f"{where}: column {name!r} is missing; the file has {sorted(found)}")
            dtype, shape = found[name]
            if dtype == "float32":  # stored model outputs (teacher logits): any fixed shape, read as is
                pass
            elif shape not in ([], [1]) and shape != [seq_length]:
                raise ValueError(f"{where}: column {name!r} has shape {shape}; expected [{seq_length}] "
                                 f"(seq_length) or a scalar")
            if shapes.setdefault(name, shape) != shape:
                raise ValueError(f"{where}: column {name!r} has shape {shape} but an earlier file has "
                                 f"{shapes[name]}")
            if dtypes is not None:
                before = dtypes.get(name)
                if before is not None and (before == "float32") != (dtype == "float32"):
                    raise ValueError(f"{where}: column {name!r} is {dtype} but an earlier file has {before}")
                if before != "int64":
                    dtypes[name] = dtype
    return shapes


def _reader(files: List[str], columns: Sequence[str], shapes: Dict[str, List[int]], dataset_type: str,
            shuffle: bool, num_shards: int, shard_id: int, dtypes: Optional[Dict[str, str]] = None):
    """MindDataset, or TFRecordDataset whose C++ reader already yields int32 (float32 for FloatList columns) and
    true scalars."""
    import mindspore.dataset as ds

    shard = dict(num_shards=num_shards, shard_id=shard_id) if num_shards > 1 else {}
    if dataset_type == "mindrecord":
        return ds.MindDataset(files, columns_list=list(columns), shuffle=shuffle, **shard)
    # A schema object without numRows: a JSON numRows would cap the rows read over *all* files. Declaring
    # int32 makes the reader convert the on-disk int64 lists itself, and shape [] turns the one-element lists
    # of scalar columns into scalars, so no per-row map is needed afterwards.
    schema = ds.Schema()
    for name in columns:
        schema.add_column(name, de_type="float32" if (dtypes or {}).get(name) == "float32" else "int32",
                          shape=[] if shapes[name] in ([], [1]) else shapes[name])
    return ds.TFRecordDataset(files, schema=schema, columns_list=list(columns),
                              shuffle=ds.Shuffle.GLOBAL if shuffle else False,
                              shard_equal_rows=num_shards > 1, **shard)


def _cast_int32(dataset, columns: Sequence[str], shapes: Dict[str, List[int]], dataset_type: str = "mindrecord",
                dtypes: Optional[Dict[str, str]] = None):
    """int32 everywhere, per row and in C++: MindRecord int64 columns get one TypeCast each; int32 columns and
    TFRecord (whose reader already yields int32) need nothing. One-element columns become scalars after
    batching (``_squeeze_scalars``), once per batch instead of once per row."""
    if dataset_type == "tfrecord":
        return dataset
    import mindspore
    import mindspore.dataset.transforms as T

    wide = [name for name in columns if (dtypes or {}).get(name, "int64") not in ("int32", "float32")]
    for name in wide:
        dataset = dataset.map(operations=T.TypeCast(mindspore.int32), input_columns=[name])
    return dataset


def _one_element_columns(columns: Sequence[str], shapes: Dict[str, List[int]], dataset_type: str,
                         dtypes: Optional[Dict[str, str]] = None) -> List[str]:
    """Integer columns stored as [1] that the reader still yields as [1] per row (MindRecord; TFRecord yields
    scalars). float32 columns keep their shape (a regression teacher's [1] logits stay [B, 1])."""
    if dataset_type == "tfrecord":
        return []
    return [c for c in columns if shapes[c] == [1] and (dtypes or {}).get(c) != "float32"]


def _squeeze_scalars(dataset, names: Sequence[str]):
    """[B, 1] -> [B] for ``names``, one map call per batch."""
    if not names:
        return dataset
    names = list(names)
    return dataset.map(operations=lambda *arrays: tuple(a.reshape(-1) for a in arrays),
                       input_columns=names, output_columns=names)


def _bucket_batch(dataset, columns: Sequence[str], shapes: Dict[str, List[int]], batch_size: int,
                  seq_length: int, bucket_boundaries: Sequence[int], drop_remainder: bool,
                  dtypes: Optional[Dict[str, str]] = None):
    """Batch examples whose true length (sum of input_mask) falls in the same bucket, then trim to it.

    Bucket lengths b_0 < ... < b_k = seq_length: an example of length L goes to the smallest b_i >= L.
    MindSpore buckets are half-open [lo, hi), so its boundaries are b_i + 1. Rows are already padded to
    seq_length, so trimming (not re-padding) keeps each column's own padding value (e.g. -1 NER labels).
    """
    if MASK_COLUMN not in columns:
        raise ValueError(f"bucket_boundaries needs the {MASK_COLUMN!r} column; columns are {list(columns)}")
    lengths = bucket_lengths(seq_length, bucket_boundaries)
    dataset = dataset.bucket_batch_by_length(
        [MASK_COLUMN], [b + 1 for b in lengths], [batch_size] * (len(lengths) + 1),
        element_length_function=lambda mask: int(np.sum(mask)), drop_remainder=drop_remainder)
    seq_columns = [c for c in columns if shapes[c] == [seq_length] and (dtypes or {}).get(c) != "float32"]

    def trim(*arrays):
        longest = int(arrays[seq_columns.index(MASK_COLUMN)].sum(axis=1).max())
        target = next(b for b in lengths if b >= longest)
        return tuple(a[:, :target] for a in arrays)

    return dataset.map(operations=trim, input_columns=seq_columns, output_columns=seq_columns)


def create_tinybert_dataset(files: Union[str, Sequence[str]], columns: Sequence[str], batch_size: int,
                            seq_length: int, dataset_type: Optional[str] = None, schema_file: Optional[str] = None,
                            shuffle: bool = True, seed: Optional[int] = None, num_shards: int = 1,
                            shard_id: int = 0, drop_remainder: bool = True,
                            bucket_boundaries: Optional[Sequence[int]] = None):
    """Batched dataset of ``columns`` as int32 (float32 columns as float32): sequence columns [B, S], scalar
    columns [B].

    Args:
        files: a path, a list of paths, or glob patterns (``.db``/``.json`` side files are skipped).
        columns: column names to read, e.g. ``["input_ids", "input_mask", "segment_ids", "label_ids"]``.
        batch_size: rows per batch B.
        seq_length: S; every non-scalar column must have shape [S] in the schema/records.
        dataset_type: ``"tfrecord"``/``"mindrecord"``; None infers it from the extension.
        schema_file: schema JSON for all files; None uses each file's ``<file>.schema.json`` (or the file).
        shuffle: shuffle files and rows (on any number of devices).
        seed: sets MindSpore's global dataset seed (``mindspore.dataset.config.set_seed``) when given.
        num_shards, shard_id: data-parallel rank split (each rank sees 1/num_shards of the rows; MindSpore
            repeats a few rows so every shard has the same count).
        drop_remainder: False keeps the last partial batch (evaluation).
        bucket_boundaries: optional bucket lengths; each batch is then trimmed to its bucket length.

    Raises:
        FileNotFoundError: nothing matches ``files``. ValueError: bad arguments or shapes (file and column named).
    """
    if batch_size < 1 or seq_length < 1 or not 0 <= shard_id < num_shards:
        raise ValueError(f"batch_size={batch_size}, seq_length={seq_length}, shard_id={shard_id}, "
                         f"num_shards={num_shards}: expected positive sizes and 0 <= shard_id < num_shards")
    paths = resolve_files(files)
    dataset_type = dataset_type or infer_dataset_type(paths)
    if dataset_type not in _EXTENSIONS:
        raise ValueError(f"dataset_type {dataset_type!r}; expected one of {sorted(_EXTENSIONS)}")
    dtypes: Dict[str, str] = {}
    shapes = validate_files(paths, columns, seq_length, dataset_type, schema_file, dtypes)
    if seed is not None:
        import mindspore.dataset as ds

        ds.config.set_seed(seed)
    dataset = _reader(paths, columns, shapes, dataset_type, shuffle, num_shards, shard_id, dtypes)
    dataset = _cast_int32(dataset, columns, shapes, dataset_type, dtypes)
    logger.info("%s: %d %s file(s), shard %d/%d, shuffle=%s, batch %d, seq_length %d, buckets %s",
                files, len(paths), dataset_type, shard_id, num_shards, shuffle, batch_size, seq_length,
                bucket_boundaries)
    if bucket_boundaries:
        dataset = _bucket_batch(dataset, columns, shapes, batch_size, seq_length, bucket_boundaries,
                                drop_remainder, dtypes)
    else:
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return _squeeze_scalars(dataset, _one_element_columns(columns, shapes, dataset_type, dtypes))
