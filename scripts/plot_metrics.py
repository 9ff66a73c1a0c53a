"""Plot the loss terms and evaluation scores of one or more runs (their metrics.jsonl) into a PNG.

    python scripts/plot_metrics.py runs/sst2/phase1 runs/sst2/phase2 --output runs/sst2/curves.png

Each argument is a run directory or a metrics.jsonl file. Left: training loss terms per step (log scale);
right: the evaluation score(s) per step, one line per eval set.
"""
import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TERMS = ("loss", "attention", "hidden", "embedding", "prediction", "hard_label")


def read_rows(path):
    """Rows of a metrics.jsonl; a broken line stops with its file:line."""
    path = os.path.join(path, "metrics.jsonl") if os.path.isdir(path) else path
    if not os.path.isfile(path):
        sys.exit(f"error: {path} not found (give a run directory or its metrics.jsonl)")
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    sys.exit(f"error: {path}:{lineno}: not a JSON object ({err})")
    return path, rows


def run_names(paths):
    """A legend name per metrics.jsonl: its run directory's name, with as many parent folders as it takes to tell
    runs apart (td_aug/s1/phase2 and td/s1/phase2, not phase2 twice)."""
    parts = [os.path.dirname(os.path.abspath(p)).split(os.sep) for p in paths]
    for depth in range(1, max(len(x) for x in parts) + 1):
        names = ["/".join(x[-depth:]) for x in parts]
        if len(set(names)) == len(names):
            return names
    return names


def plot(runs, output):
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel

    fig, (ax_loss, ax_eval) = plt.subplots(1, 2, figsize=(13, 4.5))
    any_eval = False
    for name, (path, rows) in zip(run_names([path for path, _ in runs]), runs):
        train = [r for r in rows if r.get("type") == "train"]
        for term in TERMS:
            points = [(r["step"], r[term]) for r in train if r.get(term)]
            if points:  # terms a stage does not use are 0 and are skipped
                xs, ys = zip(*points)
                ax_loss.plot(xs, ys, label=f"{name}: {term}", linewidth=1.8 if term == "loss" else 1.0)
        eval_rows = [r for r in rows if r.get("type") == "eval"]
        any_eval = any_eval or bool(eval_rows)
        sets = sorted({s for r in eval_rows for s in r.get("sets", {})})
        for eval_set in sets:
            points = [(r["step"], r["sets"][eval_set]["score"]) for r in eval_rows if eval_set in r.get("sets", {})]
            xs, ys = zip(*points)
            ax_eval.plot(xs, ys, marker="o", label=f"{name}: {eval_set} {eval_rows[0].get('metric', '')}")
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    ax_loss.set_title("training loss terms")
    ax_loss.legend(fontsize=7)
    ax_eval.set_xlabel("step")
    ax_eval.set_title("evaluation")
    if any_eval:
        ax_eval.legend(fontsize=7)
    else:
        ax_eval.text(0.5, 0.5, "no evaluation in these runs", ha="center", va="center", transform=ax_eval.transAxes)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return output


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run directories or metrics.jsonl files")
    parser.add_argument("--output", required=True, help="PNG to write")
    args = parser.parse_args(argv)
    runs = [read_rows(p) for p in args.runs]
    print(f"wrote {plot(runs, args.output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
