"""Command-line plumbing shared by run_general_distill.py and run_task_distill.py."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, List, Tuple

from src.config import ConfigError, load_config
from src.infra.files import write_json_atomic

logger = logging.getLogger(__name__)


def add_common_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--resume", metavar="RUN_DIR", default="",
                        help="continue the run in RUN_DIR with the config saved in its manifest.json")
    parser.add_argument("--overwrite", action="store_true",
                        help="start a stage again even if its run directory holds a run with another config")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar (log lines only)")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    parser.epilog = ("Any config key can be overridden: --section.key=value (e.g. --run.mode=pynative "
                     "--td.phase2.lr=3e-5). Print the resolved config: python -m src.config FILE [--a.b=v].")


def _check_overrides(overrides: List[str]) -> None:
    for item in overrides:
        if not item.startswith("--") or "=" not in item:
            raise ConfigError(f"command line: unrecognised argument {item!r}; config overrides look like "
                              f"--section.key=value")


def load_for_run(args: argparse.Namespace, overrides: List[str], kind: str) -> Tuple[Any, Any]:
    """Config (from --config, or the manifest of --resume RUN_DIR) + overrides, then the runtime."""
    from src.infra import runtime as rt  # pylint: disable=import-outside-toplevel

    rt.configure_logging(verbose=getattr(args, "verbose", False))
    try:
        _check_overrides(overrides)
        path = args.config
        if args.resume:
            path = _config_from_run(args.resume, kind)
        cfg = load_config(path, overrides, kind=kind)
    except (ConfigError, FileNotFoundError) as err:
        sys.exit(f"error: {err}")
    runtime = rt.setup(cfg.run)
    if runtime.rank:
        logging.getLogger().setLevel(logging.WARNING)
    return cfg, runtime


def _config_from_run(run_dir: str, kind: str) -> str:
    """Write the full config saved in RUN_DIR/manifest.json (key 'full_config') to a file and return its path."""
    from src.training.manifest import MANIFEST, Manifest, RunDirError  # pylint: disable=import-outside-toplevel

    try:
        manifest = Manifest.read(run_dir)
    except RunDirError as err:
        raise ConfigError(str(err)) from None
    if manifest is None:
        raise FileNotFoundError(f"--resume {run_dir}: no {MANIFEST} there (not a run directory)")
    if not isinstance(manifest.full_config, dict):
        raise ConfigError(f"{os.path.join(run_dir, MANIFEST)}: has no 'full_config'; resume with --config FILE instead")
    path = os.path.join(run_dir, f"resolved_{kind}_config.json")
    write_json_atomic(path, manifest.full_config)
    return path


def finish(run_dir: str, manifest: Any, runtime: Any) -> int:
    """Print what a finished stage (its Manifest) produced."""
    if manifest.student_sha256:
        print(f"rank {runtime.rank}/{runtime.world_size}: student weights sha256 {manifest.student_sha256}",
              flush=True)
    if runtime.rank == 0:
        best, last = manifest.metrics.best, manifest.metrics.last
        print(f"finished {manifest.stage}: {manifest.step} steps "
              f"({manifest.overflow_steps} overflow-skipped) -> {os.path.join(run_dir, 'last.ckpt')}")
        if last:
            print(f"  final eval: {last['metric']} {last['score']:.4f} (step {last['step']})")
        if best:
            print(f"  best eval:  {best['metric']} {best['score']:.4f} (step {best['step']}) -> "
                  f"{os.path.join(run_dir, 'best.ckpt')}")
    return 0
