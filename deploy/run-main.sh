#!/usr/bin/env bash
# The README's main-job command. For now: the in-process simulator reproducing the paper's
# linear-regression result (N = 20 workers, density 0.6): RegTop-k converges, Top-k stalls.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
deploy/build.sh
mkdir -p out
for algorithm in dense topk regtopk; do
  build/bin/regtopk-sim --problem=linreg --algorithm="$algorithm" --density=0.6 --rounds=1500 \
    --output="out/linreg_${algorithm}.jsonl"
done
echo "per-round metrics: out/linreg_{dense,topk,regtopk}.jsonl"
