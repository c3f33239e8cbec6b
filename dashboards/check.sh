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

# .ci/prometheus.sh installs the package when prometheus is missing, and
# keeps its service off port 9090.
install_prometheus() {
  bash .ci/prometheus.sh
  command -v promtool >/dev/null 2>&1 || { echo "dashboards: promtool is missing" >&2; return 1; }
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
