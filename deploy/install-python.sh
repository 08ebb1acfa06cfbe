#!/usr/bin/env bash
# Installs the regtopk Python package (regtopk.torch over the C++ extension regtopk._core) into
# Debian's system Python, with no network: builds it if needed, then copies build/python/regtopk
# into the first site-packages directory of /usr/bin/python3 (/usr/local/lib/python3.X/
# dist-packages on Debian). Idempotent. Afterwards: /usr/bin/python3 -c "import regtopk.torch".
# PREFIX=DIR installs into DIR/regtopk instead (then put DIR on PYTHONPATH).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=/usr/bin/python3
if [ ! -f build/python/regtopk/__init__.py ] || ! ls build/python/regtopk/_core*.so >/dev/null 2>&1; then
  deploy/build.sh
fi
DEST="${PREFIX:-$($PY -c 'import site; print(site.getsitepackages()[0])')}"
SUDO=""
if [ ! -w "$(dirname "$DEST")" ] && [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO mkdir -p "$DEST/regtopk"
$SUDO cp build/python/regtopk/__init__.py build/python/regtopk/torch.py build/python/regtopk/_core*.so "$DEST/regtopk/"
echo "install-python: regtopk installed in $DEST/regtopk"
# Check it from a neutral directory, so that the source tree does not shadow the install.
(cd / && PYTHONPATH="${PREFIX:-}" $PY -c "import regtopk.torch, regtopk._core; print('install-python: import regtopk.torch ok')")
