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

# ModelArts' local disk; data goes to /cache/data, checkpoints to /cache/checkpoint. MODELARTS_CACHE moves it (tests,
# other platforms with a moxing module).
CACHE_ROOT = os.environ.get("MODELARTS_CACHE", "/cache")


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

    As the model zoo's moxing_adapter: data_url -> /cache/data, checkpoint_url -> /cache/checkpoint, and train_url
    -> run.output_dir (an earlier attempt's outputs come back, so a restarted job resumes); the first device of
    each node copies, the others wait. Unlike it: a failed copy fails every waiting device at once (no endless
    wait), every rank's log also goes to run.output_dir/logs/rank_<r>.log, and global rank 0 uploads the output
    directory in every case, after a failure too (with the error in the log).

    Usage:  with ModelArtsSync(cfg.run) as sync: ... train ...   (sync.download() may be called earlier, e.g.
    before the zoo's folder flags are expanded; it copies once.)
    """

    def __init__(self, run: RunConfig, env: LocalEnv = None, cache_root: str = CACHE_ROOT):
        self.run = run
        self.env = env or LocalEnv.from_environ()
        self.cache_root = cache_root
        self.local_data = os.path.join(cache_root, "data")
        self.local_checkpoint = os.path.join(cache_root, "checkpoint")
        self.mox = import_moxing() if run.enable_modelarts else None
        self.downloaded = False
        self.log_handler = None

    def _copy(self, src: str, dst: str) -> None:
        logger.info("moxing: copy %s -> %s", src, dst)
        self.mox.file.copy_parallel(src_url=src, dst_url=dst)

    def download(self) -> None:
        """Copy data_url, checkpoint_url and train_url in (once; the first device of each node, the others wait)."""
        if self.mox is None or self.downloaded:
            return
        done = os.path.join(self.cache_root, ".download_done")
        failed = os.path.join(self.cache_root, ".download_failed")
        if self.env.device_id % min(self.env.rank_size, 8) == 0:
            os.makedirs(self.cache_root, exist_ok=True)
            try:
                for url, local in ((self.run.data_url, self.local_data),
                                   (self.run.checkpoint_url, self.local_checkpoint)):
                    if url:
                        self._copy(url, local)
                if self.run.train_url:  # an earlier attempt's outputs, to resume from; none on a first run
                    try:
                        self._copy(self.run.train_url, self.run.output_dir)
                    except Exception as err:  # pylint: disable=broad-except
                        logger.info("moxing: nothing to resume from %s (%s)", self.run.train_url, err)
                os.makedirs(self.local_data, exist_ok=True)
            except Exception as err:
                with open(failed, "w", encoding="utf-8") as f:
                    f.write(f"{type(err).__name__}: {err}\n")
                raise
            with open(done, "w", encoding="utf-8") as f:
                f.write("done\n")
        else:
            import time  # pylint: disable=import-outside-toplevel

            while not os.path.exists(done):
                if os.path.exists(failed):
                    with open(failed, encoding="utf-8") as f:
                        raise RuntimeError(f"ModelArts: the node's first device failed to copy the inputs: "
                                           f"{f.read().strip()}")
                time.sleep(1)
        self.downloaded = True

    def __enter__(self) -> "ModelArtsSync":
        if self.mox is None:
            return self
        self.download()
        folder = os.path.join(self.run.output_dir, "logs")
        os.makedirs(folder, exist_ok=True)
        self.log_handler = logging.FileHandler(os.path.join(folder, f"rank_{self.env.rank_id}.log"), encoding="utf-8")
        self.log_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logging.getLogger().addHandler(self.log_handler)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.mox is None:
            return
        if exc is not None:
            logger.error("run failed: %s: %s", exc_type.__name__, exc, exc_info=(exc_type, exc, tb))
        if self.log_handler is not None:
            logging.getLogger().removeHandler(self.log_handler)
            self.log_handler.close()
        if self.run.train_url and self.env.rank_id == 0:
            self._copy(self.run.output_dir, self.run.train_url)
