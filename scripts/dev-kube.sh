#!/usr/bin/env bash
# A real Kubernetes API server for keyd's tests: kube-apiserver and kubectl
# of k8s.io/kubernetes v$VERSION, built from the Go module proxy in a wrapper
# module that pins every staging module (the kubernetes module points them
# at ./staging, which a module download does not carry), cached outside the
# repository. etcd comes from Debian's etcd-server (scripts/deps.sh).
#
#   scripts/dev-kube.sh build    build (or reuse) the binaries; prints the folder holding them
#
# A cold build takes about 5 minutes on 2 cores.
set -euo pipefail

VERSION=1.37.2
STAGING=v0.${VERSION#1.}
CACHE=${KEYD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/keyd}
DIR="$CACHE/kubernetes-$VERSION"

build() {
  if [ -x "$DIR/kube-apiserver" ] && [ -x "$DIR/kubectl" ]; then
    echo "$DIR"
    return
  fi
  local mod="$DIR/build"
  mkdir -p "$mod"
  # Every staging module k8s.io/kubernetes replaces with ./staging/src/...
  local gomod
  rm -f "$mod/go.mod" # downloaded outside any module, so no go.sum is touched
  gomod=$(cd "$mod" && go mod download -json "k8s.io/kubernetes@v$VERSION" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
  {
    echo "module keyd.local/kubernetes-build"
    echo
    echo "go $(go env GOVERSION | sed 's/^go//')"
    echo
    echo "require k8s.io/kubernetes v$VERSION"
    echo
    echo "replace ("
    sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\t\1 => \1 '"$STAGING"'#p' "$gomod"
    echo ")"
  } >"$mod/go.mod"
  cat >"$mod/tools.go" <<'EOT'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
EOT
  echo "building kube-apiserver and kubectl $VERSION into $DIR (about 5 minutes the first time)..." >&2
  (
    cd "$mod"
    GOFLAGS=-mod=mod go mod tidy >/dev/null 2>&1 || true
    GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$DIR/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver
    GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$DIR/kubectl.tmp" k8s.io/kubernetes/cmd/kubectl
  )
  mv "$DIR/kube-apiserver.tmp" "$DIR/kube-apiserver"
  mv "$DIR/kubectl.tmp" "$DIR/kubectl"
  echo "$DIR"
}

case "${1:-}" in
  build) build ;;
  *) sed -n '2,10p' "$0" >&2; exit 2 ;;
esac
