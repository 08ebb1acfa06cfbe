#!/usr/bin/env bash
# The README's main job: installs what is missing, builds, then trains an MLP on Fashion-MNIST
# with 4 worker processes and one server on this machine, Dirichlet(0.5) label skew, RegTop-k at
# density 1 %. Prints the final test accuracy, the bytes sent against the dense equivalent and
# where the plots are. Extra arguments go to regtopk-launch (see build/bin/regtopk-launch -h).
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
deploy/build.sh
build/bin/regtopk-launch --workers=4 --dataset=fashion-mnist --model=mlp \
  --partition=dirichlet:0.5 --algorithm=regtopk --density=0.01 --mu=5 --lr=0.1 \
  --rounds=2000 --batch-size=64 --eval-every=250 --output=out/main "$@"
