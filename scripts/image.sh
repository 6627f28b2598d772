#!/usr/bin/env bash
# Builds keyd's container image, linux/amd64 and linux/arm64, into an OCI
# layout without a Docker daemon (cmd/keyd-image, go-containerregistry):
# the static binaries of scripts/release.sh on an empty base, user 65532,
# no shell, /etc/keyd for the config and /var/lib/keyd for data.
#   scripts/image.sh VERSION [LAYOUT_DIR] [REGISTRY_REF]
# With REGISTRY_REF (e.g. registry.example/keyd:VERSION) it also pushes the
# layout there with crane.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=go1.27.3
version=${1:?usage: scripts/image.sh VERSION [LAYOUT_DIR] [REGISTRY_REF]}
out=${2:-dist/$version/image}
bins=$(mktemp -d)
trap 'rm -rf "$bins"' EXIT
scripts/release.sh "$version" "$bins" >/dev/null
go run ./cmd/keyd-image --out "$out" --version "$version" \
  "linux/amd64=$bins/keyd-$version-linux-amd64" "linux/arm64=$bins/keyd-$version-linux-arm64"
echo "$out"
if [ -n "${3:-}" ]; then
  go run github.com/google/go-containerregistry/cmd/crane@v0.22.1 push --index "$out" "$3"
fi
