#!/usr/bin/env bash
# Task distillation on one device: bash scripts/run_standalone_td.sh [run_task_distill.py arguments ...]
# e.g. bash scripts/run_standalone_td.sh --config td_config/sst2.yaml --phase finetune
#      bash scripts/run_standalone_td.sh --config td_config/sst2.yaml --phase both
# The model zoo's form works too: a config file first (its td_config_<task>.yaml names map to ours), then any
# model-zoo flags: bash scripts/run_standalone_td.sh td_config/td_config_sst2.yaml [--task_name=SST-2 ...]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -ge 1 ] && [[ $1 != -* ]]; then
  config=$1
  shift
  exec "${PYTHON:-python}" run_task_distill.py --config_path="$config" "$@"
fi
exec "${PYTHON:-python}" run_task_distill.py "$@"
