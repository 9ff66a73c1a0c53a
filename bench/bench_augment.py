"""Augmentation throughput (sentences/s) on SST-2 dev sentences: GloVe-only, and the masked-LM path.

  python bench/bench_augment.py [--mlm_checkpoint CKPT --vocab VOCAB] [--sentences 872] [--N 20]

Not a timed test: prints the command, the machine and the figures. The masked-LM path is compared with the
original's strategy (one forward per candidate word, batch size 1) on the first --naive_sentences sentences.
"""
import argparse
import logging
import os
import platform
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")


def machine() -> str:
    import mindspore as ms  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel

    cpu = platform.processor() or platform.machine()
    return (f"{platform.platform()}, {os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, "
            f"MindSpore {ms.__version__}, numpy {np.__version__}")


def timed_run(augmentor, src: str, chunk_size: int) -> dict:
    from src.augment import augment_file  # pylint: disable=import-outside-toplevel

    with tempfile.TemporaryDirectory() as tmp:
        summary = augment_file(src, os.path.join(tmp, "aug.tsv"), augmentor, chunk_size=chunk_size, progress=False)
        with open(os.path.join(tmp, "aug.tsv"), encoding="utf-8") as f:
            summary["rows_written"] = sum(1 for _ in f) - 1
    return summary


def naive_rate(scorer, augmentor, texts) -> float:
    """The original's cost model: every masked copy is its own batch-size-1 forward (no padding buckets)."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    import mindspore as ms  # pylint: disable=import-outside-toplevel
    from src.augment import is_candidate  # pylint: disable=import-outside-toplevel

    ms.set_context(mode=ms.PYNATIVE_MODE)  # one shape per sentence: GRAPH_MODE would compile each
    started = time.time()
    for text in texts:
        words = augmentor.basic.tokenize(text)
        pieces = [scorer.tokenizer.wordpiece.tokenize_word(w) for w in words]
        single = [i for i, w in enumerate(words) if len(pieces[i]) == 1 and is_candidate(w)]
        for _, ids, types, pos in scorer.examples(pieces, single):
            sel = np.zeros((1, len(ids)), np.float32)
            sel[0, pos] = 1.0
            scorer.cell(ms.Tensor([ids], ms.int32), ms.Tensor([types], ms.int32),
                        ms.Tensor([[1] * len(ids)], ms.int32), ms.Tensor(sel)).asnumpy()
    return len(texts) / (time.time() - started)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", default=os.path.join(DATA, "glue", "SST-2", "dev.tsv"))
    parser.add_argument("--glove", default=os.path.join(DATA, "glove", "glove.6B.50d.top10k.txt"))
    parser.add_argument("--sentences", type=int, default=872, help="first N rows of --input")
    parser.add_argument("--N", type=int, default=20, help="copies per sentence (SST-2's default)")
    parser.add_argument("--mlm_checkpoint")
    parser.add_argument("--vocab", default=os.path.join(DATA, "vocab", "bert-base-uncased-vocab.txt"))
    parser.add_argument("--mlm_input", choices=["pair", "single"], default="pair")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--chunk_size", type=int, default=256)
    parser.add_argument("--naive_sentences", type=int, default=20)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import mindspore as ms  # pylint: disable=import-outside-toplevel
    from src import augment as aug  # pylint: disable=import-outside-toplevel

    print("command:", " ".join([os.path.basename(sys.executable)] + sys.argv))
    print("machine:", machine())
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "in.tsv")
        with open(args.input, encoding="utf-8") as f, open(src, "w", encoding="utf-8") as out:
            lines = [line for _, line in zip(range(args.sentences + 1), f)]
            out.writelines(lines)
        glove = aug.load_glove(args.glove)
        s = timed_run(aug.Augmentor(glove, n=args.N), src, args.chunk_size)
        print(f"glove-only : {s['rows_in']} sentences -> {s['rows_written']} rows, {s['seconds']:.2f} s, "
              f"{s['sentences_per_s']:.1f} sentences/s (N={args.N}, M=15, p=0.4)")
        if args.mlm_checkpoint:
            ms.set_context(mode=ms.GRAPH_MODE)
            scorer = aug.load_masked_lm(args.mlm_checkpoint, args.vocab, aug.DEFAULT_M, args.batch_size,
                                        args.mlm_input)
            augmentor = aug.Augmentor(glove, n=args.N, mlm=scorer)
            s = timed_run(augmentor, src, args.chunk_size)
            print(f"masked-LM  : {s['rows_in']} sentences -> {s['rows_written']} rows, {s['seconds']:.2f} s "
                  f"(incl. graph compiles), {s['sentences_per_s']:.1f} sentences/s, {scorer.forwards} forwards "
                  f"of batch {args.batch_size} ({args.mlm_input} input)")
            texts = [line.split("\t")[0] for line in lines[1:args.naive_sentences + 1]]
            print(f"original-style batch-1 forwards (PYNATIVE, {len(texts)} sentences): "
                  f"{naive_rate(scorer, augmentor, texts):.2f} sentences/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
