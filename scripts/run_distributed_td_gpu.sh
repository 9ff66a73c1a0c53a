#!/usr/bin/env bash
# Data-parallel task distillation (fine-tuning, phase 1, phase 2), launched like general distillation:
#
#   bash scripts/run_distributed_td_gpu.sh DEVICE_NUM [run_task_distill.py arguments ...]
#   bash scripts/run_distributed_td_gpu.sh 8 --config td_config/sst2.yaml --phase both
#
# Every rank reads the same global batches (batch_size x world size rows, same shuffle and length buckets) and
# trains on its slice; the losses are normalised over the global batch, so N workers with batch B train like one
# with batch N x B. Only rank 0 evaluates and writes. See scripts/run_distributed_gd_gpu.sh for the environment.
set -euo pipefail
if [ $# -lt 1 ]; then
  sed -n '2,9p' "$0" >&2
  exit 2
fi
TRAIN_SCRIPT=run_task_distill.py exec bash "$(dirname "$0")/run_distributed_gd_gpu.sh" "$@"
