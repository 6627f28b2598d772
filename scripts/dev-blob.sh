#!/usr/bin/env bash
# The object stores keyd's publishing tests write to, each a real server:
# SeaweedFS (S3 API) and fake-gcs-server (Google Cloud Storage's JSON API)
# built from the Go module proxy, and Azurite (Azure Blob Storage) from the
# npm registry. Cached outside the repository.
#
#   scripts/dev-blob.sh build    build (or reuse) them; prints the folder holding
#                                weed, fake-gcs-server and azurite-blob
#
# A cold build takes about 9 minutes on 2 cores (SeaweedFS 6, fake-gcs-server
# 2, Azurite 1) and ~3 GB of Go module and build cache.
set -euo pipefail

SEAWEEDFS=v0.0.0-20261109003541-7506e5f91cd6 # SeaweedFS of 2026-11-09 (its module has no release tags)
FAKEGCS=v1.56.1
AZURITE=3.35.0 # the newest that runs on Node.js 20
CACHE=${KEYD_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/keyd}
DIR="$CACHE/blob-stores"

build() {
  mkdir -p "$DIR"
  if [ ! -x "$DIR/weed" ]; then
    # go install refuses SeaweedFS's module (it has a replace directive):
    # build it as the main module, from a copy of its download.
    echo "building SeaweedFS into $DIR (about 6 minutes the first time)..." >&2
    local src
    src=$(cd "$DIR" && GOFLAGS=-mod=mod go mod download -json "github.com/seaweedfs/seaweedfs@$SEAWEEDFS" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')
    rm -rf "$DIR/seaweedfs-src"
    cp -r "$src" "$DIR/seaweedfs-src"
    chmod -R u+w "$DIR/seaweedfs-src"
    (cd "$DIR/seaweedfs-src" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$DIR/weed.tmp" ./weed)
    rm -rf "$DIR/seaweedfs-src"
    mv "$DIR/weed.tmp" "$DIR/weed"
  fi
  if [ ! -x "$DIR/fake-gcs-server" ]; then
    echo "building fake-gcs-server $FAKEGCS into $DIR..." >&2
    (cd "$DIR" && CGO_ENABLED=0 GOBIN="$DIR" go install -trimpath -ldflags "-s -w" "github.com/fsouza/fake-gcs-server@$FAKEGCS")
  fi
  if [ ! -x "$DIR/azurite/node_modules/.bin/azurite-blob" ]; then
    echo "installing Azurite $AZURITE into $DIR..." >&2
    mkdir -p "$DIR/azurite"
    (cd "$DIR/azurite" && npm install --no-audit --no-fund --silent --no-save "azurite@$AZURITE" >&2)
  fi
  ln -sf "$DIR/azurite/node_modules/.bin/azurite-blob" "$DIR/azurite-blob"
  echo "$DIR"
}

case "${1:-}" in
build) build ;;
*)
  echo "usage: scripts/dev-blob.sh build" >&2
  exit 2
  ;;
esac
