#!/usr/bin/env bash
# keyd's whole check, the test command the README gives and CI runs:
# formatting, vet and staticcheck, then every test with the race detector,
# the Vault tests included, against a real OpenBao server that
# scripts/dev-vault.sh builds (or reuses from its cache) and the tests start,
# against a real kube-apiserver (scripts/dev-kube.sh) and etcd, and against
# S3, GCS and Azure Blob servers (scripts/dev-blob.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
# keyd is built and tested with this Go (go.mod's toolchain line), fetched
# from the module proxy on first use: earlier ones carry advisories
# reachable on the HTTPS API (scripts/vulncheck.sh checks).
export GOTOOLCHAIN=go1.27.3
scripts/deps.sh # installs what is missing, nothing when all is there

# The test servers (OpenBao, kube-apiserver, the object stores) build in the
# background while the checks below run: on a fresh machine their module
# downloads then overlap the CPU work (cached, each returns at once).
servers=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$servers"' EXIT
for s in vault kube blob; do
  (scripts/dev-$s.sh build >"$servers/$s" 2>"$servers/$s.log"; echo $? >"$servers/$s.rc") &
done
server() { # waits for scripts/dev-$1.sh build; prints what it printed
  [ -f "$servers/$1.rc" ] || echo "waiting for scripts/dev-$1.sh build (the first one takes minutes)..." >&2
  while [ ! -f "$servers/$1.rc" ]; do sleep 1; done
  if [ "$(cat "$servers/$1.rc")" != 0 ]; then
    echo "scripts/dev-$1.sh build failed:" >&2
    cat "$servers/$1.log" >&2
    exit 1
  fi
  cat "$servers/$1"
}

unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:" >&2
  echo "$unformatted" >&2
  exit 1
fi
go vet ./...
go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
scripts/vulncheck.sh # fails on a vulnerability reachable from keyd's code
scripts/check-ops-files.sh

KEYD_TEST_BAO=$(server vault)
export KEYD_TEST_BAO
# A real kube-apiserver (and kubectl) for the Kubernetes and chart tests.
KEYD_TEST_KUBE_DIR=$(server kube)
export KEYD_TEST_KUBE_DIR
# Real object stores for publishing: SeaweedFS (S3), fake-gcs-server, Azurite.
KEYD_TEST_BLOB_DIR=$(server blob)
export KEYD_TEST_BLOB_DIR
export KEYD_REQUIRE_BLOB=1  # the publishing tests fail, never skip, without them
export KEYD_REQUIRE_KUBE=1  # the tests that need it fail, never skip, without it
export KEYD_REQUIRE_VAULT=1 # a Vault test that cannot find its server fails, never skips
export KEYD_REQUIRE_PYJWT=1 # likewise the tests that check keyd against PyJWT
export KEYD_REQUIRE_REDIS=1 # and the Redis token state tests (a real redis-server each)
export KEYD_REQUIRE_HELM=1  # and the chart's (helm lint and template)
export PATH="$PATH:$(go env GOPATH)/bin"
export KEYD_REQUIRE_EXAMPLES=1 # and the worked services of examples/ (.ci/run installs what they need)
go test -race -count=1 -timeout 30m ./...
# The PKCS#11 custody needs cgo and its build tag (the default binary stays
# pure Go): its own tests on SoftHSM tokens, and keyd built with it end to end.
go vet -tags pkcs11 ./custody/pkcs11/ ./cmd/keyd/
go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 -tags pkcs11 ./custody/pkcs11/
KEYD_REQUIRE_PKCS11=1 go test -tags pkcs11 -count=1 ./custody/pkcs11/
KEYD_REQUIRE_PKCS11=1 go test -tags pkcs11 -count=1 -run 'TestPKCS11' ./cmd/keyd/
# Allocation bounds of the hot path: meaningless under -race, so run apart.
go test -count=1 -run 'Allocations' ./signer/ ./internal/api/
# The release command builds, and its binary reports the version it was
# stamped with: linux/amd64 only here (each target is a whole build of
# keyd and its cloud SDKs; the others are the same pure Go, cross-compiled).
rel=$(mktemp -d)
KEYD_RELEASE_TARGETS=linux/amd64 scripts/release.sh v0.0.0-ci "$rel" >/dev/null
(cd "$rel" && sha256sum --quiet -c SHA256SUMS)
"$rel/keyd-v0.0.0-ci-linux-amd64" version | grep -q '^keyd v0.0.0-ci commit ' || { echo "release binary: wrong version" >&2; exit 1; }
rm -rf "$rel"
echo "release build: ok"
