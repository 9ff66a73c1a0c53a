#!/usr/bin/env bash
# One command from a fresh clone: set up .venv (scripts/setup.sh), then run the whole TinyBERT pipeline on real
# data on CPU (scripts/demo.py): SST-2 + WikiText-2, all-MiniLM-L6-v2 fine-tuned as the teacher, general
# distillation, data augmentation, task distillation (phase 1 + 2), evaluation, MINDIR export, the offline
# inference chain, predict, and a results table with a PNG of the curves. 10-18 minutes on 2 idle CPU cores.
#
#   bash scripts/quickstart.sh                       # everything (setup options: see scripts/setup.sh)
#   DEMO_ARGS="--data_dir /data --out runs/x" bash scripts/quickstart.sh
#
# Running it again skips what is finished (setup included) and resumes an interrupted training stage.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh "$@"
PY=${VENV:-.venv}/bin/python
# shellcheck disable=SC2086  # DEMO_ARGS is a list of flags on purpose
"$PY" scripts/demo.py ${DEMO_ARGS:-}
