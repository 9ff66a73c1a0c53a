"""Task distillation (TD): fine-tune the teacher, then distil it into the student in two phases.

    python run_task_distill.py --config td_config/sst2.yaml --phase finetune     # teacher on the labels
    python run_task_distill.py --config td_config/sst2.yaml --phase both         # phase 1 then phase 2
    python run_task_distill.py --config td_config/sst2.yaml --phase eval --checkpoint runs/sst2/phase2

Phases: finetune (--target teacher: the teacher on the labels; --target student: the labels-only student
baseline), 1 (intermediate layers: attention, hidden states, embeddings), 2 (prediction layer: soft
cross-entropy, started from the phase-1 checkpoint named in OUT/phase1/manifest.json), both, eval.
Each stage writes OUT/<stage>/ (manifest.json, metrics.jsonl, last.ckpt, best.ckpt); re-running a command
skips finished stages and resumes interrupted ones. Overrides: --section.key=value.
"""
import os

os.environ.setdefault("GLOG_v", "3")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402

from src.training.cli import add_common_flags, finish, load_for_run, modelarts_sync  # noqa: E402

PHASES = ("finetune", "1", "2", "both", "eval")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help="TD config YAML (default: td_config/sst2.yaml)")
    parser.add_argument("--phase", choices=PHASES, default=None, help="what to run (default: both)")
    parser.add_argument("--target", choices=("teacher", "student"), default="teacher",
                        help="--phase finetune: train the teacher (default) or the labels-only student baseline")
    parser.add_argument("--checkpoint", default="",
                        help="--phase eval: a .ckpt or a run directory (default: OUT/phase2)")
    add_common_flags(parser, "td")
    args, extra = parser.parse_known_args(argv)
    cfg, runtime, zoo = load_for_run(args, extra, "td", "td_config/sst2.yaml")
    zoo_phase = None if zoo.do_train is None else ("both" if zoo.do_train else "eval")
    if args.phase and zoo_phase and args.phase != zoo_phase:
        sys.exit(f"error: --phase {args.phase} contradicts the model zoo's --do_train={str(zoo.do_train).lower()} "
                 f"(= --phase {zoo_phase}); give one of them")
    args.phase = args.phase or zoo_phase or "both"
    args.checkpoint = args.checkpoint or zoo.eval_checkpoint
    from src.training import stages  # pylint: disable=import-outside-toplevel
    from src.training.networks import stage_dirs  # pylint: disable=import-outside-toplevel
    from src.config import ConfigError  # pylint: disable=import-outside-toplevel
    from src.training.manifest import RunDirError  # pylint: disable=import-outside-toplevel
    from src.infra import runtime as rt  # pylint: disable=import-outside-toplevel

    common = dict(overwrite=args.overwrite, progress=not args.no_progress)
    dirs = stage_dirs(cfg)
    try:
        with modelarts_sync(zoo, cfg), rt.profiling(cfg.run, runtime.rank):
            if args.phase == "eval":
                result = stages.run_eval(cfg, args.checkpoint or dirs["phase2"])
                print(json.dumps(result, indent=2))
                return 0
            if args.phase == "finetune":
                manifest = stages.run_finetune(cfg, runtime, args.target, **common)
                return finish(dirs["teacher" if args.target == "teacher" else "student_labels"], manifest, runtime)
            if args.phase in ("1", "both"):
                manifest = stages.run_phase1(cfg, runtime, **common)
                finish(dirs["phase1"], manifest, runtime)
            if args.phase in ("2", "both"):
                manifest = stages.run_phase2(cfg, runtime, **common)
                finish(dirs["phase2"], manifest, runtime)
    except (ConfigError, ValueError, OSError, RunDirError) as err:  # user input: one line, no traceback
        sys.exit(f"error: {err}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
