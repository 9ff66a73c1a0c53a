"""Convert BERT checkpoints to this project's MindSpore format (a .ckpt plus its .json config).

  python scripts/convert_checkpoint.py hf  --input DIR_OR_FILE --output out.ckpt
  python scripts/convert_checkpoint.py tf  --input bert_model.ckpt --bert_config bert_config.json --output out.ckpt
  python scripts/convert_checkpoint.py zoo --input zoo.ckpt --preset bert-base-uncased --output out.ckpt
  python scripts/convert_checkpoint.py to-hf --input runs/sst2/phase2 --output hf/sst2   # ours -> Hugging Face

Run a subcommand with --help for its options.
"""
import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from src.model.checkpoint import CheckpointError  # noqa: E402
from src.data.vocab import VocabMismatch  # noqa: E402
from src.config import MODEL_PRESETS, ConfigError, bert_config_from_dict, parse_override, read_mapping  # noqa: E402
from src.model.heads import HEADS  # noqa: E402


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--vocab_file", help="the model's vocab.txt: its fingerprint goes into the .json, so "
                        "converters, trainers and predict.py refuse another vocabulary (default for hf and tf: "
                        "vocab.txt beside the weights / bert_config, if there)")
    parser.add_argument("--output", required=True, help="checkpoint to write (.ckpt); the .json goes beside it")
    parser.add_argument("--head", choices=sorted(HEADS), help="network to convert into (default: inferred "
                        "from the tensors: classifier -> sequence_classification, MLM head -> masked_lm)")
    parser.add_argument("--num_labels", type=int, help="classifier size, checked against the checkpoint")
    parser.add_argument("--pooled_activation", choices=["relu", "none"],
                        help="sequence classifier on ReLU(pooled) (TinyBERT) or on pooled (BERT)")
    parser.add_argument("--allow_missing", action="append", default=[], metavar="PATTERN",
                        help="glob of our parameter names that may be absent from the source and are then "
                             "freshly initialised (recorded in the .json), e.g. 'bert.pooler.*'; repeatable")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="source", required=True)
    hf = sub.add_parser("hf", help="Hugging Face BERT (model.safetensors or pytorch_model.bin + config.json)")
    hf.add_argument("--input", required=True, help="model folder, or the weights file itself")
    hf.add_argument("--config", help="config.json (default: next to the weights)")
    tf = sub.add_parser("tf", help="Google TF BERT checkpoint (needs the optional TensorFlow extra)")
    tf.add_argument("--input", required=True, help="checkpoint prefix (e.g. .../bert_model.ckpt) or its folder")
    tf.add_argument("--bert_config", required=True, help="bert_config.json of the checkpoint")
    zoo = sub.add_parser("zoo", help="MindSpore model-zoo BERT / TinyBERT / hub checkpoint (.ckpt)")
    zoo.add_argument("--input", required=True, help="zoo .ckpt file")
    group = zoo.add_mutually_exclusive_group(required=True)
    group.add_argument("--preset", choices=sorted(MODEL_PRESETS), help="architecture of the checkpoint")
    group.add_argument("--config", help="JSON or YAML file with BertConfig fields")
    zoo.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override a BertConfig field; zoo models default to hidden_act=gelu_tanh and "
                          "layer_norm_eps=1e-7 (what the zoo code computes)")
    for p in (hf, tf, zoo):
        _common(p)
    out = sub.add_parser("to-hf", help="our checkpoint or finished run directory -> Hugging Face model folder "
                                       "(config.json, model.safetensors, vocab.txt, tokenizer files)")
    out.add_argument("--input", required=True, help=".ckpt (with its .json) or a finished run directory (its "
                     "best checkpoint, else last)")
    out.add_argument("--output", required=True, help="folder to write (must be absent or empty)")
    out.add_argument("--vocab_file", help="the model's vocab.txt (default: the one its .json names); checked "
                     "against the recorded fingerprint")
    out.add_argument("--labels_file", help="labels.json of the task (default for a run directory: the task's "
                     "labels, else LABEL_0, LABEL_1, ...)")
    out.add_argument("--head", choices=["backbone"], help="write only the encoder and pooler (as BertModel), e.g. "
                     "for a TinyBERT classifier on ReLU(pooled), which no HF class computes")
    out.add_argument("--cased", action="store_true", help="tokenizer keeps case (do_lower_case false)")
    out.add_argument("--overwrite", action="store_true", help="replace a non-empty --output folder")
    out.add_argument("--no_verify", action="store_true", help="skip the check with transformers (run by default "
                     "when torch and transformers are installed: requirements-hf.txt)")
    return parser


