// Package dashboards holds no Go code of its own: it is the home of the
// Grafana dashboards (*.json, generated from their Go definitions in
// internal/gen by `make dashboards`), their provisioning files
// (provisioning/), and the Prometheus alert and recording rules and scrape
// config (prometheus/) that engineers use to watch a migration (SPEC.md
// §12, dashboards/README.md).
//
// Its tests keep those files honest: the committed JSON is what the
// generator renders; a lint builds the proxy's and the newpath's real
// metric registries and checks every query against them; and an
// end-to-end test evaluates every panel, alert and recording expression
// through a real Prometheus scraping `strangler demo`.
package dashboards
