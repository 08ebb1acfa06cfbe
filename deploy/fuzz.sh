#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/) with Debian's clang under ASan and UBSan and runs
# each for a fixed number of executions (RUNS, default 400000 each: 1.2 million in all), from
# an empty corpus seeded by a few valid encodings. Fails on any crash, leak or sanitizer
# report. Needs a configured build (deploy/build.sh) for the generated protobuf code.
# Usage: deploy/fuzz.sh [RUNS]       Output: build/fuzz/ (binaries, corpora, logs)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${1:-400000}"
OUT=build/fuzz
mkdir -p "$OUT"
[ -f build/proto/regtopk/v1/parameter_server.pb.cc ] || deploy/build.sh
CXX="clang++ -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I. -Ibuild/proto"
ABSL="$(pkg-config --libs absl_status absl_statusor absl_strings absl_str_format absl_synchronization absl_flags)"

build() {  # name sources...
  local name="$1"; shift
  echo "fuzz: building $name"
  $CXX -o "$OUT/$name" "$@" $ABSL ${EXTRA_LIBS:-}
}
build codec_fuzzer tests/fuzz/codec_fuzzer.cc common/wire/sparse_codec.cc common/sparse/sparse_vector.cc
build assembler_fuzzer tests/fuzz/assembler_fuzzer.cc common/wire/chunk_assembler.cc
EXTRA_LIBS="$(pkg-config --libs grpc++ protobuf) -lcrypto" build conversions_fuzzer \
  tests/fuzz/conversions_fuzzer.cc common/rpc/conversions.cc common/job_config.cc \
  common/optim/optimizer.cc common/sparse/sparsifier.cc common/sparse/select.cc \
  common/sparse/sparse_vector.cc build/proto/regtopk/v1/parameter_server.pb.cc

total=0
for f in codec_fuzzer assembler_fuzzer conversions_fuzzer; do
  corpus="$OUT/$f.corpus"
  mkdir -p "$corpus"
  echo "fuzz: running $f for $RUNS executions"
  if ! "$OUT/$f" -runs="$RUNS" -max_len=4096 -seed=1 -artifact_prefix="$OUT/$f-" "$corpus" >"$OUT/$f.log" 2>&1; then
    tail -30 "$OUT/$f.log"
    echo "fuzz: $f FAILED (log: $OUT/$f.log)"
    exit 1
  fi
  done_line=$(grep -E "^#[0-9]+\s+DONE" "$OUT/$f.log" | tail -1)
  echo "fuzz: $f ok: $done_line"
  total=$((total + RUNS))
done
echo "fuzz: all targets passed, $total executions under ASan + UBSan"
