#!/usr/bin/env bash
# Multi-host without Docker: a server and two workers, each in its own network namespace, joined
# by a bridge in a fourth namespace, on test addresses this script creates (10.77.0.0/24, only
# inside those namespaces). Proves nothing assumes localhost, and that the job runs over mutual
# TLS across hosts: certificates from deploy/make-certs.sh, each worker's id bound to its
# certificate (another worker's certificate, none, or plaintext is refused, each with its own
# error), the health check answering without one. Needs root (CI runs as root);
# skips (exit 77) where namespaces are not permitted. Cleans up on every exit.
# Usage: netns_test.sh BIN_DIR
set -euo pipefail
bin="$1"
tag="rtk$$"
hub="${tag}h" srv="${tag}s" w0="${tag}a" w1="${tag}b"
tmp="$(mktemp -d)"
pids=()

cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for ns in "$srv" "$w0" "$w1" "$hub"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

if ! command -v ip >/dev/null || ! ip netns add "$hub" 2>/dev/null; then
  echo "SKIP: network namespaces are not permitted here (needs root and iproute2)"
  exit 77
fi
ip -n "$hub" link add br0 type bridge
ip -n "$hub" link set br0 up
i=1
for ns in "$srv" "$w0" "$w1"; do
  ip netns add "$ns"
  ip link add "${ns}e" netns "$ns" type veth peer name "${ns}p" netns "$hub"
  ip -n "$hub" link set "${ns}p" master br0 up
  ip -n "$ns" addr add "10.77.0.$i/24" dev "${ns}e"
  ip -n "$ns" link set "${ns}e" up
  ip -n "$ns" link set lo up
  i=$((i + 1))
done

certs="$tmp/certs"
"$(dirname "$0")/../../deploy/make-certs.sh" "$certs" 2 10.77.0.1 >/dev/null
ip netns exec "$srv" "$bin/regtopk-server" --host=10.77.0.1 --port=50051 --workers=2 \
  --tls-cert="$certs/server.pem" --tls-key="$certs/server.key" --tls-ca="$certs/ca.pem" \
  --algorithm=regtopk --density=0.6 --mu=4 --lr=0.01 --rounds=60 --digest-every=10 \
  --linger-seconds=0 --log-every=0 >"$tmp/server.out" 2>"$tmp/server.err" &
pids+=($!)
server_pid=$!
for _ in $(seq 100); do grep -q "listening" "$tmp/server.out" 2>/dev/null && break; sleep 0.1; done
grep -q "listening on 10.77.0.1:50051 (mutual TLS)" "$tmp/server.out" || { cat "$tmp/server.out" "$tmp/server.err"; exit 1; }

# From another host, the server is reachable at its own address only.
if ip netns exec "$w0" "$bin/regtopk-health" --server=127.0.0.1:50051 --tls-ca="$certs/ca.pem" \
    --timeout-seconds=1 2>/dev/null; then
  echo "FAIL: the server answered on the worker's localhost"; exit 1
fi
# The health check needs TLS but no client certificate.
ip netns exec "$w0" "$bin/regtopk-health" --server=10.77.0.1:50051 --tls-ca="$certs/ca.pem"

# Refused, each with the error that names why: worker 1's certificate claiming worker 0, no
# client certificate, plaintext.
refused() {  # expected-text worker-flags...
  local want="$1"; shift
  if ip netns exec "$w0" "$bin/regtopk-worker" --server=10.77.0.1:50051 --worker-id=0 \
      --dataset=linreg --model=linear --reconnect-timeout-seconds=2 --log-every=0 "$@" \
      2>"$tmp/refused.err"; then
    echo "FAIL: a worker with $* was let in"; exit 1
  fi
  grep -q "$want" "$tmp/refused.err" || { echo "FAIL: expected '$want':"; cat "$tmp/refused.err"; exit 1; }
}
refused "PERMISSION_DENIED.*worker 1 cannot act as worker 0" --tls-ca="$certs/ca.pem" \
  --tls-cert="$certs/worker-1.pem" --tls-key="$certs/worker-1.key"
refused "UNAUTHENTICATED.*no client certificate" --tls-ca="$certs/ca.pem"
refused "UNAVAILABLE"

for w in 0 1; do
  ns="$w0"; [ "$w" = 1 ] && ns="$w1"
  ip netns exec "$ns" "$bin/regtopk-worker" --server=10.77.0.1:50051 --worker-id="$w" \
    --tls-ca="$certs/ca.pem" --tls-cert="$certs/worker-$w.pem" --tls-key="$certs/worker-$w.key" \
    --dataset=linreg --model=linear --metrics="$tmp/w$w.jsonl" 2>"$tmp/w$w.err" &
  pids+=($!)
done
status=0
for p in "${pids[@]:1}"; do wait "$p" || status=1; done
[ "$status" = 0 ] || { cat "$tmp"/w*.err; echo "FAIL: a worker failed"; exit 1; }
wait "$server_pid" || { cat "$tmp/server.err"; echo "FAIL: the server failed"; exit 1; }

for w in 0 1; do
  lines=$(wc -l <"$tmp/w$w.jsonl")
  [ "$lines" = 60 ] || { echo "FAIL: worker $w wrote $lines rounds, expected 60"; exit 1; }
done
d0=$(grep -o '"param_digest":"[0-9a-f]*"' "$tmp/w0.jsonl")
d1=$(grep -o '"param_digest":"[0-9a-f]*"' "$tmp/w1.jsonl")
[ -n "$d0" ] && [ "$d0" = "$d1" ] || { echo "FAIL: replicas differ: $d0 vs $d1"; exit 1; }
if grep -q resynced "$tmp"/w*.jsonl; then echo "FAIL: a worker had to re-pull"; exit 1; fi
echo "ok: 2-worker job across 3 network namespaces, 60 rounds, replicas equal ($d0)"
