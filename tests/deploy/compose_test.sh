#!/usr/bin/env bash
# Validates the deployment files: docker-compose config for the CPU file and the GPU override,
# a deliberately broken file that must be refused (so the check can fail), and dockerfilelint
# (npm) on both Dockerfiles. Usage: compose_test.sh REPO_ROOT TOOLS_DIR
set -euo pipefail
root="$1"
tools="$2"
cd "$root/deploy"

command -v docker-compose >/dev/null || { echo "docker-compose is not installed (deploy/install-deps.sh installs it)"; exit 1; }
docker-compose -f docker-compose.yml config -q
echo "ok: docker-compose.yml"
docker-compose -f docker-compose.yml -f docker-compose.gpu.yml config -q
echo "ok: docker-compose.yml + docker-compose.gpu.yml"
docker-compose -f docker-compose.yml -f docker-compose.tls.yml config -q
# The TLS override really turns TLS on: every service names the job's certificates.
tls_config="$(docker-compose -f docker-compose.yml -f docker-compose.tls.yml config)"
[ "$(echo "$tls_config" | grep -c -- "--tls-ca=/certs/ca.pem")" -ge 6 ] || { echo "FAIL: a service of the TLS override lacks --tls-ca"; exit 1; }
if echo "$tls_config" | grep -q -- "--insecure"; then
  echo "FAIL: the TLS override still listens with --insecure"; exit 1
fi
[ "$(echo "$tls_config" | grep -c -- "--tls-cert=/certs/worker-")" = 4 ] || { echo "FAIL: not every worker has its certificate"; exit 1; }
echo "ok: docker-compose.yml + docker-compose.tls.yml (mutual TLS for every service)"

broken="$(mktemp --suffix=.yml)"
trap 'rm -f "$broken"' EXIT
sed 's/^    healthcheck:/    healthchek:/' docker-compose.yml > "$broken"
if docker-compose -f "$broken" config -q 2>/dev/null; then
  echo "FAIL: docker-compose accepted a misspelt option"; exit 1
fi
echo "ok: an invalid compose file is refused"

if command -v npm >/dev/null; then
  if [ ! -x "$tools/node_modules/.bin/dockerfilelint" ]; then
    mkdir -p "$tools"
    npm install --prefix "$tools" --silent --no-audit --no-fund dockerfilelint@1.8.0 >/dev/null
  fi
  "$tools/node_modules/.bin/dockerfilelint" Dockerfile
  "$tools/node_modules/.bin/dockerfilelint" Dockerfile.cuda
else
  echo "dockerfilelint: not run (npm is not installed)"
fi
