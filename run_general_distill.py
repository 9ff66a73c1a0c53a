"""General distillation (GD): a BERT teacher teaches a TinyBERT student on unlabelled pre-training records.

    python run_general_distill.py --config gd_config.yaml [--gd.lr=1e-4 --data.train_files='[a.mindrecord]' ...]

Re-running the same command resumes an interrupted run (or skips a finished one); --resume RUN_DIR continues the
run in RUN_DIR with the config saved there. Distributed runs: scripts/run_distributed_gd_{ascend,gpu}.sh or
msrun (rank and world size come from the launcher). See README.md, "Training".
"""
import os

os.environ.setdefault("GLOG_v", "3")

import argparse  # noqa: E402
import sys  # noqa: E402

from src.training.cli import add_common_flags, finish, load_for_run, modelarts_sync  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help="GD config YAML (default: gd_config.yaml)")
    add_common_flags(parser)
    args, extra = parser.parse_known_args(argv)
    cfg, runtime, zoo = load_for_run(args, extra, "gd", "gd_config.yaml")
    from src.infra import runtime as rt  # pylint: disable=import-outside-toplevel
    from src.config import ConfigError  # pylint: disable=import-outside-toplevel
    from src.training.manifest import RunDirError  # pylint: disable=import-outside-toplevel
    from src.training.stages import run_general_distill  # pylint: disable=import-outside-toplevel

    try:
        with modelarts_sync(zoo, cfg), rt.profiling(cfg.run, runtime.rank):
            manifest = run_general_distill(cfg, runtime, overwrite=args.overwrite, progress=not args.no_progress)
    except (ConfigError, ValueError, OSError, RunDirError) as err:  # user input: one line, no traceback
        sys.exit(f"error: {err}")
    return finish(cfg.run.output_dir, manifest, runtime)


if __name__ == "__main__":
    sys.exit(main())
