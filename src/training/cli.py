"""Command-line plumbing shared by run_general_distill.py and run_task_distill.py."""
from __future__ import annotations

import argparse
import difflib
import logging
import os
import sys
from typing import Any, List, Tuple

from src.config import ConfigError, load_config
from src.infra.files import write_json_atomic

logger = logging.getLogger(__name__)


def add_common_flags(parser: argparse.ArgumentParser, kind: str = "gd") -> None:
    parser.add_argument("--resume", metavar="RUN_DIR", default="",
                        help="continue the run in RUN_DIR with the config saved in its manifest.json")
    parser.add_argument("--overwrite", action="store_true",
                        help="start a stage again even if its run directory holds a run with another config")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar (log lines only)")
    parser.add_argument("--verbose", action="store_true", help="debug logging")
    from src.training.zoo_flags import ZOO_FLAGS  # pylint: disable=import-outside-toplevel

    zoo = " ".join(f"--{f.name}" for f in ZOO_FLAGS if kind in f.commands)
    parser.epilog = ("Any config key can be overridden: --section.key=value (e.g. --run.mode=pynative "
                     "--td.phase2.lr=3e-5). Print the resolved config: python -m src.config FILE [--a.b=v]. "
                     f"The model zoo's flags work too (README, \"Coming from the model zoo\"): {zoo}")


def split_command_line(extra: List[str]) -> Tuple[List[str], List[Tuple[str, str]]]:
    """The arguments argparse left: `--section.key=value` overrides, and the model zoo's flat flags
    (`--epoch_size=3`, `--do_shuffle "true"`) as (name, value) pairs (src/training/zoo_flags.py)."""
    from src.training.zoo_flags import ZOO_FLAGS, is_zoo_flag  # pylint: disable=import-outside-toplevel

    overrides, zoo = [], []
    items = list(extra)
    while items:
        item = items.pop(0)
        name = item[2:].split("=", 1)[0] if item.startswith("--") else ""
        if "." in name and "=" in item:
            overrides.append(item)
            continue
        if name and is_zoo_flag(name):
            if "=" in item:
                zoo.append((name, item.split("=", 1)[1]))
                continue
            if items and not items[0].startswith("--"):
                zoo.append((name, items.pop(0)))
                continue
            raise ConfigError(f"command line: --{name} needs a value (--{name}=VALUE)")
        close = difflib.get_close_matches(name, [f.name for f in ZOO_FLAGS], n=1) if name else []
        hint = f" (did you mean the model zoo's --{close[0]}?)" if close else ""
        raise ConfigError(f"command line: unrecognised argument {item!r}{hint}; config overrides look like "
                          f"--section.key=value, model-zoo flags like --epoch_size=3 (README, \"Coming from the "
                          f"model zoo\")")
    return overrides, zoo


def load_for_run(args: argparse.Namespace, extra: List[str], kind: str, default_config: str) -> Tuple[Any, Any, Any]:
    """Config (from --config or the zoo's --config_path, or the manifest of --resume RUN_DIR) with the zoo's flags
    and the overrides applied (overrides last), then the runtime. Returns (config, runtime, zoo translation)."""
    from src.infra import runtime as rt  # pylint: disable=import-outside-toplevel
    from src.training.zoo_flags import run_flags, translate  # pylint: disable=import-outside-toplevel

    rt.configure_logging(verbose=getattr(args, "verbose", False))
    try:
        overrides, zoo_items = split_command_line(extra)
        first = translate(run_flags(zoo_items), kind)  # the config file and run.*: enough for ModelArts' copy
        if args.config and first.config and os.path.abspath(args.config) != first.config:
            raise ConfigError(f"command line: --config {args.config} and the zoo's --config_path {first.config} "
                              f"name different files; give one")
        path = args.config or first.config or default_config
        if args.resume:
            path = _config_from_run(args.resume, kind)
        sync = _modelarts_download(load_config(path, first.overrides + [o for o in overrides if o.startswith(
            "--run.")], kind=kind).run)
        zoo = translate(zoo_items, kind, sync and {"data": sync.local_data, "checkpoint": sync.local_checkpoint})
        for note in zoo.notes:
            logger.info("model-zoo flags: %s", note)
        cfg = load_config(path, zoo.overrides + overrides, kind=kind)
    except (ConfigError, FileNotFoundError, RuntimeError) as err:
        sys.exit(f"error: {err}")
    zoo.modelarts = sync
    if sync is not None:
        sync.run = cfg.run  # uploads run.output_dir to run.train_url at the end
    if cfg.run.data_sink:  # refused on devices by the config check; CPU has no sink mode at all
        logger.warning("run.data_sink (the zoo's --enable_data_sink): MindSpore has no dataset sink mode on CPU; "
                       "steps run one by one")
    runtime = rt.setup(cfg.run)
    _check_world(zoo, runtime)
    if runtime.rank:
        logging.getLogger().setLevel(logging.WARNING)
    return cfg, runtime, zoo


def _modelarts_download(run: Any) -> Any:
    """run.enable_modelarts: the ModelArtsSync that has copied data_url / checkpoint_url / train_url in (before the
    zoo's folder flags are expanded); None otherwise."""
    if not run.enable_modelarts:
        return None
    from src.infra.modelarts import ModelArtsSync  # pylint: disable=import-outside-toplevel

    sync = ModelArtsSync(run)
    sync.download()
    return sync


def modelarts_sync(zoo: Any, cfg: Any) -> Any:
    """The context manager the commands train in: the ModelArtsSync load_for_run started, or a new (inactive
    unless run.enable_modelarts) one."""
    if getattr(zoo, "modelarts", None) is not None:
        return zoo.modelarts
    from src.infra.modelarts import ModelArtsSync  # pylint: disable=import-outside-toplevel

    return ModelArtsSync(cfg.run)


def _check_world(zoo: Any, runtime: Any) -> None:
    """The zoo's --distribute / --device_num against what the launcher started."""
    if zoo.distribute is True and not runtime.distributed:
        sys.exit("error: command line: --distribute=true, but no launcher started several processes (msrun, a rank "
                 "table with RANK_SIZE > 1, or mpirun); use scripts/run_distributed_gd_{ascend,gpu,msrun}.sh")
    if zoo.distribute is False and runtime.distributed:
        sys.exit(f"error: command line: --distribute=false, but the launcher started {runtime.world_size} processes")
    if zoo.device_num is not None and zoo.device_num != runtime.world_size:
        sys.exit(f"error: command line: --device_num={zoo.device_num}, but the launcher started "
                 f"{runtime.world_size} process(es) (RANK_SIZE / msrun --worker_num / mpirun -n)")


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
