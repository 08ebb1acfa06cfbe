#!/usr/bin/env bash
# Validates the deployment files: docker-compose config for the CPU file and the GPU and TLS
# overrides, a deliberately broken file that must be refused (so the check can fail), the
# environment each service really gets, and dockerfilelint (npm, installed into .tools/ by
# deploy/install-deps.sh; nothing is downloaded here) on every Dockerfile.
# Usage: compose_test.sh REPO_ROOT
set -euo pipefail
root="$1"
lint="$root/.tools/node_modules/.bin/dockerfilelint"
cd "$root/deploy"

command -v docker-compose >/dev/null || { echo "docker-compose is not installed (deploy/install-deps.sh installs it)"; exit 1; }
docker-compose -f docker-compose.yml config -q
echo "ok: docker-compose.yml"
docker-compose -f docker-compose.yml -f docker-compose.gpu.yml config -q
echo "ok: docker-compose.yml + docker-compose.gpu.yml"
docker-compose -f docker-compose.yml -f docker-compose.tls.yml config -q
# The TLS override really turns TLS on: every service names the job's certificates, and the
# server no longer listens with --insecure.
tls_config="$(docker-compose -f docker-compose.yml -f docker-compose.tls.yml config)"
[ "$(grep -c "REGTOPK_TLS_CA: /certs/ca.pem" <<<"$tls_config")" = 5 ] || { echo "FAIL: a service of the TLS override lacks REGTOPK_TLS_CA"; exit 1; }
grep -Eq "REGTOPK_INSECURE: ['\"]false['\"]" <<<"$tls_config" || { echo "FAIL: the TLS override still listens with --insecure"; exit 1; }
[ "$(grep -c "REGTOPK_TLS_CERT: /certs/worker-" <<<"$tls_config")" = 4 ] || { echo "FAIL: not every worker has its certificate"; exit 1; }
# Each worker has its own id, state and metrics file, and the shared settings (the anchor).
base_config="$(docker-compose -f docker-compose.yml config)"
for w in 0 1 2 3; do
  grep -Eq "REGTOPK_WORKER_ID: ['\"]$w['\"]" <<<"$base_config" || { echo "FAIL: no worker with id $w"; exit 1; }
  grep -q "REGTOPK_STATE_DIR: /ckpt/worker-$w" <<<"$base_config" || { echo "FAIL: worker $w has no state dir"; exit 1; }
done
[ "$(grep -c "REGTOPK_SERVER: server:50051" <<<"$base_config")" = 4 ] || { echo "FAIL: a worker lacks the shared settings"; exit 1; }
grep -q "condition: service_healthy" <<<"$base_config" && { echo "FAIL: a service waits for a health check (podman runs none)"; exit 1; }
echo "ok: docker-compose.yml + docker-compose.tls.yml (mutual TLS for every service)"

broken="$(mktemp --suffix=.yml)"
trap 'rm -f "$broken"' EXIT
sed 's/^    healthcheck:/    healthchek:/' docker-compose.yml > "$broken"
if docker-compose -f "$broken" config -q 2>/dev/null; then
  echo "FAIL: docker-compose accepted a misspelt option"; exit 1
fi
echo "ok: an invalid compose file is refused"

[ -x "$lint" ] || { echo "FAIL: $lint is missing (run deploy/install-deps.sh)"; exit 1; }
for f in Dockerfile.server Dockerfile.worker Dockerfile.cuda; do
  "$lint" "$f"
done
