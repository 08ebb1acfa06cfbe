#!/usr/bin/env bash
# The layering check (cmake/check_layering.cmake) passes on the tree and fails, naming the file,
# on each kind of forbidden include planted in a copy of it.
set -euo pipefail
root="$1"
check() { cmake -DROOT="$1" -P "$root/cmake/check_layering.cmake" 2>&1; }
check "$root" >/dev/null || { echo "the tree itself fails the layering check:"; check "$root"; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
plant() {  # FILE INCLUDE: a copy of the tree with one bad include must fail, naming FILE
  rm -rf "$tmp/t"; mkdir -p "$tmp/t"
  cp -r "$root/common" "$root/client" "$root/server" "$root/worker" "$tmp/t/"
  echo "#include \"$2\"" >> "$tmp/t/$1"
  if out=$(check "$tmp/t"); then echo "not caught: $1 including $2"; exit 1; fi
  grep -q "$1 includes \"$2\"" <<<"$out" || { echo "message does not name $1: $out"; exit 1; }
}
plant worker/worker_session.h server/coordinator.h
plant server/service.h worker/worker_session.h
plant server/coordinator.cc client/server_client.h
plant client/server_client.h server/coordinator.h
plant common/sparse/sparsifier.h worker/worker_session.h
plant common/wire/sparse_codec.cc grpcpp/grpcpp.h
plant common/optim/sgd.cc regtopk/v1/parameter_server.pb.h
echo "layering: the tree passes and 7 planted violations are caught"
