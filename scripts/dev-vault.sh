#!/usr/bin/env bash
# A real Vault-API server for keyd's tests and for trying the Vault backend by
# hand: OpenBao v2.4.0 (the open-source fork of Vault, same HTTP API), built
# from the Go module proxy and cached outside the repository.
#
#   scripts/dev-vault.sh build          build (or reuse) the server binary; prints its path
#   scripts/dev-vault.sh start [PORT]   start a dev-mode server on 127.0.0.1:PORT (default 8200),
#                                       root token "root"; prints export lines for VAULT_ADDR
#                                       and VAULT_TOKEN; the pid is in $CACHE/bao-PORT.pid
#   scripts/dev-vault.sh stop [PORT]    stop it
#
# Dev mode keeps everything in memory: stopping the server loses its data.
# A cold build takes about 4 minutes and ~4.5 GB of Go module and build cache.
set -euo pipefail

VERSION=2.4.0
# The commit of tag v2.4.0: the root module has no /v2 suffix, so only this
# pseudo-version resolves.
PSEUDO=v0.0.0-20250828202315-f9407a27fbee
CACHE=${KEYD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/keyd}
BIN="$CACHE/openbao-$VERSION/bao"

build() {
  if [ -x "$BIN" ]; then
    echo "$BIN"
    return
  fi
  local mod="$CACHE/openbao-$VERSION/build"
  mkdir -p "$mod"
  cat >"$mod/go.mod" <<EOF
module keyd.local/openbao-build

go $(go env GOVERSION | sed 's/^go//')

require (
	github.com/openbao/openbao $PSEUDO
	github.com/openbao/openbao/api/v2 v$VERSION
	github.com/openbao/openbao/sdk/v2 v$VERSION
)

replace (
	github.com/openbao/openbao/api/auth/approle/v2 v2.0.0 => github.com/openbao/openbao/api/auth/approle/v2 v$VERSION
	github.com/openbao/openbao/api/auth/userpass/v2 v2.0.0 => github.com/openbao/openbao/api/auth/userpass/v2 v$VERSION
)
EOF
  cat >"$mod/tools.go" <<'EOF'
//go:build tools

package tools

import _ "github.com/openbao/openbao"
EOF
  echo "building OpenBao $VERSION into $BIN (a few minutes the first time)..." >&2
  (
    cd "$mod"
    # The checksum database has no entry for some go-kms-wrapping modules.
    GOFLAGS=-mod=mod GONOSUMDB=github.com/openbao/go-kms-wrapping CGO_ENABLED=0 go build -trimpath -o "$BIN.tmp" \
      -ldflags "-s -w -X github.com/openbao/openbao/version.fullVersion=$VERSION" \
      github.com/openbao/openbao
  )
  mv "$BIN.tmp" "$BIN"
  echo "$BIN"
}

start() {
  local port=${1:-8200}
  build >/dev/null
  local pidfile="$CACHE/bao-$port.pid" logfile="$CACHE/bao-$port.log"
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "a server is already running on port $port (pid $(cat "$pidfile"))" >&2
  else
    # Dev mode binds PORT+1 for cluster traffic as well.
    "$BIN" server -dev -dev-root-token-id=root -dev-no-store-token \
      -dev-listen-address="127.0.0.1:$port" >"$logfile" 2>&1 &
    echo $! >"$pidfile"
  fi
  for _ in $(seq 1 100); do
    if curl -fsS "http://127.0.0.1:$port/v1/sys/health" >/dev/null 2>&1; then
      echo "export VAULT_ADDR=http://127.0.0.1:$port VAULT_TOKEN=root"
      return
    fi
    sleep 0.1
  done
  echo "OpenBao did not become healthy on port $port; its log:" >&2
  cat "$logfile" >&2
  exit 1
}

stop() {
  local port=${1:-8200}
  local pidfile="$CACHE/bao-$port.pid"
  if [ -f "$pidfile" ]; then
    kill "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
  fi
}

case "${1:-}" in
  build) build ;;
  start) start "${2:-}" ;;
  stop) stop "${2:-}" ;;
  *) sed -n '2,14p' "$0" >&2; exit 2 ;;
esac
