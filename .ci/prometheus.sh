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

if ! command -v prometheus >/dev/null 2>&1; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "prometheus.sh: prometheus not found; install it (apt-get install prometheus)" >&2
    exit 1
  fi
  echo "prometheus.sh: installing prometheus" >&2
  # invoke-rc.d asks policy-rc.d whether a package may start its service;
  # 101 says no. Only a policy this script put there is removed.
  policy=/usr/sbin/policy-rc.d
  own_policy=
  if [[ ! -e "$policy" ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    own_policy=1
  fi
  cleanup() { if [[ -n "$own_policy" ]]; then rm -f "$policy"; fi; }
  trap cleanup EXIT
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends prometheus >&2
  cleanup
  trap - EXIT
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
