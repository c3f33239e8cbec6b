#!/usr/bin/env bash
# Checks the dashboards, the alert rules and the scrape config
# (make dashboards-check): installs Prometheus when prometheus or promtool
# is missing, then runs this folder's tests with the race detector. Those
# build the proxy's and the newpath's registries, run `strangler demo` under
# a real Prometheus and evaluate every panel and alert expression
# (dashboards/README.md, "How the dashboards are tested").
#
#   bash dashboards/check.sh           install if needed, then test
#   bash dashboards/check.sh install   only install (make test calls this
#                                      before go test ./...)
#
# The Postgres samples query is tested against the throwaway cluster of
# .ci/testdb.sh, started here when STRANGLER_TEST_DATABASE_URL is unset.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"

install_prometheus() {
  if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
    return 0
  fi
  if [[ $(id -u) -ne 0 ]]; then
    echo "dashboards: prometheus and promtool are missing; install them (apt-get install prometheus)" >&2
    return 1
  fi
  echo "dashboards: installing prometheus" >&2
  export DEBIAN_FRONTEND=noninteractive
  # Wait for another apt run (a parallel make target) rather than fail.
  apt-get -o DPkg::Lock::Timeout=300 update -qq >&2
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends prometheus >&2
  # The package enables a service listening on :9090, the port of the demo's
  # admin listener. Without systemd (a container) it never starts; where it
  # did, stop it: the tests start their own Prometheus on a free port.
  if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
    systemctl disable --now prometheus.service >&2 || true
  fi
  command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1
}

install_prometheus
if [[ "${1:-}" == "install" ]]; then
  exit 0
fi

GO=${GO:-go}
if [[ -n "${STRANGLER_TEST_DATABASE_URL:-}" ]]; then
  exec "$GO" test -race -count=1 ./dashboards/
fi
exec bash .ci/testdb.sh "$GO" test -race -count=1 ./dashboards/
