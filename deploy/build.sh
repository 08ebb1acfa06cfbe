#!/usr/bin/env bash
# Configures and builds regtopk into build/ (Release; binaries in build/bin/). Two jobs by
# default: a LibTorch translation unit needs ~1.2 GB of memory. Override with JOBS=N.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS="${JOBS:-2}"
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build build -j "$JOBS"
