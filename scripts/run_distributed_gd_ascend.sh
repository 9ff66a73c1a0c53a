#!/usr/bin/env bash
# Data-parallel general distillation on Ascend, one process per device, HCCL with a rank table.
#
#   bash scripts/run_distributed_gd_ascend.sh RANK_SIZE RANK_TABLE_FILE [run_general_distill.py arguments ...]
#   bash scripts/run_distributed_gd_ascend.sh 8 /path/hccl_8p.json --config gd_config.yaml --gd.epochs=3
#
# This script only sets the environment (RANK_TABLE_FILE, RANK_SIZE, DEVICE_ID, RANK_ID) and passes every other
# argument through; all training settings live in the YAML. Multi-node: run it on every node with
# RANK_START=<first rank of the node> (default 0) and the node's devices 0..DEVICES_PER_NODE-1 (default RANK_SIZE).
# Logs: ${LOG_DIR:-logs/gd_ascend}/rank_<id>.log. Only rank 0 writes the run directory.
set -euo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,11p' "$0" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
RANK_SIZE=$1
RANK_TABLE_FILE=$(realpath "$2")
shift 2
[ -f "$RANK_TABLE_FILE" ] || { echo "rank table not found: $RANK_TABLE_FILE" >&2; exit 2; }
PYTHON=${PYTHON:-python}
RANK_START=${RANK_START:-0}
DEVICES_PER_NODE=${DEVICES_PER_NODE:-$RANK_SIZE}
LOG_DIR=${LOG_DIR:-logs/gd_ascend}
mkdir -p "$LOG_DIR"
export RANK_SIZE RANK_TABLE_FILE
CORES=$(nproc)
PER_PROCESS=$(( CORES / DEVICES_PER_NODE > 0 ? CORES / DEVICES_PER_NODE : 1 ))
pids=()
for ((i = 0; i < DEVICES_PER_NODE; i++)); do
  export DEVICE_ID=$i RANK_ID=$((RANK_START + i))
  first=$(( (i * PER_PROCESS) % CORES )); last=$(( first + PER_PROCESS - 1 ))
  pin=()
  command -v taskset >/dev/null && pin=(taskset -c "$first-$last")  # split host cores between the processes
  echo "rank $RANK_ID on device $DEVICE_ID -> $LOG_DIR/rank_$RANK_ID.log"
  "${pin[@]}" "$PYTHON" run_general_distill.py --run.device_target=Ascend "$@" > "$LOG_DIR/rank_$RANK_ID.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
