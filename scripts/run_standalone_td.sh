#!/usr/bin/env bash
# Task distillation on one device: bash scripts/run_standalone_td.sh [run_task_distill.py arguments ...]
# e.g. bash scripts/run_standalone_td.sh --config td_config/sst2.yaml --phase finetune
#      bash scripts/run_standalone_td.sh --config td_config/sst2.yaml --phase both
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" run_task_distill.py "$@"
