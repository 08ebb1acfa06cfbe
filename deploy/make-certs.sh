#!/usr/bin/env bash
# Writes a private CA and the certificates of one regtopk job with Debian's openssl:
#   OUTDIR/ca.pem, ca.key                the job's CA (keep ca.key offline after this)
#   OUTDIR/server.pem, server.key        the server's, valid for localhost, 127.0.0.1 and each
#                                        HOSTNAME given (names or IP addresses)
#   OUTDIR/worker-N.pem, worker-N.key    worker N's client certificate, subject CN=worker-N (its
#                                        identity under mutual TLS), for N = 0 .. NUM_WORKERS-1
# Usage: deploy/make-certs.sh OUTDIR NUM_WORKERS [HOSTNAME...]
# Keys are EC P-256, certificates valid for 825 days; keys are written mode 600.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 OUTDIR NUM_WORKERS [HOSTNAME...]" >&2
  exit 2
fi
out="$1"; workers="$2"; shift 2
case "$workers" in ''|*[!0-9]*) echo "make-certs: NUM_WORKERS must be a number, got '$workers'" >&2; exit 2;; esac
command -v openssl >/dev/null || { echo "make-certs: openssl is missing (deploy/install-deps.sh installs it)" >&2; exit 1; }
mkdir -p "$out"
umask 077
days=825
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

key "$out/ca.key"
openssl req -x509 -new -key "$out/ca.key" -sha256 -days "$days" -subj "/CN=regtopk job CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out "$out/ca.pem" 2>/dev/null

sign() {  # name subject extfile
  key "$out/$1.key"
  openssl req -new -key "$out/$1.key" -subj "$2" -out "$out/$1.csr" 2>/dev/null
  openssl x509 -req -in "$out/$1.csr" -CA "$out/ca.pem" -CAkey "$out/ca.key" -CAcreateserial \
    -days "$days" -sha256 -extfile "$3" -out "$out/$1.pem" 2>/dev/null
  rm -f "$out/$1.csr"
}

san="DNS:localhost,IP:127.0.0.1"
for h in "$@"; do
  if [[ "$h" =~ ^[0-9.]+$ || "$h" == *:* ]]; then san="$san,IP:$h"; else san="$san,DNS:$h"; fi
done
ext=$(mktemp)
trap 'rm -f "$ext"' EXIT
printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=%s\n' "$san" > "$ext"
sign server "/CN=regtopk-server" "$ext"
printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n' > "$ext"
for ((w = 0; w < workers; w++)); do
  sign "worker-$w" "/CN=worker-$w" "$ext"
done
rm -f "$out/ca.srl"
chmod 644 "$out"/*.pem
echo "make-certs: wrote $out/ca.pem, server.pem/.key ($san) and worker-0..$((workers - 1)).pem/.key"
