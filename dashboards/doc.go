// Package dashboards holds no Go code of its own: it is the home of the
// Grafana dashboards (*.json), their provisioning files (provisioning/),
// and the Prometheus alert rules and scrape config (prometheus/) that
// engineers use to watch a migration (SPEC.md §12, dashboards/README.md).
//
// Its tests keep those files honest: a lint that builds the proxy's and
// the newpath's real metric registries and checks every query against
// them, and an end-to-end test that evaluates every panel and alert
// expression through a real Prometheus scraping `strangler demo`.
package dashboards
