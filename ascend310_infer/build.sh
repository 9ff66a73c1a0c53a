#!/bin/bash
# Build ascend310_infer/out/main (see src/main.cc). Picks the MindSpore C++ API:
#   LITE_HOME set              -> MindSpore Lite cloud inference (MindSpore 2.x), Model::Build(path, kMindIR)
#   else mindspore with headers -> MindSpore 1.x wheel (model zoo style), Serialization::Load + GraphCell
# Needs cmake >= 3.14, g++ >= 7.3 and gflags (e.g. apt-get install libgflags-dev).
set -euo pipefail
cd "$(dirname "$0")"

if [ -n "${LITE_HOME:-}" ]; then
  backend_args=(-DMS_BACKEND=lite "-DLITE_HOME=${LITE_HOME}")
else
  ms_path=$("${PYTHON:-python3}" -c "import os, mindspore; print(os.path.dirname(mindspore.__file__))" 2>/dev/null || true)
  if [ -z "$ms_path" ] || [ ! -f "$ms_path/include/api/model.h" ]; then
    echo "error: no MindSpore C++ inference API found: set LITE_HOME to the unpacked MindSpore Lite" \
         "cloud-inference package (mindspore-lite-<version>-linux-<arch>.tar.gz, MindSpore 2.x), or install a" \
         "MindSpore wheel that ships include/api (1.x). Python used: ${PYTHON:-python3}; mindspore: '${ms_path}'" >&2
    exit 1
  fi
  backend_args=(-DMS_BACKEND=mindspore "-DMINDSPORE_PATH=${ms_path}")
fi

rm -rf out
mkdir out
cd out
cmake .. "${backend_args[@]}"
make -j"$(nproc)"
echo "built $(pwd)/main"
