"""Text corpus -> BERT pre-training records for general distillation (MindRecord or TFRecord, sharded).

  # WikiText-2 raw, MLM-corrupted like the model-zoo GD data, 4 MindRecord shards
  python scripts/create_pretraining_data.py --input_file ../shared/data/corpus/en/wikitext-2-raw.wiki.test.raw \\
      --input_format wikitext --vocab_file ../shared/data/vocab/bert-base-uncased-vocab.txt \\
      --output_file data/gd/wikitext2.mindrecord --num_shards 4
  # Uncorrupted text (TinyBERT v2): --masked_lm_prob 0; TFRecord: --format tfrecord --output_file x.tfrecord

Defaults are Google BERT's (max_seq_length 128, dupe_factor 10, short_seq_prob 0.1, masked_lm_prob 0.15,
max_predictions_per_seq 20, random_seed 12345); see src/data/pretrain_data.py for what each does.
"""
import argparse
import glob
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from src.data.pretrain_data import INPUT_FORMATS, PretrainOptions, create_pretraining_records  # noqa: E402
from src.data.tokenization import BertTokenizer  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input_file", required=True, nargs="+",
                   help="input text files or globs (quote globs); comma-separated lists also work")
    p.add_argument("--input_format", choices=INPUT_FORMATS, default="sentences",
                   help="sentences: one sentence per line, blank line between documents; wikitext: WikiText raw")
    p.add_argument("--output_file", required=True, help="x.mindrecord or x.tfrecord; shards are named from it")
    p.add_argument("--vocab_file", required=True, help="BERT vocab.txt")
    p.add_argument("--no_lower_case", action="store_true", help="keep case (cased vocabularies)")
    p.add_argument("--format", choices=["mindrecord", "tfrecord"], default="mindrecord")
    p.add_argument("--num_shards", type=int, default=1, help="number of output files")
    p.add_argument("--max_seq_length", type=int, default=128)
    p.add_argument("--max_predictions_per_seq", type=int, default=20)
    p.add_argument("--masked_lm_prob", type=float, default=0.15, help="0 disables masked-LM corruption")
    p.add_argument("--do_whole_word_mask", action="store_true", help="mask all ## pieces of a word together")
    p.add_argument("--dupe_factor", type=int, default=10, help="passes over the corpus, each with new randomness")
    p.add_argument("--short_seq_prob", type=float, default=0.1)
    p.add_argument("--random_seed", type=int, default=12345)
    p.add_argument("--num_workers", type=int, default=1, help="tokenizer processes (output does not change)")
    return p


def _expand(patterns):
    """Files of the --input_file arguments; a pattern that matches nothing is an error."""
    files = []
    for pattern in (p for arg in patterns for p in arg.split(",") if p):
        matched = sorted(glob.glob(pattern))
        if not matched:
            raise SystemExit(f"--input_file: {pattern!r} matches no file")
        files.extend(matched)
    return files


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        _run(args)
    except (ValueError, FileNotFoundError, OSError) as err:  # bad options or input: one line, no traceback
        sys.exit(f"error: {err}")


def _run(args) -> None:
    opts = PretrainOptions(max_seq_length=args.max_seq_length, dupe_factor=args.dupe_factor,
                           short_seq_prob=args.short_seq_prob, masked_lm_prob=args.masked_lm_prob,
                           max_predictions_per_seq=args.max_predictions_per_seq,
                           whole_word_mask=args.do_whole_word_mask)
    tokenizer = BertTokenizer(args.vocab_file, do_lower_case=not args.no_lower_case)
    files, count = create_pretraining_records(_expand(args.input_file), args.output_file, tokenizer, opts,
                                              input_format=args.input_format, seed=args.random_seed,
                                              fmt=args.format, num_shards=args.num_shards,
                                              num_workers=args.num_workers)
    print(f"wrote {count} instances to {len(files)} file(s): {', '.join(files)}")


if __name__ == "__main__":
    main()
