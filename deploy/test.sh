#!/usr/bin/env bash
# The README's test command: installs what is missing, builds, and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/install-deps.sh
deploy/build.sh
deploy/install-python.sh
(cd build && ctest --output-on-failure -j 2 --timeout 600)
# The torch-free targets again, with clang: -Wthread-safety as an error, ASan and UBSan.
deploy/check-sanitizers.sh
