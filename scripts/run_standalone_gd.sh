#!/usr/bin/env bash
# General distillation on one device: bash scripts/run_standalone_gd.sh [run_general_distill.py arguments ...]
# e.g. bash scripts/run_standalone_gd.sh --config gd_config.yaml --run.device_target=Ascend --run.device_id=0
# Without arguments (the model zoo's form) it runs gd_config.yaml; model-zoo flags pass through as well.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" run_general_distill.py "$@"
