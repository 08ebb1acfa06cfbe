#!/usr/bin/env bash
# The torch-free targets built with Debian's clang, with -Wthread-safety as an error (the
# ABSL_GUARDED_BY / ABSL_EXCLUSIVE_LOCKS_REQUIRED annotations are checked) and under ASan and
# UBSan, then their tests run (ctest -LE slow: the crash-recovery tests need LibTorch workers;
# the 100M-parameter session test is left out: under ASan it needs ~8 GB and minutes).
# Part of the README's test command (deploy/test.sh). Output: build-sanitize/.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS="${JOBS:-2}"
FLAGS="-Wthread-safety -Werror=thread-safety -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
CC=clang CXX=clang++ cmake -S . -B build-sanitize -DCMAKE_BUILD_TYPE=Debug \
  -DREGTOPK_WITH_TORCH=OFF -DREGTOPK_WITH_PYTHON=OFF -DREGTOPK_BUILD_BENCHMARKS=OFF \
  -DCMAKE_CXX_FLAGS="$FLAGS" -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" >/dev/null
cmake --build build-sanitize -j "$JOBS"
cd build-sanitize
# detect_leaks: gRPC keeps process-lifetime singletons; ASan's leak check is on all the same.
ASAN_OPTIONS="detect_leaks=1:abort_on_error=1" UBSAN_OPTIONS="print_stacktrace=1" \
  ctest --output-on-failure -j "$JOBS" --timeout 600 -LE slow -E HundredMillion
