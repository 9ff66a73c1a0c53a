#!/usr/bin/env bash
# Data-parallel general distillation with msrun (MindSpore's launcher: any device; MCCL on CPU).
#
#   bash scripts/run_distributed_gd_msrun.sh WORKER_NUM [run_general_distill.py arguments ...]
#   bash scripts/run_distributed_gd_msrun.sh 2 --config gd_config.yaml --run.device_target=CPU
#
# Environment: MASTER_PORT (default 8118), LOG_DIR (default logs/gd_msrun: scheduler.log, worker_<i>.log).
# On one 2-core CPU this is a correctness check (identical weights on every worker), not a speed-up.
set -euo pipefail
if [ $# -lt 1 ]; then
  sed -n '2,9p' "$0" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
WORKER_NUM=$1
shift
PYTHON=${PYTHON:-python}
TRAIN_SCRIPT=${TRAIN_SCRIPT:-run_general_distill.py}  # scripts/run_distributed_td_*.sh: run_task_distill.py
LAUNCH=(msrun)
command -v msrun >/dev/null || LAUNCH=("$PYTHON" -m mindspore.parallel.cluster.run)
"${LAUNCH[@]}" --worker_num="$WORKER_NUM" --local_worker_num="$WORKER_NUM" --master_addr=127.0.0.1 \
  --master_port="${MASTER_PORT:-8118}" --log_dir="${LOG_DIR:-logs/gd_msrun}" --join=True --cluster_time_out=300 \
  "$TRAIN_SCRIPT" "$@"
