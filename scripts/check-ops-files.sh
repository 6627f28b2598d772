#!/usr/bin/env bash
# Checks the operator files in configs/: the systemd unit with
# systemd-analyze verify (against a keyd binary built for the purpose:
# verify wants ExecStart to exist) and the Prometheus alert rules with
# promtool. Each check that lacks its tool says so and is skipped; .ci/run
# installs both.
set -euo pipefail
cd "$(dirname "$0")/.."
if command -v systemd-analyze >/dev/null 2>&1; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  go build -o "$tmp/keyd" ./cmd/keyd
  sed "s|^ExecStart=/usr/local/bin/keyd|ExecStart=$tmp/keyd|" configs/keyd.service > "$tmp/keyd.service"
  systemd-analyze verify "$tmp/keyd.service"
  echo "configs/keyd.service: systemd-analyze verify ok"
else
  echo "systemd-analyze not installed: configs/keyd.service not checked"
fi
if command -v promtool >/dev/null 2>&1; then
  promtool check rules configs/prometheus-alerts.yaml
else
  echo "promtool not installed: configs/prometheus-alerts.yaml not checked"
fi
