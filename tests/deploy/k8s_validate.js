// Validates Kubernetes manifests offline: every document against the Kubernetes API schema
// (npm's kubernetes-models), then the references between them that the schema cannot see and
// that `kubectl apply` would accept but that would leave the job broken:
//   - a Service or workload selector that matches no pod template's labels;
//   - a StatefulSet whose serviceName names no Service;
//   - a container port a Service targets by name that no selected pod declares;
//   - a ConfigMap, PVC (not from a volumeClaimTemplate) or volume mount that names nothing;
//   - probes that are not regtopk-health, pods that may run as root, an Indexed Job of workers
//     without a GPU limit.
// Secrets are created by the user (docs/DEPLOY.md), so they only have to be named.
// Usage: node k8s_validate.js NODE_MODULES_DIR FILE.yaml...   Exit 0: valid; 1: the errors.
"use strict";
const fs = require("fs");
const path = require("path");

const [modulesArg, ...files] = process.argv.slice(2);
const modules = modulesArg && path.resolve(modulesArg);
if (!modules || files.length === 0) {
  console.error("usage: node k8s_validate.js NODE_MODULES_DIR FILE.yaml...");
  process.exit(2);
}
const yaml = require(path.join(modules, "js-yaml"));
const errors = [];
const fail = (where, message) => errors.push(`${where}: ${message}`);

// apiVersion + kind -> the kubernetes-models class ("apps/v1" -> kubernetes-models/apps/v1).
function modelClass(apiVersion, kind) {
  const group = apiVersion.includes("/") ? apiVersion : `v1`;
  const file = path.join(modules, "kubernetes-models", group, `${kind}.js`);
  if (!fs.existsSync(file)) return null;
  return require(file)[kind];
}

const docs = [];
for (const file of files) {
  let loaded;
  try {
    loaded = yaml.loadAll(fs.readFileSync(file, "utf8"));
  } catch (e) {
    fail(file, `not YAML: ${e.message}`);
    continue;
  }
  loaded.forEach((doc, i) => {
    if (doc == null) return;
    const where = `${path.basename(file)}#${i + 1} ${doc.kind || "?"}/${(doc.metadata || {}).name || "?"}`;
    if (!doc.apiVersion || !doc.kind) return fail(where, "no apiVersion or kind");
    const Model = modelClass(doc.apiVersion, doc.kind);
    if (!Model) return fail(where, `unknown apiVersion/kind ${doc.apiVersion} ${doc.kind}`);
    try {
      new Model(doc).validate();
    } catch (e) {
      return fail(where, `schema: ${e.message}`);
    }
    docs.push({ doc, where });
  });
}

const byKind = (kind) => docs.filter((d) => d.doc.kind === kind);
const named = (kind, name) => byKind(kind).some((d) => d.doc.metadata.name === name);
const matches = (selector, labels) =>
  Object.entries(selector || {}).every(([k, v]) => (labels || {})[k] === v);
const workloads = docs.filter((d) => ["StatefulSet", "Deployment", "Job"].includes(d.doc.kind));
const podTemplates = workloads.map((d) => ({ ...d, template: d.doc.spec.template }));

for (const { doc, where } of byKind("Service")) {
  const selected = podTemplates.filter((p) => matches(doc.spec.selector, p.template.metadata.labels));
  if (selected.length === 0) fail(where, "its selector matches no pod template");
  for (const port of doc.spec.ports || []) {
    if (typeof port.targetPort !== "string") continue;
    const declared = selected.some((p) => p.template.spec.containers.some((c) =>
      (c.ports || []).some((cp) => cp.name === port.targetPort)));
    if (!declared) fail(where, `targetPort '${port.targetPort}' is no named port of its pods`);
  }
}

for (const { doc, where, template } of podTemplates) {
  const spec = template.spec;
  const sel = (doc.spec.selector || {}).matchLabels;
  if (sel && !matches(sel, template.metadata.labels)) {
    fail(where, "spec.selector does not match the pod template's labels");
  }
  if (doc.kind === "StatefulSet" && !named("Service", doc.spec.serviceName)) {
    fail(where, `serviceName '${doc.spec.serviceName}' names no Service`);
  }
  const sc = spec.securityContext || {};
  if (sc.runAsNonRoot !== true || !(sc.runAsUser > 0)) {
    fail(where, "the pod must set runAsNonRoot and a non-root runAsUser");
  }
  const claimTemplates = (doc.spec.volumeClaimTemplates || []).map((t) => t.metadata.name);
  const volumes = new Map((spec.volumes || []).map((v) => [v.name, v]));
  for (const v of volumes.values()) {
    if (v.persistentVolumeClaim && !named("PersistentVolumeClaim", v.persistentVolumeClaim.claimName)) {
      fail(where, `volume '${v.name}' claims '${v.persistentVolumeClaim.claimName}', which no manifest defines`);
    }
    if (v.configMap && !named("ConfigMap", v.configMap.name)) {
      fail(where, `volume '${v.name}' names ConfigMap '${v.configMap.name}', which no manifest defines`);
    }
  }
  for (const c of spec.containers) {
    const cw = `${where} container ${c.name}`;
    for (const m of c.volumeMounts || []) {
      if (!volumes.has(m.name) && !claimTemplates.includes(m.name)) {
        fail(cw, `mounts '${m.name}', which is no volume of the pod`);
      }
    }
    for (const from of c.envFrom || []) {
      if (from.configMapRef && !named("ConfigMap", from.configMapRef.name)) {
        fail(cw, `envFrom names ConfigMap '${from.configMapRef.name}', which no manifest defines`);
      }
    }
    // $(VAR) references must be defined earlier in the list (Kubernetes expands only those).
    const seen = new Set();
    for (const e of c.env || []) {
      for (const ref of (e.value || "").matchAll(/\$\(([A-Z0-9_]+)\)/g)) {
        if (!seen.has(ref[1])) fail(cw, `${e.name} uses $(${ref[1]}), which is not defined before it`);
      }
      seen.add(e.name);
    }
    for (const probe of ["readinessProbe", "livenessProbe"]) {
      if (doc.kind !== "StatefulSet") continue;
      const cmd = ((c[probe] || {}).exec || {}).command || [];
      if (cmd[0] !== "regtopk-health") fail(cw, `${probe} must run regtopk-health`);
    }
    if (doc.kind === "Job") {
      if (doc.spec.completionMode !== "Indexed") fail(where, "workers must be an Indexed Job");
      const limits = (c.resources || {}).limits || {};
      if (!(Number(limits["nvidia.com/gpu"]) >= 1)) fail(cw, "no nvidia.com/gpu limit");
    }
  }
}

if (errors.length > 0) {
  for (const e of errors) console.error(`INVALID ${e}`);
  process.exit(1);
}
console.log(`ok: ${docs.length} documents in ${files.length} files`);
