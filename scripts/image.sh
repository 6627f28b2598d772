#!/usr/bin/env bash
# Builds keyd's container image, linux/amd64 and linux/arm64, into an OCI
# layout without a Docker daemon (cmd/keyd-image, go-containerregistry):
# the static binaries of scripts/release.sh on an empty base, user 65532,
# no shell, /etc/keyd for the config and /var/lib/keyd for data.
#   scripts/image.sh [--pkcs11] VERSION [LAYOUT_DIR] [REGISTRY_REF]
# With REGISTRY_REF (e.g. ghcr.io/keyd-dev/keyd:VERSION) it also pushes the
# layout there with crane. With --pkcs11 it builds the second image
# instead: keyd with the PKCS#11 custody (-tags pkcs11, cgo) and the glibc
# libraries it loads, for this machine's architecture only (cgo does not
# cross-compile here); mount the HSM vendor's module into it.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=go1.27.3
pkcs11=
if [ "${1:-}" = --pkcs11 ]; then
  pkcs11=1
  shift
fi
version=${1:?usage: scripts/image.sh [--pkcs11] VERSION [LAYOUT_DIR] [REGISTRY_REF]}
out=${2:-dist/$version/image${pkcs11:+-pkcs11}}
bins=$(mktemp -d)
trap 'rm -rf "$bins"' EXIT
if [ -n "$pkcs11" ]; then
  arch=$(go env GOARCH)
  commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
  CGO_ENABLED=1 go build -trimpath -tags pkcs11 -o "$bins/keyd" \
    -ldflags "-X github.com/keyd-dev/keyd/internal/version.version=$version -X github.com/keyd-dev/keyd/internal/version.commit=$commit" ./cmd/keyd
  go run ./cmd/keyd-image --out "$out" --version "$version" --libs "linux/$arch=$bins/keyd"
else
  scripts/release.sh "$version" "$bins" >/dev/null
  go run ./cmd/keyd-image --out "$out" --version "$version" \
    "linux/amd64=$bins/keyd-$version-linux-amd64" "linux/arm64=$bins/keyd-$version-linux-arm64"
fi
echo "$out"
if [ -n "${3:-}" ]; then
  go run github.com/google/go-containerregistry/cmd/crane@v0.22.1 push --index "$out" "$3"
fi
