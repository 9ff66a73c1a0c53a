"""Export a fine-tuned or distilled checkpoint for inference (MindSpore model-zoo `export.py`).

    python export.py --checkpoint runs/sst2/student.ckpt --file_format MINDIR --file_name deploy/student \\
        [--batch_size 1] [--seq_length 128] [--dynamic_batch] [--device_target CPU] [--device_id 0]
    python export.py --ckpt_file X.ckpt --file_name Y --file_format MINDIR [--config_path td_config/sst2.yaml]
        (the model zoo's form: batch 32 unless --batch_size says otherwise)

Writes `<file_name>.mindir|.onnx|.air` and `<that file>.json` (shapes, head, config, source checkpoint,
GELU formulation, export check). The checkpoint is loaded strictly from its `.json` sidecar, so the head
(sequence or token classification, masked LM) and its labels come from the checkpoint. Every export is run
once against the MindSpore network before it is kept (--no_verify skips that).

ONNX and exact GELU: MindSpore cannot write ONNX Erf, so exact-GELU models are exported with a marker op
that is rewritten to a real ONNX Erf node (exact, not the tanh approximation). See src/ship/onnx.py.
Exit status: 0 on success, 1 on an export error, 2 on a usage error; errors are one line on stderr.
"""
import argparse
import logging
import os
import sys

os.environ.setdefault("GLOG_v", "3")  # MindSpore C++ logging: errors only

ROOT = os.path.dirname(os.path.abspath(__file__))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


