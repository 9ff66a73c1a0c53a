#!/usr/bin/env bash
# Data-parallel general distillation on GPUs with NCCL, started by mpirun (one process per GPU).
#
#   bash scripts/run_distributed_gd_gpu.sh DEVICE_NUM [run_general_distill.py arguments ...]
#   bash scripts/run_distributed_gd_gpu.sh 8 --config gd_config.yaml
#
# Only the launcher lives here; all training settings live in the YAML and pass through. Rank and world size
# come from mpirun (OMPI_COMM_WORLD_*). Log: ${LOG_DIR:-logs/gd_gpu}/gd.log. Extra mpirun options: MPIRUN_ARGS.
set -euo pipefail
if [ $# -lt 1 ]; then
  sed -n '2,8p' "$0" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
DEVICE_NUM=$1
shift
PYTHON=${PYTHON:-python}
LOG_DIR=${LOG_DIR:-logs/gd_gpu}
mkdir -p "$LOG_DIR"
# shellcheck disable=SC2086
mpirun --allow-run-as-root -n "$DEVICE_NUM" --output-filename "$LOG_DIR/mpi" --merge-stderr-to-stdout ${MPIRUN_ARGS:-} \
  "$PYTHON" run_general_distill.py --run.device_target=GPU "$@" 2>&1 | tee "$LOG_DIR/gd.log"
exit "${PIPESTATUS[0]}"
