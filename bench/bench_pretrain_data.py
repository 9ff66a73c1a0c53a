"""Pre-training instances/s: ours vs Google's `python -m bert.create_pretraining_data` on WikiText-2 raw.

  python bench/bench_pretrain_data.py [--dupe_factor 10] [--num_workers 1]

Google's script expects one sentence per line with blank lines between documents, and on WikiText raw (no blank
lines) it would see a single document. Both tools therefore get the same input: WikiText-2 raw turned into that
format by our `wikitext` reader (documents at ` = Title = `, escapes undone, sentences split). Settings are
Google's defaults (max_seq_length 128, masked_lm_prob 0.15, max_predictions_per_seq 20, short_seq_prob 0.1,
seed 12345) and both write one TFRecord file. Each is timed as a whole command (interpreter start, imports,
reading, tokenizing, instances, writing). Our instances are the same as Google's (tests/test_pretrain_data.py
checks it in-process), and the script also compares the two output files row by row.
"""
import argparse
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from src.data.pretrain_data import read_documents  # noqa: E402
from src.data.records import iter_tfrecord  # noqa: E402
from src.data.wiki import write_documents  # noqa: E402

DATA = os.path.join(os.path.dirname(ROOT), "shared", "data")
WIKITEXT = os.path.join(DATA, "corpus", "en", "wikitext-2-raw.wiki.test.raw")
VOCAB = os.path.join(DATA, "vocab", "bert-base-uncased-vocab.txt")
COMPARED = ("input_ids", "input_mask", "segment_ids", "masked_lm_positions", "masked_lm_ids", "masked_lm_weights",
            "next_sentence_labels")  # Google's masked_lm_weights are floats (1.0 == 1), ours int32


def _machine() -> str:
    """CPU model, core count, Python and library versions."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def _run(cmd) -> tuple:
    """(wall-clock seconds, stdout) of a command; stops with its stderr tail if it fails."""
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"command failed (exit code {result.returncode}):\n{result.stderr[-3000:]}")
    return elapsed, result.stdout


def _commands(text: str, tmp: str, args) -> dict:
    settings = ["--max_seq_length=128", "--max_predictions_per_seq=20", "--masked_lm_prob=0.15",
                "--short_seq_prob=0.1", "--random_seed=12345", f"--dupe_factor={args.dupe_factor}"]
    return {
        "google": [sys.executable, "-m", "bert.create_pretraining_data", f"--input_file={text}",
                   f"--output_file={tmp}/google.tfrecord", f"--vocab_file={VOCAB}", "--do_lower_case=True",
                   *settings],
        "ours": [sys.executable, "scripts/create_pretraining_data.py", f"--input_file={text}",
                 f"--output_file={tmp}/ours.tfrecord", f"--vocab_file={VOCAB}", "--format=tfrecord",
                 f"--num_workers={args.num_workers}", *settings],
        "ours (wikitext raw directly)": [sys.executable, "scripts/create_pretraining_data.py",
                                         f"--input_file={WIKITEXT}", "--input_format=wikitext",
                                         f"--output_file={tmp}/raw.mindrecord",
                                         f"--vocab_file={VOCAB}", f"--num_workers={args.num_workers}", *settings],
    }


def _generation_only(text: str, dupe_factor: int) -> None:
    """Read + tokenize + build instances in this process, without writing: where each tool spends its time."""
    import random  # pylint: disable=import-outside-toplevel
    from bert import create_pretraining_data as google, tokenization  # pylint: disable=import-outside-toplevel
    from src.data import pretrain_data as ours  # pylint: disable=import-outside-toplevel
    from src.data.tokenization import BertTokenizer  # pylint: disable=import-outside-toplevel

    tokenization.FLAGS.mark_as_parsed()  # its tokenizer reads FLAGS.preserve_unused_tokens (default False)
    start = time.perf_counter()
    theirs = google.create_training_instances([text], tokenization.FullTokenizer(VOCAB, True), 128, dupe_factor,
                                              0.1, 0.15, 20, random.Random(12345))
    google_s = time.perf_counter() - start
    start = time.perf_counter()
    tok = BertTokenizer(VOCAB)
    docs = ours.tokenize_documents(ours.read_documents([text], "sentences"), tok)
    mine = ours.create_training_instances(docs, ours.PretrainOptions(dupe_factor=dupe_factor),
                                          ours.VocabInfo.from_vocab(tok.vocab), random.Random(12345), progress=False)
    ours_s = time.perf_counter() - start
    print("\ngeneration only, in-process (read + tokenize + instances, no writing):")
    for name, seconds, count in (("google", google_s, len(theirs)), ("ours", ours_s, len(mine))):
        print(f"{name:30s} {seconds:8.2f} {count:10d} {count / seconds:12.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dupe_factor", type=int, default=10)
    parser.add_argument("--num_workers", type=int, default=1, help="our tokenizer processes")
    args = parser.parse_args()
    print(f"machine: {_machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        text = os.path.join(tmp, "wikitext2_test_sentences.txt")
        with open(text, "w", encoding="utf-8") as f:
            docs, sentences = write_documents(read_documents([WIKITEXT], "wikitext"), f)
        print(f"input: {WIKITEXT} -> {docs} documents, {sentences} sentences")
        results = {}
        for name, cmd in _commands(text, tmp, args).items():
            seconds, stdout = _run(cmd)
            # ours prints "wrote N instances to ..."; Google's script prints nothing, so count its records
            count = (int(stdout.split()[1]) if stdout.startswith("wrote ")
                     else sum(1 for _ in iter_tfrecord(os.path.join(tmp, "google.tfrecord"))))
            results[name] = (seconds, count)
        print(f"\n{'tool':30s} {'seconds':>8s} {'instances':>10s} {'instances/s':>12s}")
        for name, (seconds, count) in results.items():
            print(f"{name:30s} {seconds:8.2f} {count:10d} {count / seconds:12.0f}")
        pairs = zip(iter_tfrecord(os.path.join(tmp, "google.tfrecord")),
                    iter_tfrecord(os.path.join(tmp, "ours.tfrecord")))
        same = results["google"][1] == results["ours"][1] and all(
            all(g[k] == o[k] for k in COMPARED) for g, o in pairs)
        print(f"\noutputs identical (columns {', '.join(COMPARED)}): {same}")
        _generation_only(text, args.dupe_factor)


if __name__ == "__main__":
    main()
