#!/usr/bin/env bash
# deploy/install-python.sh put the package where Debian's python3 finds it with no PYTHONPATH,
# and the installed extension is the one just built (not a stale copy). Skipped (77) when the
# package was never installed (ctest run without the README's test command).
set -euo pipefail
BUILD_PY="$1"
cd /
if ! where=$(env -u PYTHONPATH /usr/bin/python3 -c "import regtopk._core as c; print(c.__file__)" 2>/dev/null); then
  echo "regtopk is not installed in the system Python (run deploy/install-python.sh)"; exit 77
fi
built=$(ls "$BUILD_PY"/regtopk/_core*.so)
if ! cmp -s "$where" "$built"; then
  echo "FAIL: the installed $where differs from the build's $built (re-run deploy/install-python.sh)"; exit 1
fi
for f in __init__.py torch.py; do
  cmp "$(dirname "$where")/$f" "$BUILD_PY/regtopk/$f"
done
env -u PYTHONPATH /usr/bin/python3 -c "import regtopk.torch as rt; assert callable(rt.DistributedOptimizer)"
echo "ok: regtopk installed at $(dirname "$where") and current"