class _OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are a single line (and exit status 2)."""

    def error(self, message):
        self.exit(2, f"error: {message} (see python export.py --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(description="Export a TinyBERT/BERT task checkpoint to MINDIR, ONNX or AIR.")
    parser.add_argument("--checkpoint", help="checkpoint (.ckpt with its .json sidecar)")
    parser.add_argument("--ckpt_file", help="the model zoo's name of --checkpoint (then --batch_size defaults to the "
                                           "zoo's 32)")
    parser.add_argument("--config_path", "--td_config", dest="config_path",
                        help="a task-distillation YAML (ours, or the zoo's td_config_<task>.yaml name): its "
                             "data.seq_length is the default --seq_length and its task.num_labels must match the "
                             "checkpoint's head")
    parser.add_argument("--file_format", required=True, help="MINDIR, ONNX or AIR (AIR needs Ascend + CANN)")
    parser.add_argument("--file_name", required=True,
                        help="output path; the extension (.mindir/.onnx/.air) is added if missing")
    parser.add_argument("--batch_size", type=int, default=None,
                        help="input batch size (default 1; 32 with the zoo's --ckpt_file)")
    parser.add_argument("--seq_length", type=int, default=None,
                        help="input sequence length, at most the model's max_position_embeddings (default: "
                             "data.seq_length of --config_path, else 128)")
    parser.add_argument("--dynamic_batch", action="store_true",
                        help="MINDIR: leave the batch dimension free (ONNX from the default exporter is always "
                             "dynamic in batch and sequence length)")
    parser.add_argument("--onnx_exporter", choices=["graph", "mindspore"], default="graph",
                        help="ONNX: 'graph' (default) writes it from the weights, any batch and sequence length, "
                             "int64 inputs in Hugging Face's order; 'mindspore' traces MindSpore's exporter at the "
                             "fixed [batch_size, seq_length] with int32 inputs (the model zoo's file)")
    parser.add_argument("--device_target", default="CPU", choices=["CPU", "GPU", "Ascend"],
                        help="MindSpore device (default CPU)")
    parser.add_argument("--device_id", type=int, default=0, help="device id (default 0)")
    parser.add_argument("--no_verify", action="store_true",
                        help="do not run the exported file against the MindSpore network")
    parser.add_argument("--verbose", action="store_true", help="log progress")
    return parser


def _size(num_bytes: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if num_bytes < 1024 or unit == "GB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024.0
    return str(num_bytes)


def describe(path: str, meta: dict) -> str:
    """The lines printed after an export."""
    dims = {0: "batch_size", 1: "sequence_length"} if meta.get("onnx_exporter") == "graph" else {0: "B"}

    def shape(entry):
        return "[" + ", ".join(dims.get(i, "?") if d is None else str(d) for i, d in enumerate(entry["shape"])) + "]"

    opset = f", opset {meta['onnx_opset']}" if meta.get("onnx_opset") else ""
    lines = [f"wrote {path} ({_size(meta['file_size'])}, {meta['file_format']}{opset})",
             "  inputs: " + ", ".join(f"{i['name']} {i['dtype']} {shape(i)}" for i in meta["inputs"]),
             "  output: " + ", ".join(f"{o['name']} {o['dtype']} {shape(o)}" for o in meta["outputs"]),
             f"  head: {meta['head']}",
             f"  activation: {meta['gelu']['formulation']}"]
    if meta["gelu"].get("erf_nodes"):
        lines[-1] += f"; {meta['gelu']['erf_nodes']} Erf nodes"
    check = meta.get("verification")
    if check:
        checked = (f"[batch, seq] {check['shapes']}" if meta.get("onnx_exporter") == "graph" and check.get("shapes")
                   else f"batch sizes {check['batch_sizes']}")
        lines.append(f"  check: max |logits - MindSpore network| = {check['max_abs_diff']:.3g} "
                     f"(tolerance {check['tolerance']:.2g}, {checked})")
    else:
        lines.append("  check: not run")
    lines.append(f"  description: {path}.json")
    return "\n".join(lines)


ZOO_BATCH_SIZE = 32  # the model zoo's export.py and preprocess.py batch (DEFAULT_BS)


def resolve_inputs(args) -> tuple:
    """(checkpoint, batch size, sequence length) from ours or the model zoo's flags (--ckpt_file, --config_path)."""
    from src.config import ConfigError, load_config  # pylint: disable=import-outside-toplevel
    from src.model.checkpoint import read_metadata  # pylint: disable=import-outside-toplevel
    from src.training.zoo_flags import resolve_config_path  # pylint: disable=import-outside-toplevel

    if bool(args.checkpoint) == bool(args.ckpt_file):
        raise ConfigError("give the checkpoint once: --checkpoint (or the model zoo's --ckpt_file)")
    flag, checkpoint = ("--checkpoint", args.checkpoint) if args.checkpoint else ("--ckpt_file", args.ckpt_file)
    if not os.path.isfile(checkpoint):
        raise FileNotFoundError(f"{flag}: file not found: {checkpoint}")
    if not os.path.isfile(os.path.splitext(checkpoint)[0] + ".json"):
        raise ConfigError(f"{flag} {checkpoint}: no .json config beside it; a model-zoo checkpoint must be converted "
                          f"first: python scripts/convert_checkpoint.py zoo --input {checkpoint} --preset "
                          f"ms-zoo-tinybert-4l-384 --output OUT.ckpt (see README, Checkpoints and converters)")
    seq_length = args.seq_length
    if args.config_path:
        cfg = load_config(resolve_config_path(args.config_path), kind="td")
        head = read_metadata(checkpoint).get("head") or {}
        expected = 1 if cfg.task.type == "regression" else cfg.task.num_labels
        if "num_labels" in head and int(head["num_labels"]) != expected:
            raise ConfigError(f"--config_path {args.config_path}: task.num_labels is {expected}, but {checkpoint} "
                              f"has {head['num_labels']} labels")
        seq_length = seq_length or cfg.data.seq_length
    batch_size = args.batch_size or (ZOO_BATCH_SIZE if args.ckpt_file else 1)
    return checkpoint, batch_size, seq_length or 128


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    os.environ.setdefault("MS_COMPILER_CACHE_ENABLE", "0")

    import mindspore as ms  # pylint: disable=import-outside-toplevel  (after the flags are known to be valid)
    from src.model.checkpoint import CheckpointError  # pylint: disable=import-outside-toplevel
    from src.config import ConfigError  # pylint: disable=import-outside-toplevel
    from src.ship.export import check_request, export_checkpoint
    from src.ship.format import ExportError, read_export_metadata

    try:
        try:
            # (Only when it differs: MindSpore refuses set_device once its runtime ran, even to the same target.)
            if ms.get_context("device_target") != args.device_target or args.device_target != "CPU":
                ms.set_device(args.device_target, args.device_id)
        except (RuntimeError, ValueError) as err:
            raise ExportError(f"--device_target {args.device_target}: MindSpore cannot use it here "
                              f"({str(err).splitlines()[0]})") from None
        check_request(args.file_format, args.dynamic_batch, args.onnx_exporter)  # format, AIR, dynamic batch
        checkpoint, batch_size, seq_length = resolve_inputs(args)
        path = export_checkpoint(checkpoint, args.file_format, args.file_name, batch_size=batch_size,
                                 seq_length=seq_length, dynamic_batch=args.dynamic_batch, verify=not args.no_verify,
                                 onnx_exporter=args.onnx_exporter)
    except (ExportError, CheckpointError, ConfigError, FileNotFoundError, ValueError) as err:
        # Our messages may list several problems on indented lines: keep them all, on one line.
        message = "; ".join(line.strip() for line in str(err).splitlines() if line.strip())
        print(f"error: {message}", file=sys.stderr)
        return 1
    except RuntimeError as err:  # MindSpore / onnxruntime internals: the first line, the C++ stack is noise
        if args.verbose:
            raise
        first = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
        print(f"error: export failed in MindSpore: {first} (rerun with --verbose for details)", file=sys.stderr)
        return 1
    print(describe(path, read_export_metadata(path)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
