#!/usr/bin/env bash
# Installs what the tests need and the machine lacks, and nothing when all
# is there: gcc for -race, curl for scripts/dev-vault.sh, systemd-analyze and
# promtool for the operator files, redis-server for the token state tests,
# etcd for the real kube-apiserver tests, SoftHSM2 and opensc for the
# PKCS#11 custody, helm for the chart (go install),
# PyJWT, Flask, FastAPI and uvicorn from
# Debian for the Python tests and examples, Node for the Node example, and
# its npm packages at their locked versions. scripts/test.sh runs it first.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v gcc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v git >/dev/null 2>&1 || missing+=(git)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)  # checks configs/keyd.service
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)       # checks configs/prometheus-alerts.yaml
/usr/bin/python3 -c 'import jwt, cryptography' >/dev/null 2>&1 || missing+=(python3 python3-jwt python3-cryptography)
/usr/bin/python3 -c 'import flask, fastapi, uvicorn' >/dev/null 2>&1 || missing+=(python3-flask python3-fastapi python3-uvicorn)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server) # the Redis token state tests start their own
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)          # under the kube-apiserver of scripts/dev-kube.sh
[ -e /usr/lib/softhsm/libsofthsm2.so ] || missing+=(softhsm2)        # the PKCS#11 custody's tests (a token each)
command -v pkcs11-tool >/dev/null 2>&1 || missing+=(opensc)        # reads the token's attributes from outside keyd
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "scripts/deps.sh: missing ${missing[*]}; install them (apt-get, as root)" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# helm, for the chart's tests (built from the Go module proxy, once).
if ! command -v helm >/dev/null 2>&1 && [ ! -x "$(go env GOPATH)/bin/helm" ]; then
  go install helm.sh/helm/v3/cmd/helm@v3.19.0
fi
if [ ! -d examples/node/node_modules/jose ]; then
  (cd examples/node && npm ci --no-audit --no-fund --silent)
fi
