"""Export a fine-tuned or distilled checkpoint for inference (MindSpore model-zoo `export.py`).

    python export.py --checkpoint runs/sst2/student.ckpt --file_format MINDIR --file_name deploy/student \\
        [--batch_size 1] [--seq_length 128] [--dynamic_batch] [--device_target CPU] [--device_id 0]

Writes `<file_name>.mindir|.onnx|.air` and `<that file>.json` (shapes, head, config, source checkpoint,
GELU formulation, export check). The checkpoint is loaded strictly from its `.json` sidecar, so the head
(sequence or token classification, masked LM) and its labels come from the checkpoint. Every export is run
once against the MindSpore network before it is kept (--no_verify skips that).

ONNX and exact GELU: MindSpore cannot write ONNX Erf, so exact-GELU models are exported with a marker op
that is rewritten to a real ONNX Erf node (exact, not the tanh approximation). See src/ship/export.py.
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
    parser.add_argument("--checkpoint", required=True, help="checkpoint (.ckpt with its .json sidecar)")
    parser.add_argument("--file_format", required=True, help="MINDIR, ONNX or AIR (AIR needs Ascend + CANN)")
    parser.add_argument("--file_name", required=True,
                        help="output path; the extension (.mindir/.onnx/.air) is added if missing")
    parser.add_argument("--batch_size", type=int, default=1, help="input batch size (default 1)")
    parser.add_argument("--seq_length", type=int, default=128,
                        help="input sequence length, at most the model's max_position_embeddings (default 128)")
    parser.add_argument("--dynamic_batch", action="store_true",
                        help="leave the batch dimension free (MINDIR only)")
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
    def shape(entry):
        return "[" + ", ".join("B" if d is None else str(d) for d in entry["shape"]) + "]"

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
        lines.append(f"  check: max |logits - MindSpore network| = {check['max_abs_diff']:.3g} "
                     f"(tolerance {check['tolerance']:.2g}, batch sizes {check['batch_sizes']})")
    else:
        lines.append("  check: not run")
    lines.append(f"  description: {path}.json")
    return "\n".join(lines)


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
        check_request(args.file_format, args.dynamic_batch)  # format, AIR off Ascend, dynamic batch
        if not os.path.isfile(args.checkpoint):
            raise FileNotFoundError(f"--checkpoint: file not found: {args.checkpoint}")
        path = export_checkpoint(args.checkpoint, args.file_format, args.file_name, batch_size=args.batch_size,
                                 seq_length=args.seq_length, dynamic_batch=args.dynamic_batch,
                                 verify=not args.no_verify)
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
