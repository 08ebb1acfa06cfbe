#!/usr/bin/env bash
# The Kubernetes manifests in deploy/k8s validate offline (tests/deploy/k8s_validate.js, with the
# npm tools deploy/install-deps.sh puts in .tools/), and each kind of broken manifest is refused
# with a message naming the problem, so that the check can fail.
# Usage: k8s_test.sh REPO_ROOT
set -euo pipefail
root="$1"
modules="$root/.tools/node_modules"
validate="$root/tests/deploy/k8s_validate.js"
command -v node >/dev/null || { echo "FAIL: node is not installed (run deploy/install-deps.sh)"; exit 1; }
for m in kubernetes-models js-yaml; do
  [ -d "$modules/$m" ] || { echo "FAIL: $modules/$m is missing (run deploy/install-deps.sh)"; exit 1; }
done

node "$validate" "$modules" "$root"/deploy/k8s/*.yaml

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# broken FILE SED-EXPRESSION EXPECTED-MESSAGE: the edited copy must be refused, naming it.
broken() {
  local file="$1" edit="$2" says="$3"
  rm -rf "$work/k8s" && cp -r "$root/deploy/k8s" "$work/k8s"
  sed -i "$edit" "$work/k8s/$file"
  if cmp -s "$root/deploy/k8s/$file" "$work/k8s/$file"; then
    echo "FAIL: the edit '$edit' changed nothing in $file"; exit 1
  fi
  local out
  if out="$(node "$validate" "$modules" "$work"/k8s/*.yaml 2>&1)"; then
    echo "FAIL: accepted $file with '$edit'"; exit 1
  fi
  if ! grep -q -- "$says" <<<"$out"; then
    echo "FAIL: $file with '$edit' was refused without saying '$says':"; echo "$out"; exit 1
  fi
  echo "ok: refused ($says)"
}
broken server.yaml 's/  replicas: 1/  replicas: one/' "replicas must be integer"
broken server.yaml '/^  selector:$/{n;n;s/component: server/component: serverr/}' "its selector matches no pod template"
broken server.yaml 's/targetPort: metrics/targetPort: metric/' "targetPort 'metric' is no named port"
broken server.yaml 's/serviceName: regtopk-server/serviceName: regtopk-srv/' "serviceName 'regtopk-srv' names no Service"
broken server.yaml 's/command: \[regtopk-health,/command: [\/bin\/true,/' "readinessProbe must run regtopk-health"
broken server.yaml 's/name: regtopk-job/name: regtopk-jobs/' "ConfigMap 'regtopk-jobs'"
broken server.yaml 's/runAsNonRoot: true/runAsNonRoot: false/' "runAsNonRoot"
broken workers.yaml '/nvidia.com\/gpu: 1/d' "no nvidia.com/gpu limit"
broken workers.yaml 's/completionMode: Indexed/completionMode: NonIndexed/' "Indexed Job"
broken workers.yaml 's/claimName: regtopk-data/claimName: regtopk-dataset/' "claims 'regtopk-dataset'"
broken workers.yaml 's/- name: WORKER_INDEX/- name: WORKER_IDX/' "uses \$(WORKER_INDEX)"
broken workers.yaml '0,/- name: state$/s//- name: states/' "mounts 'states', which is no volume"
broken data.yaml 's/kind: PersistentVolumeClaim/kind: PersistentVolumeClam/' "unknown apiVersion/kind"
broken job-config.yaml 's/^  REGTOPK_WORKERS: "4"/  REGTOPK_WORKERS: [4/' "not YAML"
echo "k8s_test: all manifests valid, every broken variant refused"
