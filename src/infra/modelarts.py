"""ModelArts support: copy data in from OBS before a run and results out after it, through moxing.

The real `moxing` package exists only inside ModelArts images. (The PyPI package named `moxing` is an unrelated
llama.cpp wrapper: never install it.) It is imported lazily, and only when `run.enable_modelarts` is true.
Off ModelArts, the local adapter reads the device and rank from DEVICE_ID, RANK_ID and RANK_SIZE.
"""
from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass

from src.config import RunConfig

logger = logging.getLogger(__name__)

CACHE_ROOT = "/cache"  # ModelArts' local disk; data goes to /cache/data, checkpoints to /cache/checkpoint


@dataclass(frozen=True)
class LocalEnv:
    """Device and rank from the environment (what the Ascend launch scripts export)."""

    device_id: int
    rank_id: int
    rank_size: int

    @classmethod
    def from_environ(cls, env=None) -> "LocalEnv":
        env = os.environ if env is None else env

        def number(key: str, default: int) -> int:
            value = env.get(key, str(default))
            try:
                return int(value)
            except ValueError:
                raise ValueError(f"environment variable {key}={value!r}: expected an integer") from None

        return cls(number("DEVICE_ID", 0), number("RANK_ID", 0), number("RANK_SIZE", 1))


def import_moxing():
    """The ModelArts moxing module, with an error that explains where it comes from."""
    try:
        return importlib.import_module("moxing")
    except ImportError:
        raise RuntimeError("run.enable_modelarts is true but `moxing` cannot be imported: it exists only inside "
                           "ModelArts training images. Do not `pip install moxing` (that PyPI name is an unrelated "
                           "package); set run.enable_modelarts: false to run locally") from None


class ModelArtsSync:
    """Copy OBS inputs to the local cache before training and the output directory back after it.

    Usage:  with ModelArtsSync(cfg.run) as local: ... train with local paths ...
    """

    def __init__(self, run: RunConfig, env: LocalEnv = None, cache_root: str = CACHE_ROOT):
        self.run = run
        self.env = env or LocalEnv.from_environ()
        self.local_data = os.path.join(cache_root, "data")
        self.local_checkpoint = os.path.join(cache_root, "checkpoint")
        self.mox = import_moxing() if run.enable_modelarts else None

    def _copy(self, src: str, dst: str) -> None:
        logger.info("moxing: copy %s -> %s", src, dst)
        self.mox.file.copy_parallel(src_url=src, dst_url=dst)

    def __enter__(self) -> "ModelArtsSync":
        if self.mox is None:
            return self
        # One copy per server: the first device of each 8-device node downloads, the others wait for the marker.
        marker = os.path.join(self.local_data, ".download_done")
        if self.env.device_id % min(self.env.rank_size, 8) == 0:
            if self.run.data_url:
                self._copy(self.run.data_url, self.local_data)
            if self.run.checkpoint_url:
                self._copy(self.run.checkpoint_url, self.local_checkpoint)
            os.makedirs(self.local_data, exist_ok=True)
            with open(marker, "w", encoding="utf-8") as f:
                f.write("done\n")
        else:
            import time  # pylint: disable=import-outside-toplevel

            while not os.path.exists(marker):
                time.sleep(1)
        return self

    def __exit__(self, *exc) -> None:
        if self.mox is not None and self.run.train_url and self.env.rank_id == 0:
            self._copy(self.run.output_dir, self.run.train_url)
