#!/usr/bin/env bash
# A real Prometheus (Debian's package) scrapes a regtopk-server during a short job, and its
# query API must report the job's rounds and a compression ratio. Usage: prometheus_test.sh BIN_DIR
set -euo pipefail
bin="$1"
command -v prometheus >/dev/null || { echo "prometheus is not installed (deploy/install-deps.sh installs it)"; exit 1; }
tmp="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

"$bin/regtopk-server" --host=127.0.0.1 --port=0 --metrics-port=0 --workers=1 --algorithm=topk \
  --density=0.3 --lr=0.01 --rounds=40 --linger-seconds=120 --log-every=0 >"$tmp/server.out" 2>&1 &
pids+=($!)
for _ in $(seq 100); do grep -q "/metrics" "$tmp/server.out" 2>/dev/null && break; sleep 0.1; done
grpc_port=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$tmp/server.out" | grep -o '[0-9]*$')
metrics_port=$(grep -o 'metrics on http://127.0.0.1:[0-9]*' "$tmp/server.out" | grep -o '[0-9]*$')
[ -n "$grpc_port" ] && [ -n "$metrics_port" ] || { cat "$tmp/server.out"; exit 1; }

prom_port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$tmp/prometheus.yml" <<YML
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: regtopk
    static_configs:
      - targets: ["127.0.0.1:$metrics_port"]
YML
prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/data" \
  --web.listen-address="127.0.0.1:$prom_port" >"$tmp/prometheus.log" 2>&1 &
pids+=($!)

"$bin/regtopk-worker" --server="127.0.0.1:$grpc_port" --worker-id=0 --dataset=linreg \
  --model=linear --metrics="$tmp/w0.jsonl" 2>"$tmp/w0.err" || { cat "$tmp/w0.err"; exit 1; }

query() {
  curl -fsS "http://127.0.0.1:$prom_port/api/v1/query" --data-urlencode "query=$1" 2>/dev/null |
    /usr/bin/python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "")'
}
rounds=""
for _ in $(seq 60); do
  rounds=$(query regtopk_rounds_total || true)
  [ "$rounds" = "40" ] && break
  sleep 0.5
done
[ "$rounds" = "40" ] || { echo "FAIL: Prometheus reports regtopk_rounds_total='$rounds', expected 40"; tail -5 "$tmp/prometheus.log"; exit 1; }
ratio=$(query regtopk_upstream_compression_ratio)
up=$(query 'up{job="regtopk"}')
echo "ok: Prometheus scraped regtopk: rounds=$rounds, upstream compression=$ratio, up=$up"
/usr/bin/python3 -c "import sys; sys.exit(0 if float('$ratio') > 1 and '$up' == '1' else 1)" ||
  { echo "FAIL: implausible compression ratio or target down"; exit 1; }
