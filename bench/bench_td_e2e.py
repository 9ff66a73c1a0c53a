"""End-to-end task distillation of SST-2 on CPU: this project's pipeline vs the PyTorch original's approach.

    python bench/bench_td_e2e.py                                            # our fast and slow pipelines
    python bench/bench_td_e2e.py --torch_python /tmp/torchvenv/bin/python   # + the PyTorch original's approach

Workload (both sides, the same): the SST-2 setup of scripts/sst2_minilm.py, i.e. teacher all-MiniLM-L6-v2
fine-tuned on 4,000 SST-2 sentences (made by that script if missing), student 3 layers x 384 started from
teacher layers 2/4/6, phase 1 for 1 epoch + phase 2 for 3 epochs over the same 4,000 records (max_seq_length
64, batch 32, lr 5e-5, warm-up 10%), dev accuracy (872 sentences) after every phase-2 epoch. Pipelines:

  fast     MindSpore, this project's levers for speed: length buckets 16/32/64 (data.bucket_boundaries:
           [16, 32]) in both phases, teacher logits computed once and stored with the records
           for phase 2 (distill.store_teacher_logits, the default), the AOT GELU kernel (run.cpu_gelu: aot, given
           explicitly to both pipelines so the figures do not depend on what auto picked on the machine).
  slow     MindSpore, the original's approach: every batch padded to 64, the teacher in every step.
  pytorch  bench/torch_td.py in the torch venv: the original's approach in plain torch 2.13.

Each MindSpore pipeline is one `run_task_distill.py --phase both` command (the default); its wall-clock time
includes everything a user waits for (process start, graph compiles, the teacher-logit pass, training, evaluations,
checkpoints). Phase 1's share ends when its finished manifest is written. Prints a table, then `RESULT {json}`.
"""
import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

CONFIG = "td_config/sst2_minilm.yaml"
BASE = "runs/sst2_minilm"  # the teacher and the records come from scripts/sst2_minilm.py
PIPELINES = {
    "fast": ["--data.bucket_boundaries=[16,32]", "--distill.store_teacher_logits=true"],
    "slow": ["--data.bucket_boundaries=[]", "--distill.store_teacher_logits=false"],
}


def run(cmd, log):
    start = time.time()
    with open(log, "w", encoding="utf-8") as out:
        done = subprocess.run(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, check=False,
                              env=dict(os.environ, GLOG_v="3"))
    if done.returncode:
        with open(log, encoding="utf-8") as f:
            tail = f.read()[-3000:]
        sys.exit(f"bench: {' '.join(cmd)} failed ({done.returncode}); log {log}:\n{tail}")
    return time.time() - start


def ensure_teacher():
    manifest = os.path.join(ROOT, BASE, "teacher", "manifest.json")
    if os.path.isfile(manifest) and json.load(open(manifest, encoding="utf-8")).get("status") == "finished":
        return
    print("making the teacher: python scripts/sst2_minilm.py --runs teacher", flush=True)
    subprocess.run([sys.executable, "scripts/sst2_minilm.py", "--runs", "teacher"], cwd=ROOT, check=True)


def mindspore_pipeline(name, out_dir, extra):
    run_dir = os.path.join(out_dir, name)
    shutil.rmtree(run_dir, ignore_errors=True)  # from scratch: the teacher-logit store is part of the cost
    os.makedirs(run_dir)
    common = [sys.executable, "run_task_distill.py", "--config", CONFIG, "--no_progress", "--overwrite",
              f"--run.output_dir={run_dir}", f"--checkpoint.teacher={BASE}/teacher", "--run.cpu_gelu=aot"] \
        + PIPELINES[name] + extra
    # One command, `--phase both` (run_task_distill.py's default): what a user runs. Phase 1's share is up to the
    # moment its finished manifest was written.
    start = time.time()
    total = run(common + ["--phase", "both"], os.path.join(run_dir, "both.log"))
    phase1_s = os.path.getmtime(os.path.join(run_dir, "phase1", "manifest.json")) - start
    times = {"phase1": phase1_s, "phase2": total - phase1_s}
    print(f"  {name}: {total:.0f} s (phase 1 {phase1_s:.0f} s, phase 2 {total - phase1_s:.0f} s)", flush=True)
    from src.training.manifest import Manifest  # pylint: disable=import-outside-toplevel

    manifest = Manifest.read(os.path.join(run_dir, "phase2"))
    evals = [json.loads(line) for line in open(os.path.join(run_dir, "phase2", "metrics.jsonl"), encoding="utf-8")
             if '"type": "eval"' in line]
    stored = manifest.teacher_logits or {}
    return {"pipeline": name, "phase1_s": round(times["phase1"], 1), "phase2_s": round(times["phase2"], 1),
            "seconds": round(times["phase1"] + times["phase2"], 1), "teacher_logits_s": stored.get("seconds"),
            "dev_accuracy": [round(e["score"], 4) for e in evals], "final_accuracy": round(evals[-1]["score"], 4),
            "best_accuracy": round(max(e["score"] for e in evals), 4),
            "steps": manifest.total_steps}


