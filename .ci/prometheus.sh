#!/usr/bin/env bash
# Makes sure the prometheus binary is on PATH for the tests that run a real
# Prometheus (proxy's TestPrometheusGuardAcrossReplicas), then runs the
# command given, if any:
#
#   .ci/prometheus.sh                      # install only
#   .ci/prometheus.sh go test ./proxy/     # install, then run
#
# On a fresh Debian machine, as root, it installs the prometheus package when
# the binary is missing. The tests start their own Prometheus on a free port,
# so the package's service must not run: it would hold port 9090, strangler's
# default admin port. It is kept from starting during the install and, where
# systemd runs, disabled and stopped.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"
source "$(dirname "$0")/apt.sh"

if ! command -v prometheus >/dev/null 2>&1; then
  apt_install --no-start prometheus.sh prometheus
  command -v prometheus >/dev/null 2>&1 || { echo "prometheus.sh: prometheus still missing after the install" >&2; exit 1; }
fi

# Whoever installed it, its service must not hold port 9090.
if [[ -d /run/systemd/system ]] && systemctl is-enabled --quiet prometheus 2>/dev/null; then
  systemctl disable --now prometheus >&2 || true
elif [[ -d /run/systemd/system ]] && systemctl is-active --quiet prometheus 2>/dev/null; then
  systemctl stop prometheus >&2 || true
fi

echo "prometheus.sh: $(prometheus --version 2>&1 | head -n 1)" >&2
if [[ $# -gt 0 ]]; then
  exec "$@"
fi
