"""Convert BERT checkpoints to this project's MindSpore format (a .ckpt plus its .json config).

  python scripts/convert_checkpoint.py hf  --input DIR_OR_FILE --output out.ckpt
  python scripts/convert_checkpoint.py tf  --input bert_model.ckpt --bert_config bert_config.json --output out.ckpt
  python scripts/convert_checkpoint.py zoo --input zoo.ckpt --preset bert-base-uncased --output out.ckpt

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
    return parser


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
