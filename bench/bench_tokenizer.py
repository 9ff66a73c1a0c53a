"""Tokenizer throughput on SST-2 train: ours vs Google's FullTokenizer (and MindSpore's, if asked).

    python bench/bench_tokenizer.py [--repeats 3] [--mindspore]

Each timed run builds a fresh tokenizer, so our per-word cache starts empty (a cold pass over the data);
the "2nd pass" row reuses a tokenizer whose cache is already full, as in a second training epoch.
"""
import argparse
import os
import platform
import shlex
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from src.data.tokenization import BertTokenizer  # noqa: E402

SHARED_DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")
WARMUP_SENTENCES = 1000


def read_sst2(path):
    """Sentences of a GLUE SST-2 tsv (header `sentence<TAB>label`)."""
    with open(path, encoding="utf-8") as f:
        header, *rows = f.read().splitlines()
    if not header.startswith("sentence\t"):
        raise ValueError(f"{path}:1: expected the SST-2 header 'sentence<TAB>label', got {header!r}")
    return [row.split("\t")[0] for row in rows]


def machine_info():
    model = "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"nproc {cpus}, CPU {model}, Python {platform.python_version()}, {platform.platform()}"


def google_factory(vocab):
    """FullTokenizer from bert-tensorflow on TF 2, or None when it cannot be imported."""
    try:
        import tensorflow as tf  # pylint: disable=import-outside-toplevel
        for module in (tf, tf.compat.v1):  # bert-tensorflow 1.0.4 calls the TF1 tf.gfile.GFile
            if not hasattr(module, "gfile"):
                module.gfile = tf.io.gfile
        from absl import flags  # pylint: disable=import-outside-toplevel
        from bert import tokenization  # pylint: disable=import-outside-toplevel
    except ImportError as err:
        print(f"# FullTokenizer skipped: {err}")
        return None
    if not flags.FLAGS.is_parsed():  # FullTokenizer reads FLAGS.preserve_unused_tokens
        flags.FLAGS.mark_as_parsed()
    return lambda: tokenization.FullTokenizer(vocab, do_lower_case=True).tokenize


def mindspore_run(vocab):
    """Whole-dataset run of mindspore.dataset.text.BertTokenizer in a one-worker pipeline."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    import mindspore.dataset as ds  # pylint: disable=import-outside-toplevel
    from mindspore.dataset import text  # pylint: disable=import-outside-toplevel
    tokenizer = text.BertTokenizer(text.Vocab.from_file(vocab), lower_case=True)

    def run(sentences):
        data = ds.NumpySlicesDataset({"text": np.array(sentences)}, shuffle=False)
        for _ in data.map(tokenizer, input_columns=["text"]).create_tuple_iterator(output_numpy=True):
            pass
    return run


def time_runs(make_run, sentences, repeats):
    """Median seconds of `repeats` runs; make_run() gives a fresh callable over all sentences."""
    make_run()(sentences[:WARMUP_SENTENCES])  # warm-up: imports, page cache, allocator
    seconds = []
    for _ in range(repeats):
        run = make_run()
        start = time.perf_counter()
        run(sentences)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def per_sentence(make_tokenize):
    """make_run for a text -> tokens function: a fresh tokenizer per run, called once per sentence."""
    def make_run():
        tokenize = make_tokenize()
        return lambda sentences: [tokenize(sentence) for sentence in sentences]
    return make_run


def benchmarks(vocab, sentences, with_mindspore):
    """(name, make_run) pairs; each make_run() returns a callable over a list of sentences."""
    rows = [("ours (cold word cache)", per_sentence(lambda: BertTokenizer(vocab).tokenize))]
    warm = BertTokenizer(vocab)
    for sentence in sentences:  # fill the cache once, outside the timing
        warm.tokenize(sentence)
    rows.append(("ours (2nd pass, warm cache)", per_sentence(lambda: warm.tokenize)))
    google = google_factory(vocab)
    if google is not None:
        rows.append(("google FullTokenizer", per_sentence(google)))
    if with_mindspore:
        rows.append(("mindspore.dataset.text.BertTokenizer", lambda: mindspore_run(vocab)))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.path.join(SHARED_DATA, "glue", "SST-2", "train.tsv"))
    parser.add_argument("--vocab", default=os.path.join(SHARED_DATA, "vocab", "bert-base-uncased-vocab.txt"))
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per tokenizer; the median is shown")
    parser.add_argument("--mindspore", action="store_true", help="also time mindspore.dataset.text.BertTokenizer")
    args = parser.parse_args(argv)
    print("# command:", shlex.join([sys.executable] + sys.argv))
    print("# machine:", machine_info())
    sentences = read_sst2(args.data)
    print(f"# data: {args.data}; vocab: {args.vocab}; warm-up {WARMUP_SENTENCES} sentences; "
          f"median of {args.repeats} runs")
    print(f"| {'tokenizer':<38} | {'sentences':>9} | {'seconds':>7} | {'sentences/s':>11} |")
    print(f"|{'-' * 40}|{'-' * 10}:|{'-' * 8}:|{'-' * 12}:|")
    for name, make_run in benchmarks(args.vocab, sentences, args.mindspore):
        seconds = time_runs(make_run, sentences, args.repeats)
        print(f"| {name:<38} | {len(sentences):>9,} | {seconds:>7.2f} | {len(sentences) / seconds:>11,.0f} |")


if __name__ == "__main__":
    main()
