#!/usr/bin/env bash
# Installs the Debian 12 packages (and pinned npm tools) that building and testing regtopk need.
# Idempotent: nothing already installed is touched, and apt is not run if nothing is missing.
#   deploy/install-deps.sh          everything the build and the README's test command need
#   deploy/install-deps.sh server   only what building regtopk-server and regtopk-health needs
#                                   (the server image's build stage)
#   deploy/install-deps.sh worker   what building every binary and the Python API needs, without
#                                   the test tools (the worker image's build stage)
# Tools of the longer checks are installed by the scripts that use them (podman and debootstrap
# by deploy/container-test.sh), not here.
set -euo pipefail
cd "$(dirname "$0")/.."
profile="${1:-all}"

server_packages=(
  # toolchain
  build-essential cmake pkg-config ccache
  # RPC stack, TLS, the metrics endpoint, checkpoint compression
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev libssl-dev
  libcpp-httplib-dev zlib1g-dev
)
worker_packages=(
  # training; OpenBLAS with OpenMP (the reference BLAS is ~7x slower for LibTorch's products)
  libtorch-dev libopenblas0-openmp
  # the Python API (pybind11 extension over the same C++ code): Debian's PyTorch and NumPy
  pybind11-dev python3-dev python3-numpy python3-torch
)
test_packages=(
  git
  # tests and benchmarks
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  # compose-file validation; the multi-host test (network namespaces); a real Prometheus scrape
  docker-compose iproute2 prometheus curl
  # the Kubernetes-manifest and Dockerfile checks run on Node (their npm packages below)
  nodejs
  # data and plots
  dataset-fashion-mnist python3-matplotlib
  # TLS certificates (deploy/make-certs.sh); the sanitizer and thread-safety build and the
  # fuzzers (deploy/check-sanitizers.sh, deploy/fuzz.sh)
  openssl clang libclang-rt-14-dev
)

case "$profile" in
  server) packages=("${server_packages[@]}") ;;
  worker) packages=("${server_packages[@]}" "${worker_packages[@]}") ;;
  all) packages=("${server_packages[@]}" "${worker_packages[@]}" "${test_packages[@]}") ;;
  *) echo "install-deps: unknown profile '$profile' (server, worker or all)" >&2; exit 2 ;;
esac
# A Node from another source (e.g. NodeSource's nodejs, which bundles npm) is as good as Debian's.
if [ "$profile" = all ] && command -v node >/dev/null && command -v npm >/dev/null; then
  packages=("${packages[@]/nodejs}")
elif [ "$profile" = all ]; then
  packages+=(npm)
fi

missing=()
for p in "${packages[@]}"; do
  [ -n "$p" ] || continue
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages already installed"
else
  echo "install-deps: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The test suite's npm tools (manifest and Dockerfile checks), pinned in deploy/tools/package.json,
# into .tools/ (ignored by git), so that no test downloads anything. Reinstalled only when the
# pins change.
if [ "$profile" = all ]; then
  if ! cmp -s deploy/tools/package.json .tools/package.json 2>/dev/null \
     || [ ! -d .tools/node_modules ]; then
    echo "install-deps: npm tools (deploy/tools/package.json) into .tools/"
    rm -rf .tools && mkdir -p .tools && cp deploy/tools/package.json .tools/
    npm install --prefix .tools --no-audit --no-fund --silent
  else
    echo "install-deps: npm tools already installed in .tools/"
  fi
fi
