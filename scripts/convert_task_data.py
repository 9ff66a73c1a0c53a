"""Convert GLUE / CLUE / generic TSV task data into TinyBERT records (MindRecord or TFRecord) + labels.json.

  python scripts/convert_task_data.py --task sst2 --input ../shared/data/glue/SST-2/train.tsv \
      --output data/sst2/train.mindrecord --vocab_file ../shared/data/vocab/bert-base-uncased-vocab.txt
  python scripts/convert_task_data.py --task cluener --input ../shared/data/clue/cluener/dev.json \
      --output data/cluener/dev.mindrecord --vocab_file ../shared/data/vocab/bert-base-chinese-vocab.txt \
      --label_map data/cluener/labels.json
  python scripts/convert_task_data.py --task stsb --input glue/STS-B/train.tsv --output data/stsb/train.mindrecord \
      --vocab_file ../shared/data/vocab/bert-base-uncased-vocab.txt

Tasks: GLUE sst2, mnli, qnli, cola (Matthews correlation), mrpc and qqp (F1), stsb (regression: float32 scores
0..5, Pearson / Spearman) in their official TSV layouts; CLUE tnews, cluener; tsv and label_text for other data.
Prints a summary (rows read / written / skipped / truncated, files). Exit status 1 on a malformed row
unless --skip_bad_rows.
"""
import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from src.data.task_data import TAG_PREFIXES, TASKS, BadRowError, convert_task_data  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True, choices=TASKS, help="input format: GLUE sst2, mnli, qnli, "
                        "cola, mrpc, qqp, stsb (official TSVs); CLUE tnews, cluener; generic tsv, label_text "
                        "(see src/data/task_data.py)")
    parser.add_argument("--input", required=True, help="TSV or JSON-lines file to convert")
    parser.add_argument("--output", required=True, help="records to write, e.g. out/train.mindrecord; "
                        "labels.json goes in the same folder")
    parser.add_argument("--vocab_file", required=True, help="WordPiece vocab.txt")
    parser.add_argument("--max_seq_length", type=int, default=128, help="S, sequence length (default 128)")
    parser.add_argument("--format", choices=["mindrecord", "tfrecord"], default="mindrecord")
    parser.add_argument("--num_shards", type=int, default=1, help="number of output files")
    parser.add_argument("--label_map", help="labels.json of the train split (use it for dev/test of tasks "
                        "whose labels come from the data: tsv, label_text, cluener)")
    parser.add_argument("--no_lower_case", dest="do_lower_case", action="store_false",
                        help="keep case (cased vocab)")
    parser.add_argument("--skip_bad_rows", action="store_true", help="skip and count malformed rows "
                        "instead of stopping at the first")
    parser.add_argument("--tag_scheme", choices=sorted(TAG_PREFIXES), default="bioes", help="cluener tags")
    parser.add_argument("--text_a_col", type=int, default=0, help="tsv: 0-based column of the first text")
    parser.add_argument("--text_b_col", type=int, help="tsv: column of the second text (pairs)")
    parser.add_argument("--label_col", type=int, default=1, help="tsv: column of the label")
    parser.add_argument("--has_header", action="store_true", help="tsv: the first line is a header")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    reader_args = {}
    if args.task == "tsv":
        reader_args = dict(text_a_col=args.text_a_col, text_b_col=args.text_b_col, label_col=args.label_col,
                           has_header=args.has_header)
    try:
        summary = convert_task_data(args.task, args.input, args.output, args.vocab_file, args.max_seq_length,
                                    args.format, args.num_shards, args.label_map, args.do_lower_case,
                                    args.skip_bad_rows, args.tag_scheme, **reader_args)
    except (BadRowError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{args.input}: read {summary.rows_read} rows, wrote {summary.rows_written}, "
          f"skipped {len(summary.skipped)} bad rows, truncated {summary.truncated} over-long examples "
          f"(max_seq_length={args.max_seq_length})")
    for reason in summary.skipped[:20]:
        print(f"  skipped {reason}")
    if len(summary.skipped) > 20:
        print(f"  ... and {len(summary.skipped) - 20} more")
    print(f"files: {', '.join(summary.files)}\nlabels: {summary.labels_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
