#!/bin/bash
# Offline inference of an exported TinyBERT on Ascend 310/310P: preprocess.py -> ascend310_infer (C++) -> postprocess.py.
#
#   bash scripts/run_infer_310.sh MINDIR DATA_FILE TASK_TYPE [DEVICE_ID] [preprocess.py flags ...]
#   bash scripts/run_infer_310.sh MINDIR DATASET_PATH SCHEMA_DIR DATASET_TYPE TASK_NAME ASSESSMENT_METHOD y|n [DEVICE_ID]
#                                 (the model zoo's form, told apart by its 7th argument y or n)
#   bash scripts/run_infer_310.sh deploy/sst2.mindir data/sst2/dev.mindrecord classification 0
#   bash scripts/run_infer_310.sh deploy/cluener.mindir data/cluener/dev.mindrecord ner 0 --labels_file data/cluener/labels.json
#
# MINDIR       file written by export.py; its MINDIR.json gives the batch size and sequence length
# DATA_FILE    eval records (scripts/convert_task_data.py); labels.json is read from beside them
# TASK_TYPE    classification | ner
# DEVICE_ID    Ascend device (default 0)
# Further flags go to preprocess.py unchanged (--labels_file, --metric, --dataset_type, --schema_file, and
# --batch_size for a --dynamic_batch export).
#
# Environment (this script only sets up the environment and passes arguments through):
#   ASCEND_HOME       CANN install (default /usr/local/Ascend); its ascend-toolkit/set_env.sh is sourced
#   LITE_HOME         unpacked MindSpore Lite cloud-inference package (MindSpore 2.x); unset = MindSpore 1.x wheel
#   PYTHON            interpreter (default python3)
#   INFER_OUTPUT_DIR  where everything is written (default ./infer_310): preprocess_Result/, result_Files/,
#                     time_Result/, build.log, infer.log, acc.log, metric.json
#   INFER_RUNNER      "ascend" (default) or "cpu": run scripts/run_infer_cpu.py instead of the C++ program, same
#                     files in and out (the whole chain then runs on a machine without Ascend)
set -euo pipefail

usage() {
  sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 1
}
[ $# -ge 3 ] || usage
need_preprocess=y
if [ $# -ge 7 ] && [ $# -le 8 ] && [[ $7 == y || $7 == n ]]; then
  # The model zoo's form: MINDIR DATASET_PATH SCHEMA_DIR DATASET_TYPE TASK_NAME ASSESSMENT_METHOD NEED_PREPROCESS
  # [DEVICE_ID]. DATASET_PATH may be a folder (its record files, as in the zoo); TASK_NAME CLUENER is NER.
  mindir=$1; data_file=$2; zoo_schema=$3; zoo_type=$4; zoo_task=$5; zoo_method=$6; need_preprocess=$7
  device_id=${8:-0}
  case "$zoo_task" in
    CLUENER) task_type=ner ;;
    SST-2|QNLI|MNLI|TNEWS) task_type=classification ;;
    *) echo "error: TASK_NAME '$zoo_task'; expected SST-2, QNLI, MNLI, TNEWS or CLUENER" >&2; exit 1 ;;
  esac
  case "$zoo_method" in
    accuracy|mf1) metric=accuracy ;;
    bf1) metric=f1 ;;
    *) echo "error: ASSESSMENT_METHOD '$zoo_method'; expected accuracy, bf1 or mf1" >&2; exit 1 ;;
  esac
  [ "$task_type" = ner ] && metric=entity_f1
  if [ -d "$data_file" ]; then
    data_file=$(find "$data_file" -maxdepth 1 -type f -name '*record*' ! -name '*.db' ! -name '*.json' | sort | head -n 1)
    [ -n "$data_file" ] || { echo "error: DATASET_PATH '$2' holds no record file" >&2; exit 1; }
  fi
  zoo_flags=(--dataset_type "$zoo_type" --metric "$metric")
  [ -n "$zoo_schema" ] && [ -f "$zoo_schema" ] && zoo_flags+=(--schema_file "$zoo_schema")
  set -- "${zoo_flags[@]}"
else
  mindir=$1
  data_file=$2
  task_type=$3
  shift 3
  device_id=0
  if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then
    device_id=$1
    shift
  fi
fi
[ -f "$mindir" ] || { echo "error: MINDIR '$mindir' does not exist" >&2; exit 1; }
case "$task_type" in
  classification|ner) ;;
  *) echo "error: TASK_TYPE '$task_type'; expected classification or ner" >&2; exit 1 ;;
