"""Device context, data-parallel setup and logging for the training commands.

Rank and world size come from the runtime, never from a config file:
- msrun / `python -m mindspore.parallel.cluster.run` (any device, MCCL on CPU): MS_WORKER_NUM and MS_ROLE;
- Ascend with a rank table (scripts/run_distributed_gd_ascend.sh): RANK_TABLE_FILE and RANK_SIZE > 1;
- GPU under mpirun (scripts/run_distributed_gd_gpu.sh): OMPI_COMM_WORLD_SIZE > 1.
In each case `mindspore.communication.init()` is called and get_rank() / get_group_size() are used; the
reference's `rank = device_id % device_num` (one node only) is not.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Dict, List, NamedTuple

import mindspore as ms
import numpy as np

from src.config import RunConfig

logger = logging.getLogger(__name__)


class Runtime(NamedTuple):
    rank: int
    world_size: int
    device_target: str
    graph: bool

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes checkpoints, manifests and metrics."""
        return self.rank == 0

    def rank_mean(self, values: np.ndarray) -> np.ndarray:
        """Data parallel: the mean of `values` (float) over the ranks; every rank must call it at the same point."""
        if not self.distributed:
            return np.asarray(values)
        total = ms.ops.AllReduce()(ms.Tensor(np.asarray(values, np.float32))).asnumpy()
        return total.astype(np.float64) / self.world_size

    def barrier(self) -> None:
        """Data parallel: wait until every rank is here (e.g. rank 0 has written a stage's manifest); no-op alone.
        An all-reduce of one number: the Barrier op has no CPU kernel (MindSpore 2.10)."""
        self.rank_mean(np.ones((1,), np.float32))


def launched_distributed(env=None) -> bool:
    """True when a distributed launcher started this process."""
    env = os.environ if env is None else env
    # msrun starts a scheduler (MS_SCHED) and the workers (MS_WORKER) with the same command; each must call init().
    if env.get("MS_ROLE") in ("MS_WORKER", "MS_SCHED") and int(env.get("MS_WORKER_NUM", "1")) > 1:
        return True
    if env.get("RANK_TABLE_FILE") and int(env.get("RANK_SIZE", "1")) > 1:
        return True
    return int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1


def setup(run: RunConfig) -> Runtime:
    """Set the device and execution mode, initialise communication when launched distributed, seed."""
    device_id = int(os.environ.get("DEVICE_ID", run.device_id))
    if run.device_target == "CPU":
        ms.set_device("CPU")
    else:
        ms.set_device(run.device_target, device_id)
    graph = run.mode == "graph"
    ms.set_context(mode=ms.GRAPH_MODE if graph else ms.PYNATIVE_MODE)
    rank, world = 0, 1
    if launched_distributed():
        from mindspore.communication import get_group_size, get_rank, init  # pylint: disable=import-outside-toplevel

        init()
        rank, world = get_rank(), get_group_size()
        ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True,
                                     device_num=world)
        logger.info("data parallel: rank %d of %d on %s", rank, world, run.device_target)
    # Same seed on every rank: the student starts identical everywhere (nothing is broadcast).
    ms.set_seed(run.seed)
    return Runtime(rank, world, run.device_target, graph)


@contextlib.contextmanager
def profiling(run: RunConfig, rank: int = 0):
    """run.enable_profiling: the MindSpore profiler around the block, written to OUTPUT_DIR/profile/rank_R.

    On exit the data is analysed (MindSpore's own parser) and the operator types that took the most time are
    logged (from the profiler's cpu_op_type_info_*.csv on CPU); open the trace_view.json in chrome://tracing.
    """
    if not run.enable_profiling:
        yield None
        return
    from mindspore import Profiler  # pylint: disable=import-outside-toplevel

    out = os.path.join(run.output_dir, "profile", f"rank_{rank}")
    os.makedirs(out, exist_ok=True)
    profiler = Profiler(output_path=out)
    logger.info("profiling to %s", out)
    try:
        yield profiler
    finally:
        profiler.analyse()
        for line in summarize_op_types(out):
            logger.info("profile: %s", line)


def summarize_op_types(folder: str, top: int = 12) -> List[str]:
    """'<op type>: <total ms> (<share>%), <calls> calls' lines from the profiler's CPU op-type tables."""
    import csv  # pylint: disable=import-outside-toplevel
    import glob  # pylint: disable=import-outside-toplevel

    totals: Dict[str, List[float]] = {}
    for path in glob.glob(os.path.join(folder, "**", "cpu_op_type_info_*.csv"), recursive=True):
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                row = {k.strip().lower(): v for k, v in row.items() if k}
                name = row.get("op_type")
                time_key = next((k for k in row if k.startswith("total_compute_time")), None)
                if not name or time_key is None:
                    continue
                entry = totals.setdefault(name, [0.0, 0.0])
                entry[0] += float(row[time_key] or 0)
                entry[1] += float(row.get("type_occurrences") or 0)
    grand = sum(t for t, _ in totals.values()) or 1.0
    ranked = sorted(totals.items(), key=lambda kv: -kv[1][0])[:top]
    return [f"{name}: {t:.1f} ms ({100 * t / grand:.1f}%), {int(n)} kernels" for name, (t, n) in ranked]


def configure_logging(rank: int = 0, verbose: bool = False) -> None:
    """Log lines with time and level on stderr; ranks other than 0 only log warnings."""
    level = logging.DEBUG if verbose else (logging.INFO if rank == 0 else logging.WARNING)
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    os.environ.setdefault("GLOG_v", "3")  # MindSpore C++ logging: errors only
