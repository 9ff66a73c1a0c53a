#!/usr/bin/env bash
# Data-parallel general distillation on GPUs with NCCL, started by mpirun (one process per GPU).
#
#   bash scripts/run_distributed_gd_gpu.sh DEVICE_NUM [run_general_distill.py arguments ...]
#   bash scripts/run_distributed_gd_gpu.sh 8 --config gd_config.yaml
# The model zoo's form works too (told apart by its second argument, an integer):
#   bash scripts/run_distributed_gd_gpu.sh DEVICE_NUM EPOCH_SIZE DATA_DIR SCHEMA_DIR TEACHER_CKPT [CONFIG]
#
# Only the launcher lives here; all training settings live in the YAML and pass through. Rank and world size
# come from mpirun (OMPI_COMM_WORLD_*). Log: ${LOG_DIR:-logs/gd_gpu}/gd.log. Extra mpirun options: MPIRUN_ARGS.
# DRY_RUN=1 prints the mpirun command instead of starting it.
set -euo pipefail
if [ $# -lt 1 ]; then
  sed -n '2,11p' "$0" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
DEVICE_NUM=$1
shift
extra=()
if [ $# -ge 1 ] && [[ $1 =~ ^[0-9]+$ ]]; then  # the model zoo's EPOCH_SIZE DATA_DIR SCHEMA_DIR TEACHER_CKPT [CONFIG]
  [ $# -ge 4 ] || { echo "usage: bash $0 DEVICE_NUM EPOCH_SIZE DATA_DIR SCHEMA_DIR TEACHER_CKPT [CONFIG]" >&2; exit 2; }
  extra=(--epoch_size="$1" --data_dir="$2" --schema_dir="$3" --load_teacher_ckpt_path="$4" --dataset_type=tfrecord
         --device_num="$DEVICE_NUM" --distribute=true)
  [ $# -ge 5 ] && extra+=(--config_path="$5")
  shift $(( $# >= 5 ? 5 : 4 ))
fi
PYTHON=${PYTHON:-python}
TRAIN_SCRIPT=${TRAIN_SCRIPT:-run_general_distill.py}  # scripts/run_distributed_td_*.sh: run_task_distill.py
LOG_DIR=${LOG_DIR:-logs/gd_gpu}
mkdir -p "$LOG_DIR"
# shellcheck disable=SC2206  # MPIRUN_ARGS is a list of options on purpose
cmd=(mpirun --allow-run-as-root -n "$DEVICE_NUM" --output-filename "$LOG_DIR/mpi" --merge-stderr-to-stdout
     ${MPIRUN_ARGS:-} "$PYTHON" "$TRAIN_SCRIPT" --run.device_target=GPU "${extra[@]}" "$@")
if [ "${DRY_RUN:-0}" = 1 ]; then
  echo "${cmd[*]}"
  exit 0
fi
"${cmd[@]}" 2>&1 | tee "$LOG_DIR/gd.log"
exit "${PIPESTATUS[0]}"
