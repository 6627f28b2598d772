#!/usr/bin/env bash
# govulncheck against a local copy of the Go vulnerability database, so the
# check needs nothing but the Go module proxy: the database's OSV files come
# from the golang.org/x/vulndb module and are indexed with its own
# cmd/indexdb into ~/.cache/keyd/vulndb/<version>. Exits non-zero on a
# vulnerability reachable from keyd's code (govulncheck's symbol mode:
# imported but unreachable code is reported, not fatal). Bump
# VULNDB_VERSION to take newer advisories (go list -m -versions does not list
# pseudo-versions: go mod download -json golang.org/x/vulndb@latest).
set -euo pipefail
cd "$(dirname "$0")/.."
VULNDB_VERSION=v0.0.0-20261105234957-e22db6528018
GOVULNCHECK_VERSION=v1.9.0

db="${XDG_CACHE_HOME:-$HOME/.cache}/keyd/vulndb/$VULNDB_VERSION"
if [ ! -f "$db/index/db.json" ]; then
  src=$(go mod download -json "golang.org/x/vulndb@$VULNDB_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  if [ -z "$src" ] || [ ! -d "$src/data/osv" ]; then
    echo "scripts/vulncheck.sh: golang.org/x/vulndb@$VULNDB_VERSION has no data/osv" >&2
    exit 1
  fi
  rm -rf "$db.tmp"
  mkdir -p "$(dirname "$db")"
  go run "golang.org/x/vulndb/cmd/indexdb@$VULNDB_VERSION" -vulns "$src/data/osv" -out "$db.tmp"
  rm -rf "$db"
  mv "$db.tmp" "$db"
fi
go run "golang.org/x/vuln/cmd/govulncheck@$GOVULNCHECK_VERSION" -db "file://$db" ./...