def _run_labels(run_dir: str):
    """The task labels of a finished run directory (from the config saved in its manifest), or None."""
    from src.config import config_from_mapping  # pylint: disable=import-outside-toplevel
    from src.training.manifest import MANIFEST, Manifest  # pylint: disable=import-outside-toplevel
    from src.training.networks import label_names  # pylint: disable=import-outside-toplevel

    manifest = Manifest.read(run_dir)
    full = manifest.full_config if manifest is not None else None
    if not isinstance(full, dict) or "task" not in full:
        return None
    return label_names(config_from_mapping(full, "td", os.path.join(run_dir, MANIFEST)))


def _to_hf(args: argparse.Namespace):
    from src.ship.hf import write_hf_folder  # pylint: disable=import-outside-toplevel
    from src.training.manifest import resolve_stage_checkpoint  # pylint: disable=import-outside-toplevel

    labels = None
    if args.labels_file:
        from src.data.task_data import load_label_map  # pylint: disable=import-outside-toplevel
        labels = load_label_map(args.labels_file)
    elif os.path.isdir(args.input):
        labels = _run_labels(args.input)
    checkpoint = resolve_stage_checkpoint(args.input, "auto") if os.path.isdir(args.input) else args.input
    return write_hf_folder(checkpoint, args.output, vocab_file=args.vocab_file, labels=labels, head=args.head,
                           do_lower_case=not args.cased, overwrite=args.overwrite,
                           verify=False if args.no_verify else None)


def _zoo_config(args: argparse.Namespace):
    from src.model.convert import ZOO_MODEL_DEFAULTS  # pylint: disable=import-outside-toplevel
    if args.preset:
        fields = dict(MODEL_PRESETS[args.preset], **ZOO_MODEL_DEFAULTS)
        where = f"--preset {args.preset}"
    else:
        data = read_mapping(args.config, "a mapping of BertConfig fields")
        fields = dict(ZOO_MODEL_DEFAULTS, **data)
        where = args.config
    for item in args.set:
        key, value = parse_override(item)
        fields[key] = value
    return bert_config_from_dict(fields, where)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    from src.model import convert  # pylint: disable=import-outside-toplevel
    if args.source == "to-hf":
        from src.ship.hf import HFExportError  # pylint: disable=import-outside-toplevel
        from src.training.manifest import RunDirError  # pylint: disable=import-outside-toplevel
        try:
            out, check = _to_hf(args)
        except (CheckpointError, ConfigError, FileNotFoundError, HFExportError, RunDirError, VocabMismatch,
                ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"wrote {out}: " + ", ".join(sorted(os.listdir(out))))
        if "skipped" in check:
            print(f"  check: skipped ({check['skipped']})")
        else:
            print(f"  check: max |transformers {check['class']} - ours| = {check['max_abs_diff']:.2e} on "
                  f"{', '.join(check['compared'])} (tolerance 1e-4, transformers {check['transformers']}, "
                  f"[batch, seq] {check['shapes']})")
        return 0
    common = dict(head=args.head, num_labels=args.num_labels, pooled_activation=args.pooled_activation,
                  allow_missing=args.allow_missing, vocab_file=args.vocab_file)
    try:
        if args.source == "hf":
            out = convert.convert_hf(args.input, args.output, config_file=args.config, **common)
        elif args.source == "tf":
            out = convert.convert_tf(args.input, args.bert_config, args.output, **common)
        else:
            out = convert.convert_zoo(args.input, _zoo_config(args), args.output, **common)
    except (CheckpointError, ConfigError, FileNotFoundError, ImportError, VocabMismatch) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out} and {os.path.splitext(out)[0]}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
