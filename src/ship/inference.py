"""Run an exported model (or a checkpoint) on numpy inputs: one Runner interface for MINDIR, ONNX and .ckpt.

    runner = load_runner("deploy/student.onnx")      # by extension: .mindir, .onnx or .ckpt
    logits = runner(input_ids, token_type_ids, attention_mask)          # exactly runner.batch_size rows
    logits = runner.predict_batches(input_ids, token_type_ids, attention_mask)  # any number of rows

Inputs are integer numpy arrays [B, S] in the order input_ids, token_type_ids, attention_mask; the result
is a float32 numpy array of logits ([B, C], [B, S, C] or [B, S, V] by head). Exported files are described
by the `<file>.json` that src.ship.export writes beside them (shapes, head, config); checkpoints by their
`.json` sidecar. Fixed shapes are checked before running, with an error naming the expected shape
(MindSpore and onnxruntime only report a broadcasting or reshape failure deep inside the graph).
"""
from __future__ import annotations

import os
import time
from typing import Any, Dict, Optional, Tuple

import numpy as np
import mindspore as ms
from mindspore import Tensor, nn

from src.data import vocab
from src.model.checkpoint import load_model, read_metadata, read_model_config
from src.config import BertConfig, bert_config_from_dict
from src.ship.format import EXPORTABLE_HEADS, INPUT_NAMES, OUTPUT_NAME, ExportError, output_shape, read_export_metadata
from src.model.heads import LogitsOnly

DEVICES = ("CPU", "GPU", "Ascend")
DEFAULT_CHUNK = 32  # rows per call of predict_batches when the runner takes any batch size
_ORT_PROVIDERS = {"CPU": "CPUExecutionProvider", "GPU": "CUDAExecutionProvider", "Ascend": "CANNExecutionProvider"}


def _device_name(device: str) -> str:
    for name in DEVICES:
        if str(device).lower() == name.lower():
            return name
    raise ValueError(f"device: got {device!r}; expected one of {', '.join(DEVICES)}")


def _use_mindspore_device(device: str) -> None:
    """Make MindSpore run on `device`, or explain why it cannot (the target is fixed once it has run)."""
    current = str(ms.get_context("device_target"))
    if current == device:
        return
    try:
        ms.set_device(device)
    except (RuntimeError, ValueError, TypeError) as err:
        raise RuntimeError(f"device {device}: MindSpore in this process runs on {current} and cannot switch "
                           f"({str(err).splitlines()[0]}); start a new process with device {device}") from None


