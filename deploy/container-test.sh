#!/usr/bin/env bash
# The deployment, run for real: builds the server and worker images with podman (runc, vfs
# storage, a Debian 12 base made with debootstrap; no image registry is needed), runs the compose
# job deploy/docker-compose.yml end to end with docker-compose v1 against podman's Docker API
# socket, kills a worker's process mid-job (SIGKILL from the host) so that its container restarts
# and resumes, and checks the result:
#   - both images run as uid 10001 and own their writable directories; the server image is
#     under 150 MB; the worker image imports the Python API;
#   - every worker's metrics file has every round, the killed worker was restarted, resumed from
#     its state, and the job ended (the server checks every replica's digest as it goes);
#   - the final test accuracy is at least MIN_ACCURACY; the server's /metrics counted the rounds.
# Prints the image sizes, build times and the job's accuracy and wall time (docs/DEPLOY.md has
# them). Needs root and ~20 minutes on 2 cores (most of it the first worker image build); later
# runs reuse podman's layer cache and the cached base image.
#   sudo deploy/container-test.sh            (MIN_ACCURACY=0.85 KEEP=1 to keep the job's volumes)
# Not part of the README's test command.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
[ "$(id -u)" = 0 ] || { echo "container-test: needs root (podman's rootful storage, debootstrap)"; exit 2; }
MIN_ACCURACY="${MIN_ACCURACY:-0.85}"
project=regtopkct
# shellcheck source=deploy/container-env.sh
source deploy/container-env.sh
container_install_tools
container_configure_podman
work="$(mktemp -d)"
socket="$work/podman.sock"
service_pid=""
cleanup() {
  if [ -n "$service_pid" ]; then
    if [ -z "${KEEP:-}" ]; then
      DOCKER_HOST="unix://$socket" docker-compose -p "$project" -f deploy/docker-compose.yml \
        down -v --remove-orphans >/dev/null 2>&1 || true
    fi
    kill "$service_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
say() { echo "container-test: $*"; }
fail() { echo "container-test: FAIL: $*"; exit 1; }

t=$SECONDS
container_base_image
say "base image localhost/debian:12 ready in $((SECONDS - t)) s"

declare -A build_seconds size_mb
for image in server worker; do
  t=$SECONDS
  podman build --network=host -q -f "deploy/Dockerfile.$image" -t "regtopk-$image:latest" . \
    >"$work/build-$image.log" 2>&1 || { tail -30 "$work/build-$image.log"; fail "building regtopk-$image"; }
  build_seconds[$image]=$((SECONDS - t))
  size_mb[$image]=$(( $(podman image inspect --format '{{.Size}}' "regtopk-$image:latest") / 1000000 ))
  say "regtopk-$image: built in ${build_seconds[$image]} s, ${size_mb[$image]} MB"
  [ "$(podman run --rm --entrypoint id "regtopk-$image:latest" -u)" = 10001 ] \
    || fail "regtopk-$image does not run as uid 10001"
  owners="$(podman run --rm --entrypoint stat "regtopk-$image:latest" -c %u /ckpt /out | sort -u)"
  [ "$owners" = 10001 ] || fail "regtopk-$image: /ckpt and /out are not owned by its user"
done
[ "${size_mb[server]}" -lt 150 ] || fail "the server image is ${size_mb[server]} MB (goal: < 150 MB)"
podman run --rm --entrypoint /usr/bin/python3 regtopk-worker:latest \
  -c "import regtopk.torch, regtopk._core; print('container-test: python API imports in the worker image')"
podman run --rm regtopk-server:latest --help | grep -q "REGTOPK_WORKERS" || fail "server --help"

# docker-compose v1 against podman's Docker-compatible API.
podman system service --time=0 "unix://$socket" >"$work/podman-service.log" 2>&1 &
service_pid=$!
export DOCKER_HOST="unix://$socket"
for _ in $(seq 50); do [ -S "$socket" ] && break; sleep 0.2; done
[ -S "$socket" ] || fail "podman's API socket did not come up"
compose=(docker-compose -p "$project" -f deploy/docker-compose.yml)
"${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || true

t_job=$SECONDS
"${compose[@]}" up -d --no-build 2>&1 | sed 's/^/  compose: /'
metrics_dir="$(podman volume inspect "${project}_metrics" --format '{{.Mountpoint}}')"
rounds_in() {
  local n=0
  [ -f "$metrics_dir/worker_$1.jsonl" ] && n="$(grep -c '"round"' "$metrics_dir/worker_$1.jsonl" || true)"
  echo "${n:-0}"
}
container() { echo "${project}_$1_1"; }

# Kill worker 1's process once the job is past its third checkpoint (every 100 rounds).
for _ in $(seq 600); do
  [ "$(rounds_in 1)" -ge 350 ] && break
  sleep 1
done
[ "$(rounds_in 1)" -ge 350 ] || { "${compose[@]}" logs --tail=20; fail "worker 1 did not reach round 350 in 10 minutes"; }
pid="$(podman inspect --format '{{.State.Pid}}' "$(container worker1)")"
say "SIGKILL to worker 1 (host pid $pid) at round $(rounds_in 1)"
kill -9 "$pid"

# Wait for every worker to finish: exit code 0 and no restart pending. Meanwhile read the
# server's Prometheus endpoint (published on the host; the server exits 30 s after the job).
deadline=$((SECONDS + 1800))
server_rounds=0
while true; do
  scraped="$(curl -fsS http://127.0.0.1:9100/metrics 2>/dev/null | awk '/^regtopk_rounds_total/ {print $2}' || true)"
  [ -n "$scraped" ] && server_rounds="$scraped"
  done_count=0
  for w in 0 1 2 3; do
    state="$(podman inspect --format '{{.State.Status}} {{.State.ExitCode}}' "$(container "worker$w")")"
    [ "$state" = "exited 0" ] && done_count=$((done_count + 1))
  done
  [ "$done_count" = 4 ] && break
  [ "$SECONDS" -lt "$deadline" ] || { "${compose[@]}" logs --tail=30; fail "the job did not finish in 30 minutes"; }
  sleep 2
done
job_seconds=$((SECONDS - t_job))
restarts="$(podman inspect --format '{{.RestartCount}}' "$(container worker1)")"
[ "$restarts" -ge 1 ] || fail "worker 1 was not restarted after SIGKILL"
podman logs "$(container worker1)" >"$work/worker1.log" 2>&1
grep -q "resum" "$work/worker1.log" || { tail -20 "$work/worker1.log"; fail "worker 1 did not resume from its state"; }
grep -q "flags from the environment: " "$work/worker1.log" || fail "worker 1 was not configured from the environment"
grep -q "round 2000/2000" "$work/worker1.log" || fail "worker 1 printed no progress line"


for w in 0 1 2 3; do
  [ -s "$metrics_dir/worker_$w.jsonl" ] || fail "no metrics file for worker $w"
done
accuracy="$(grep test_accuracy "$metrics_dir/worker_0.jsonl" | tail -1 | sed 's/.*"test_accuracy":\([0-9.e-]*\).*/\1/')"
rollbacks="$(cat "$metrics_dir"/worker_*.jsonl | grep -c rollback_to || true)"
say "job: 4 workers, 2000 rounds in ${job_seconds} s (worker 1 killed once and restarted ${restarts}x; the others rolled back ${rollbacks}x to the newest checkpoint; the server closed ${server_rounds} rounds); final test accuracy ${accuracy}"
awk -v a="$accuracy" -v m="$MIN_ACCURACY" 'BEGIN { exit !(a >= m) }' || fail "accuracy $accuracy < $MIN_ACCURACY"
[ "${server_rounds%.*}" -ge 2000 ] || fail "the server's /metrics counted $server_rounds rounds"
say "PASS (regtopk-server ${size_mb[server]} MB built in ${build_seconds[server]} s; regtopk-worker ${size_mb[worker]} MB built in ${build_seconds[worker]} s)"
