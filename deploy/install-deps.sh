#!/usr/bin/env bash
# Installs every Debian 12 package that building, testing and running regtopk needs.
# Idempotent: packages already installed are skipped, and apt is not touched if none is missing.
set -euo pipefail

packages=(
  # toolchain
  build-essential cmake pkg-config ccache git
  # RPC stack
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev
  # training and the torch benchmark baseline; OpenBLAS with OpenMP (the reference BLAS is ~7x
  # slower for LibTorch's matrix products)
  libtorch-dev libopenblas0-openmp zlib1g-dev
  # tests and benchmarks
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  # metrics endpoint; compose-file validation in the tests
  libcpp-httplib-dev docker-compose
  # the multi-host test (network namespaces); a real Prometheus scrape in the tests
  iproute2 prometheus curl
  # data and plots
  dataset-fashion-mnist python3-matplotlib
  # the Python API (pybind11 extension) and its tests: Debian's PyTorch and NumPy
  pybind11-dev python3-dev python3-numpy python3-torch
  # TLS certificates (deploy/make-certs.sh); the sanitizer and thread-safety build and the
  # fuzzers (deploy/check-sanitizers.sh, deploy/fuzz.sh)
  openssl libssl-dev clang libclang-rt-14-dev
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages already installed"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