class Runner:
    """Common part of every runner: input checks, shapes, padding into fixed batches.

    Attributes:
        path: the model file.  file_format: "MINDIR", "ONNX" or "CKPT".
        config: BertConfig.  head: the head dict as saved ({"type": ..., "num_labels": ...}).
        num_labels: C (the vocabulary size V for a masked-LM head).
        batch_size, seq_length: the fixed input shape, or None where any value is accepted.
        metadata: the JSON beside the file.
    """

    file_format = ""

    def __init__(self, path: str, metadata: Dict[str, Any], config: BertConfig, head: Dict[str, Any],
                 batch_size: Optional[int], seq_length: Optional[int]):
        if head.get("type") not in EXPORTABLE_HEADS:
            raise ExportError(f"{path}: a {head.get('type')} network has no logits to predict; expected one of "
                              f"{', '.join(EXPORTABLE_HEADS)}")
        self.path = path
        self.metadata = metadata
        self.config = config
        self.head = dict(head)
        self.num_labels = int(head["num_labels"]) if "num_labels" in head else config.vocab_size
        self.batch_size = batch_size
        self.seq_length = seq_length

    def check_vocab(self, fingerprint: Dict[str, Any], where: str) -> None:
        """The vocabulary a caller tokenizes with (src/data/vocab.py) must be the model's: the one its checkpoint
        or export recorded, else at least one of its vocab_size. Raises VocabMismatch naming both."""
        vocab.check_pair(fingerprint, where, self.metadata.get(vocab.KEY), self.path)
        vocab.check_size(fingerprint, where, self.config.vocab_size, f"the vocab_size of {self.path}")

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.path!r}, head={self.head['type']}, num_labels={self.num_labels}, "
                f"batch_size={self.batch_size}, seq_length={self.seq_length})")

    # -- checks -------------------------------------------------------------------------------------
    def _as_int32(self, name: str, value: Any) -> np.ndarray:
        array = np.asarray(value)
        if array.dtype == np.bool_:
            array = array.astype(np.int32)
        if array.dtype.kind not in "iu":
            raise TypeError(f"{self.path}: {name}: expected an integer array, got dtype {array.dtype}")
        if array.ndim != 2:
            raise ValueError(f"{self.path}: {name}: expected shape [batch, seq_length], got {list(array.shape)}")
        if array.size and (array.min() < np.iinfo(np.int32).min or array.max() > np.iinfo(np.int32).max):
            raise ValueError(f"{self.path}: {name}: values do not fit int32")
        return np.ascontiguousarray(array, dtype=np.int32)

    def check_inputs(self, input_ids: Any, token_type_ids: Any, attention_mask: Any,
                     whole_batch: bool = True) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Validate and convert the three inputs to int32 [B, S]; raise with the expected shape and range."""
        arrays = tuple(self._as_int32(n, v) for n, v in zip(INPUT_NAMES, (input_ids, token_type_ids, attention_mask)))
        shapes = {n: a.shape for n, a in zip(INPUT_NAMES, arrays)}
        if len(set(shapes.values())) != 1:
            listed = ", ".join(f"{n} {list(s)}" for n, s in shapes.items())
            raise ValueError(f"{self.path}: inputs differ in shape: {listed}")
        batch, seq = arrays[0].shape
        if self.seq_length is not None and seq != self.seq_length:
            raise ValueError(f"{self.path}: sequence length {seq} given; this model was exported for seq_length "
                             f"{self.seq_length} (fixed). Pad or truncate the inputs to {self.seq_length} tokens, "
                             f"or export again with --seq_length {seq}")
        if seq > self.config.max_position_embeddings:
            raise ValueError(f"{self.path}: sequence length {seq} is larger than max_position_embeddings "
                             f"({self.config.max_position_embeddings})")
        if whole_batch and self.batch_size is not None and batch != self.batch_size:
            raise ValueError(f"{self.path}: batch of {batch} rows given; this model was exported for batch_size "
                             f"{self.batch_size} (fixed). Use predict_batches() to split and pad, or export "
                             f"again (MINDIR with --dynamic_batch takes any batch)")
        ids, types, mask = arrays
        limits = (("input_ids", ids, self.config.vocab_size), ("token_type_ids", types, self.config.type_vocab_size),
                  ("attention_mask", mask, 2))
        for name, array, limit in limits:
            if array.size and (array.min() < 0 or array.max() >= limit):
                raise ValueError(f"{self.path}: {name}: values must be in [0, {limit - 1}]; got "
                                 f"[{array.min()}, {array.max()}]")
        return ids, types, mask

    # -- running ------------------------------------------------------------------------------------
    def __call__(self, input_ids: Any, token_type_ids: Any, attention_mask: Any) -> np.ndarray:
        """Logits for one batch (exactly batch_size rows if the runner has a fixed batch size)."""
        ids, types, mask = self.check_inputs(input_ids, token_type_ids, attention_mask)
        logits = np.asarray(self._run(ids, types, mask), dtype=np.float32)
        expected = output_shape(self.config, self.head, ids.shape[0], ids.shape[1])
        if list(logits.shape) != expected:
            raise RuntimeError(f"{self.path}: returned logits of shape {list(logits.shape)}, expected {expected}")
        return logits

    def _run(self, ids: np.ndarray, types: np.ndarray, mask: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def predict_batches(self, input_ids: Any, token_type_ids: Any, attention_mask: Any,
                        batch_size: Optional[int] = None) -> np.ndarray:
        """Logits for any number N of rows: split into batches, pad the last one, drop the padding rows.

        Fixed-batch runners use their batch size (a different `batch_size` is an error); runners that take
        any batch use `batch_size` rows per call (default DEFAULT_CHUNK). Padding rows copy the first row
        of their batch, so they are valid inputs; their logits are dropped.
        """
        ids, types, mask = self.check_inputs(input_ids, token_type_ids, attention_mask, whole_batch=False)
        if self.batch_size is not None and batch_size not in (None, self.batch_size):
            raise ValueError(f"{self.path}: batch_size {batch_size} asked, but this model was exported for "
                             f"batch_size {self.batch_size} (fixed)")
        chunk = self.batch_size or batch_size or DEFAULT_CHUNK
        if chunk < 1:
            raise ValueError(f"batch_size: got {chunk}; expected >= 1")
        rows, seq = ids.shape
        if rows == 0:
            return np.zeros([0] + output_shape(self.config, self.head, 0, seq)[1:], np.float32)
        outputs = []
        for start in range(0, rows, chunk):
            part = [a[start:start + chunk] for a in (ids, types, mask)]
            real = part[0].shape[0]
            if self.batch_size is not None and real < chunk:
                part = [np.concatenate([a, np.repeat(a[:1], chunk - real, axis=0)]) for a in part]
            outputs.append(self(*part)[:real])
        return np.concatenate(outputs, axis=0)


class MindIRRunner(Runner):
    """A .mindir file through `nn.GraphCell(ms.load(path))`."""

    file_format = "MINDIR"

    def __init__(self, path: str, device: str = "CPU"):
        meta = read_export_metadata(path)
        _check_format(path, meta, self.file_format)
        config = bert_config_from_dict(meta["model"], path + ".json")
        super().__init__(path, meta, config, meta["head"], meta.get("batch_size"), meta.get("seq_length"))
        _use_mindspore_device(device)
        self.graph = nn.GraphCell(ms.load(path))

    def _run(self, ids, types, mask):
        return self.graph(Tensor(ids), Tensor(types), Tensor(mask)).asnumpy()


class OnnxRunner(Runner):
    """An .onnx file through onnxruntime (CPUExecutionProvider on CPU)."""

    file_format = "ONNX"

    def __init__(self, path: str, device: str = "CPU", threads: Optional[int] = None):
        meta = read_export_metadata(path)
        _check_format(path, meta, self.file_format)
        config = bert_config_from_dict(meta["model"], path + ".json")
        super().__init__(path, meta, config, meta["head"], meta.get("batch_size"), meta.get("seq_length"))
        try:
            import onnxruntime as ort  # pylint: disable=import-outside-toplevel
        except ImportError:
            raise RuntimeError(f"{path}: running ONNX models needs onnxruntime: pip install onnxruntime") from None
        provider = _ORT_PROVIDERS[device]
        if provider not in ort.get_available_providers():
            raise RuntimeError(f"{path}: onnxruntime here has no {provider} for device {device}; available: "
                               f"{', '.join(ort.get_available_providers())}")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        self.session = ort.InferenceSession(path, sess_options=options, providers=[provider])
        # Inputs by name, in the file's order and dtype: int64 in Hugging Face's order (input_ids, attention_mask,
        # token_type_ids) from the graph exporter, int32 in ours from MindSpore's.
        self._feeds = [(i.name, np.int64 if i.type == "tensor(int64)" else np.int32)
                       for i in self.session.get_inputs()]
        names = [name for name, _ in self._feeds]
        if sorted(names) != sorted(INPUT_NAMES):
            raise ExportError(f"{path}: graph inputs are {names}; expected {', '.join(INPUT_NAMES)} (in any order)")

    def _run(self, ids, types, mask):
        given = dict(zip(INPUT_NAMES, (ids, types, mask)))
        feeds = {name: given[name].astype(dtype, copy=False) for name, dtype in self._feeds}
        return self.session.run([OUTPUT_NAME], feeds)[0]


class CheckpointRunner(Runner):
    """A .ckpt (with its .json sidecar) rebuilt by load_model, in eval mode; any batch and sequence length."""

    file_format = "CKPT"

    def __init__(self, path: str, device: str = "CPU"):
        meta = read_metadata(path)
        head = dict(meta.get("head") or {"type": "backbone"})
        super().__init__(path, meta, read_model_config(path), head, None, None)
        _use_mindspore_device(device)
        self.net = LogitsOnly(load_model(path))
        self.net.set_train(False)

    def _run(self, ids, types, mask):
        return self.net(Tensor(ids), Tensor(types), Tensor(mask)).asnumpy()


def _check_format(path: str, meta: Dict[str, Any], expected: str) -> None:
    if meta.get("file_format") != expected:
        raise ExportError(f"{path}.json: describes a {meta.get('file_format')} export, but the file name says "
                          f"{expected}")


RUNNERS = {".mindir": MindIRRunner, ".onnx": OnnxRunner, ".ckpt": CheckpointRunner}


def load_runner(path: str, device: str = "CPU", **kwargs: Any) -> Runner:
    """A Runner for `path`, chosen by extension: .mindir (GraphCell), .onnx (onnxruntime), .ckpt (load_model).

    kwargs go to the runner (OnnxRunner takes `threads`, onnxruntime's intra-op thread count).
    """
    device = _device_name(device)
    ext = os.path.splitext(path)[1].lower()
    if ext not in RUNNERS:
        raise ValueError(f"{path}: unknown model file type {ext or '(no extension)'!r}; expected one of "
                         f"{', '.join(RUNNERS)}")
    if not os.path.isfile(path):
        kind = "checkpoint" if ext == ".ckpt" else "exported model"
        raise FileNotFoundError(f"{kind} not found: {path}")
    return RUNNERS[ext](path, device=device, **kwargs)


def median_latencies(paths: Dict[str, str], seq_length: int, repeats: int = 50) -> Dict[str, float]:
    """Median seconds of one batch-1 call of each exported model, after warm-up.

    The models are called in turn (a, b, a, b, ...) so that a change in machine load hits both alike.
    """
    runners = {name: load_runner(path) for name, path in paths.items()}
    ids = np.zeros((1, seq_length), np.int32)
    ids[0, :12] = np.arange(100, 112)  # a 12-token sentence, padded like the dev set
    types, mask = np.zeros_like(ids), (ids > 0).astype(np.int32)
    times = {name: [] for name in runners}
    for i in range(repeats + 3):
        for name, runner in runners.items():
            start = time.perf_counter()
            runner(ids, types, mask)
            if i >= 3:
                times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}
