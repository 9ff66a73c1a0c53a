#!/usr/bin/env bash
# Data-parallel general distillation on Ascend, one process per device, HCCL with a rank table.
#
#   bash scripts/run_distributed_gd_ascend.sh RANK_SIZE RANK_TABLE_FILE [run_general_distill.py arguments ...]
#   bash scripts/run_distributed_gd_ascend.sh 8 /path/hccl_8p.json --config gd_config.yaml --gd.epochs=3
# The model zoo's form works too (told apart by its second argument, an integer):
#   bash scripts/run_distributed_gd_ascend.sh DEVICE_NUM EPOCH_SIZE RANK_TABLE_FILE [CONFIG]
#
# This script only sets the environment (RANK_TABLE_FILE, RANK_SIZE, DEVICE_ID, RANK_ID) and passes every other
# argument through; all training settings live in the YAML. Multi-node: run it on every node with
# RANK_START=<first rank of the node> (default 0) and the node's devices 0..DEVICES_PER_NODE-1 (default RANK_SIZE).
# Logs: ${LOG_DIR:-logs/gd_ascend}/rank_<id>.log. Only rank 0 writes the run directory.
# DRY_RUN=1 prints each rank's environment and command instead of starting it.
set -euo pipefail
if [ $# -lt 2 ]; then
  sed -n '2,14p' "$0" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
RANK_SIZE=$1
extra=()
if [[ $2 =~ ^[0-9]+$ ]] && [ ! -f "$2" ]; then  # the model zoo's DEVICE_NUM EPOCH_SIZE RANK_TABLE_FILE [CONFIG]
  [ $# -ge 3 ] || { echo "usage: bash $0 DEVICE_NUM EPOCH_SIZE RANK_TABLE_FILE [CONFIG]" >&2; exit 2; }
  extra=(--epoch_size="$2" --device_num="$1" --distribute=true)
  table=$3
  [ $# -ge 4 ] && extra+=(--config_path="$4")
  shift $(( $# >= 4 ? 4 : 3 ))
else
  table=$2
  shift 2
fi
[ -f "$table" ] || { echo "rank table not found: $table" >&2; exit 2; }
RANK_TABLE_FILE=$(realpath "$table")
PYTHON=${PYTHON:-python}
TRAIN_SCRIPT=${TRAIN_SCRIPT:-run_general_distill.py}  # scripts/run_distributed_td_*.sh: run_task_distill.py
# The rank table must list as many devices as RANK_SIZE (HCCL would hang or fail much later otherwise).
listed=$(python3 - "$RANK_TABLE_FILE" <<'PY' || true
import json, sys
try:
    table = json.load(open(sys.argv[1], encoding="utf-8"))
except (OSError, ValueError) as err:
    sys.exit(f"not valid JSON ({err})")
servers = table.get("server_list") or [s for g in table.get("group_list", []) for s in g.get("instance_list", [])]
print(sum(len(s.get("device", s.get("devices", []))) for s in servers))
PY
)
if ! [[ $listed =~ ^[0-9]+$ ]]; then
  echo "rank table $RANK_TABLE_FILE: $listed" >&2; exit 2
fi
if [ "$listed" != "$RANK_SIZE" ]; then
  echo "rank table $RANK_TABLE_FILE lists $listed devices, but RANK_SIZE/DEVICE_NUM is $RANK_SIZE" >&2; exit 2
fi
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
  cmd=("${pin[@]}" "$PYTHON" "$TRAIN_SCRIPT" --run.device_target=Ascend "${extra[@]}" "$@")
  if [ "${DRY_RUN:-0}" = 1 ]; then
    echo "rank $RANK_ID: DEVICE_ID=$DEVICE_ID RANK_ID=$RANK_ID RANK_SIZE=$RANK_SIZE RANK_TABLE_FILE=$RANK_TABLE_FILE ${cmd[*]}"
    continue
  fi
  echo "rank $RANK_ID on device $DEVICE_ID -> $LOG_DIR/rank_$RANK_ID.log"
  "${cmd[@]}" > "$LOG_DIR/rank_$RANK_ID.log" 2>&1 &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
