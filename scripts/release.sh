#!/usr/bin/env bash
# Builds keyd's release binaries: static (CGO_ENABLED=0), trimmed paths,
# for linux/amd64, linux/arm64 and darwin/arm64, with the version, commit
# and date stamped in (keyd version prints them), and SHA256SUMS beside
# them. Usage: scripts/release.sh VERSION [OUTDIR]   (default dist/VERSION)
set -euo pipefail
cd "$(dirname "$0")/.."
export GOTOOLCHAIN=go1.27.3 # as scripts/test.sh
version=${1:?usage: scripts/release.sh VERSION [OUTDIR]}
out=${2:-dist/$version}
commit=$(git rev-parse HEAD 2>/dev/null || echo unknown)
date=$(git log -1 --format=%cI 2>/dev/null || date -u +%Y-%m-%dT%H:%M:%SZ) # the commit's date: reproducible
pkg=github.com/keyd-dev/keyd/internal/version
ldflags="-s -w -X $pkg.version=$version -X $pkg.commit=$commit -X $pkg.date=$date"
mkdir -p "$out"
# KEYD_RELEASE_TARGETS narrows the targets (scripts/test.sh checks one).
for target in ${KEYD_RELEASE_TARGETS:-linux/amd64 linux/arm64 darwin/arm64}; do
  os=${target%/*} arch=${target#*/}
  name="keyd-$version-$os-$arch"
  CGO_ENABLED=0 GOOS=$os GOARCH=$arch go build -trimpath -buildvcs=false -ldflags "$ldflags" -o "$out/$name" ./cmd/keyd
  echo "$out/$name"
done
(cd "$out" && sha256sum keyd-"$version"-* > SHA256SUMS)
echo "$out/SHA256SUMS"