def export_for_torch(out_dir):
    """The same records and teacher weights for the torch side, as .npz."""
    import numpy as np  # pylint: disable=import-outside-toplevel

    from src.model.checkpoint import read_checkpoint  # pylint: disable=import-outside-toplevel
    from src.data.dataset import create_tinybert_dataset  # pylint: disable=import-outside-toplevel
    from src.training.stages import teacher_checkpoint  # pylint: disable=import-outside-toplevel
    from src.config import load_config  # pylint: disable=import-outside-toplevel

    cfg = load_config(os.path.join(ROOT, CONFIG), [f"--checkpoint.teacher={BASE}/teacher"], kind="td")
    arrays = {}
    columns = ["input_ids", "input_mask", "segment_ids", "label_ids"]
    for split, files in (("train", cfg.data.train_files), ("dev", cfg.data.eval_files)):
        data = create_tinybert_dataset(list(files), columns, 10 ** 6, cfg.data.seq_length, shuffle=False,
                                       drop_remainder=False)
        batch = next(data.create_dict_iterator(num_epochs=1, output_numpy=True))
        arrays.update({f"{split}_{c}": np.asarray(batch[c]) for c in columns})
    data_path, teacher_path = os.path.join(out_dir, "sst2.npz"), os.path.join(out_dir, "teacher.npz")
    np.savez(data_path, **arrays)
    np.savez(teacher_path, **read_checkpoint(teacher_checkpoint(cfg)))
    return data_path, teacher_path, cfg


def torch_pipeline(torch_python, out_dir):
    data_path, teacher_path, cfg = export_for_torch(out_dir)
    stage1, stage2 = cfg.td.phase1, cfg.td.phase2
    result_path = os.path.join(out_dir, "pytorch.json")
    cmd = [torch_python, os.path.join(ROOT, "bench", "torch_td.py"), "--data", data_path, "--teacher", teacher_path,
           "--out", result_path, "--hidden", str(cfg.student.hidden_size), "--heads",
           str(cfg.student.num_attention_heads), "--ff", str(cfg.student.intermediate_size),
           "--teacher_layers", str(cfg.teacher.num_hidden_layers), "--student_layers",
           str(cfg.student.num_hidden_layers), "--num_labels", str(cfg.task.num_labels), "--batch",
           str(stage1.batch_size), "--phase1_epochs", str(int(stage1.epochs)), "--phase2_epochs",
           str(int(stage2.epochs)), "--lr", str(stage1.lr), "--warmup_ratio", str(stage1.warmup_ratio),
           "--weight_decay", str(stage1.weight_decay), "--temperature", str(cfg.distill.temperature),
           "--seed", str(cfg.run.seed)]
    start = time.time()
    run(cmd, os.path.join(out_dir, "pytorch.log"))
    wall = time.time() - start
    with open(result_path, encoding="utf-8") as f:
        res = json.load(f)
    print(f"  pytorch: {wall:.0f} s", flush=True)
    return {"pipeline": f"pytorch {res['torch']}", "phase1_s": res["phase1"]["seconds"],
            "phase2_s": round(wall - res["phase1"]["seconds"], 1), "seconds": round(wall, 1),
            "teacher_logits_s": None, "dev_accuracy": res["dev_accuracy"], "final_accuracy": res["final_accuracy"],
            "best_accuracy": res["best_accuracy"], "steps": res["phase2"]["steps"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipelines", default="fast,slow", help="ours to run: fast, slow or both (default)")
    parser.add_argument("--torch_python", default="", help="python of a venv with torch: also run the PyTorch side")
    parser.add_argument("--out", default="runs/bench_td_e2e", help="work directory (default runs/bench_td_e2e)")
    parser.add_argument("overrides", nargs="*", help="extra --section.key=value for our pipelines")
    args, extra = parser.parse_known_args()
    os.chdir(ROOT)
    out_dir = os.path.join(ROOT, args.out)
    os.makedirs(out_dir, exist_ok=True)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}, Python "
          f"{platform.python_version()}; load average {os.getloadavg()[0]:.2f}")
    print(f"command: python bench/bench_td_e2e.py {' '.join(sys.argv[1:])}", flush=True)
    ensure_teacher()
    rows = []
    for name in [p for p in args.pipelines.split(",") if p]:
        if name not in PIPELINES:
            parser.error(f"--pipelines: unknown {name!r}; expected fast, slow")
        rows.append(mindspore_pipeline(name, out_dir, args.overrides + extra))
        print("RESULT " + json.dumps(rows[-1]), flush=True)
    if args.torch_python:
        rows.append(torch_pipeline(args.torch_python, out_dir))
        print("RESULT " + json.dumps(rows[-1]), flush=True)
    reference = next((r for r in rows if r["pipeline"].startswith("pytorch")), None)
    slow = next((r for r in rows if r["pipeline"] == "slow"), None)
    print(f"\nSST-2 task distillation, 4,000 sentences, phase 1 1 epoch + phase 2 3 epochs, batch 32, seq 64; "
          f"load average now {os.getloadavg()[0]:.2f}\n")
    print("| pipeline | phase 1 s | phase 2 s | total s | dev acc best / final | vs PyTorch | vs slow |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        vs_torch = f"{reference['seconds'] / row['seconds']:.2f}x" if reference else ""
        vs_slow = f"{slow['seconds'] / row['seconds']:.2f}x" if slow else ""
        print(f"| {row['pipeline']} | {row['phase1_s']:.0f} | {row['phase2_s']:.0f} | {row['seconds']:.0f} | "
              f"{row['best_accuracy']:.4f} / {row['final_accuracy']:.4f} | {vs_torch} | {vs_slow} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
