"""Device context, data-parallel setup and logging for the training commands.

Rank and world size come from the runtime, never from a config file:
- msrun / `python -m mindspore.parallel.cluster.run` (any device, MCCL on CPU): MS_WORKER_NUM and MS_ROLE;
- Ascend with a rank table (scripts/run_distributed_gd_ascend.sh): RANK_TABLE_FILE and RANK_SIZE > 1;
- GPU under mpirun (scripts/run_distributed_gd_gpu.sh): OMPI_COMM_WORLD_SIZE > 1.
In each case `mindspore.communication.init()` is called and get_rank() / get_group_size() are used; the
reference's `rank = device_id % device_num` (one node only) is not.
"""
from __future__ import annotations

import logging
import os
import sys
from typing import NamedTuple

import mindspore as ms

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


def configure_logging(rank: int = 0, verbose: bool = False) -> None:
    """Log lines with time and level on stderr; ranks other than 0 only log warnings."""
    level = logging.DEBUG if verbose else (logging.INFO if rank == 0 else logging.WARNING)
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    os.environ.setdefault("GLOG_v", "3")  # MindSpore C++ logging: errors only