esac

root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-python3}
runner=${INFER_RUNNER:-ascend}
out=${INFER_OUTPUT_DIR:-./infer_310}
mkdir -p "$out"
out=$(cd "$out" && pwd)

if [ "$runner" = "ascend" ]; then
  export ASCEND_HOME=${ASCEND_HOME:-/usr/local/Ascend}
  if [ -f "$ASCEND_HOME/ascend-toolkit/set_env.sh" ]; then
    set +u  # CANN's set_env.sh reads variables that may be unset
    # shellcheck disable=SC1091
    source "$ASCEND_HOME/ascend-toolkit/set_env.sh"
    set -u
  elif [ -d "$ASCEND_HOME/ascend-toolkit/latest" ]; then  # older CANN layouts without set_env.sh
    toolkit=$ASCEND_HOME/ascend-toolkit/latest
    export LD_LIBRARY_PATH=$toolkit/lib64:$toolkit/fwkacllib/lib64:$toolkit/atc/lib64:$ASCEND_HOME/driver/lib64:${LD_LIBRARY_PATH:-}
    export PATH=$toolkit/atc/bin:$toolkit/fwkacllib/bin:$toolkit/atc/ccec_compiler/bin:$PATH
    export ASCEND_OPP_PATH=$toolkit/opp
    export TBE_IMPL_PATH=$toolkit/opp/op_impl/built-in/ai_core/tbe
    export PYTHONPATH=$TBE_IMPL_PATH:$toolkit/fwkacllib/python/site-packages:${PYTHONPATH:-}
  else
    echo "error: no Ascend toolkit under ASCEND_HOME=$ASCEND_HOME (set ASCEND_HOME, or INFER_RUNNER=cpu to run on CPU)" >&2
    exit 1
  fi
  if [ -n "${LITE_HOME:-}" ]; then
    export LD_LIBRARY_PATH=$LITE_HOME/runtime/lib:$LITE_HOME/tools/converter/lib:${LD_LIBRARY_PATH:-}
  else
    ms_lib=$("$py" -c "import os, mindspore; print(os.path.join(os.path.dirname(mindspore.__file__), 'lib'))")
    export LD_LIBRARY_PATH=$ms_lib:${LD_LIBRARY_PATH:-}
  fi
elif [ "$runner" != "cpu" ]; then
  echo "error: INFER_RUNNER '$runner'; expected ascend or cpu" >&2
  exit 1
fi

if [ "$need_preprocess" = y ]; then
  echo "== preprocess: $data_file -> $out/preprocess_Result"
  "$py" "$root/preprocess.py" --eval_data_file "$data_file" --task_type "$task_type" --model_file "$mindir" \
    --result_path "$out/preprocess_Result" "$@"
elif [ ! -f "$out/preprocess_Result/meta.json" ]; then
  echo "error: NEED_PREPROCESS n, but $out/preprocess_Result holds no preprocess.py output (meta.json)" >&2
  exit 1
fi

rm -rf "$out/result_Files"
if [ "$runner" = "ascend" ]; then
  echo "== build ascend310_infer (log: $out/build.log)"
  if ! bash "$root/ascend310_infer/build.sh" > "$out/build.log" 2>&1; then
    tail -n 20 "$out/build.log" >&2
    echo "error: building ascend310_infer failed; see $out/build.log" >&2
    exit 1
  fi
  echo "== infer on Ascend device $device_id (log: $out/infer.log)"
  "$root/ascend310_infer/out/main" --mindir_path="$mindir" \
    --input0_path="$out/preprocess_Result/00_input_ids" \
    --input1_path="$out/preprocess_Result/01_token_type_ids" \
    --input2_path="$out/preprocess_Result/02_attention_mask" \
    --result_path="$out/result_Files" --time_file="$out/time_Result/test_perform_static.txt" \
    --device_id="$device_id" 2>&1 | tee "$out/infer.log"
else
  echo "== infer on CPU with scripts/run_infer_cpu.py (log: $out/infer.log)"
  "$py" "$root/scripts/run_infer_cpu.py" --mindir_path "$mindir" --input_path "$out/preprocess_Result" \
    --result_path "$out/result_Files" --time_file "$out/time_Result/time.json" 2>&1 | tee "$out/infer.log"
fi

echo "== postprocess (log: $out/acc.log)"
"$py" "$root/postprocess.py" --preprocess_path "$out/preprocess_Result" --result_path "$out/result_Files" \
  --output "$out/metric.json" 2>&1 | tee "$out/acc.log"
