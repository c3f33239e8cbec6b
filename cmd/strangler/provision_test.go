package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/strangler-proxy/strangler/config"
)

// unprovisionable are configs that decode but that the proxy could not
// put in force. Those marked provision pass config.Load and are caught by
// proxy.Provision alone; the others by validation's deeper checks. Each
// must fail check, serve's start-up and a live reload, naming key with
// problem. provisionConfig writes the file around a get-order route;
// every broken one asks for weight 0, so a reload that wrongly took effect
// would move traffic back to legacy.
var unprovisionable = []struct {
	name      string
	route     string // the route's extra keys
	top       string // extra top-level keys
	key       string
	problem   string
	provision bool
}{
	{"empty ignore segment", `compare: {ignore: ["/body//updated_at"]}`, "", "routes[0].compare.ignore[0]", "segment 2 is empty", true},
	{"second ignore path", `compare: {ignore: ["/body/a", "/headers//x"]}`, "", "routes[0].compare.ignore[1]", "segment 2 is empty", true},
	{"trailing slash in unordered", `compare: {unordered: ["/body/items/"]}`, "", "routes[0].compare.unordered[0]", "segment 3 is empty", true},
	{"bad escape in unordered", `compare: {unordered: ["/body/items~2"]}`, "", "routes[0].compare.unordered[0]", "~ must be followed by 0 or 1", true},
	{"bogus sslmode", "", store("sslmode=bogus"), "divergence_store.database_url", "sslmode is invalid", true},
	{"missing root certificate", "", store("sslmode=verify-full&sslrootcert=/nonexistent/root.crt"), "divergence_store.database_url", "unable to read CA file", true},
	{"connect_timeout not a number", "", store("connect_timeout=soon"), "divergence_store.database_url", "invalid connect_timeout", true},
	{"no pool connections", "", store("pool_max_conns=0"), "divergence_store.database_url", "pool_max_conns too small", true},
	{"bogus target_session_attrs", "", store("target_session_attrs=bogus"), "divergence_store.database_url", "unknown target_session_attrs value", true},
	{"guard regexp does not compile", guardWith("http://127.0.0.1:9", `job=~"(unclosed"`), "", "routes[0].guard.prometheus_matchers", "missing closing )", false},
	{"guard matcher with a bad escape", guardWith("http://127.0.0.1:9", `job="\q"`), "", "routes[0].guard.prometheus_matchers", "bad escape", false},
	{"guard prometheus port out of range", guardWith("http://127.0.0.1:70000", ""), "", "routes[0].guard.prometheus_url", "not between 1 and 65535", false},
	{"upstream port out of range", "", "", "upstreams.newpath.url", "not between 1 and 65535", false},
}

// store is a divergence store on a database URL with query.
func store(query string) string {
	return `divergence_store: {database_url: "postgres://db/x?` + query + `"}`
}

// guardWith is a prometheus guard on prometheusURL with matchers.
func guardWith(prometheusURL, matchers string) string {
	return fmt.Sprintf(`guard: {max_error_rate: 0.5, max_divergence_rate: 0.5, min_samples: 10, window: 1m, source: prometheus, prometheus_url: %q, prometheus_matchers: '%s'}`,
		prometheusURL, matchers)
}

// provisionConfig writes the config of one case: the upstreams, a
// get-order route at weight with the route's extra keys, and top.
func provisionConfig(legacyURL, newpathURL string, weight int, route, top string) string {
	if route != "" {
		route = ", " + route
	}
	return fmt.Sprintf(`listen: "127.0.0.1:0"
admin: { listen: "127.0.0.1:0" }
log: { access: false }
upstreams:
  legacy: { url: %q }
  newpath: { url: %q }
routes:
  - { name: get-order, match: "GET /orders/{id}", weight: %d%s }
%s
`, legacyURL, newpathURL, weight, route, top)
}

// caseConfig is the broken config of case i.
func caseConfig(i int, legacyURL, newpathURL string) string {
	tc := unprovisionable[i]
	if tc.key == "upstreams.newpath.url" {
		newpathURL = "http://127.0.0.1:99999"
	}
	return provisionConfig(legacyURL, newpathURL, 0, tc.route, tc.top)
}

func TestCheckRefusesWhatCannotBeProvisioned(t *testing.T) {
	for i, tc := range unprovisionable {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "strangler.yaml")
			if err := os.WriteFile(path, []byte(caseConfig(i, "http://127.0.0.1:9001", "http://127.0.0.1:9002")), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, _, err := config.Load(path); tc.provision && err != nil {
				t.Fatalf("config.Load: %v; want this one to pass validation and fail provisioning", err)
			}
			var stdout, stderr bytes.Buffer
			if code := run(context.Background(), []string{"check", "--config", path}, &stdout, &stderr); code != 1 {
				t.Fatalf("check exit code = %d; want 1\nstdout: %s\nstderr: %s", code, &stdout, &stderr)
			}
			if !regexp.MustCompile(`(?m)^  ` + regexp.QuoteMeta(tc.key) + `: .*` + regexp.QuoteMeta(tc.problem)).MatchString(stderr.String()) {
				t.Errorf("check stderr = %q; want it to name %s: …%s", &stderr, tc.key, tc.problem)
			}
			// serve refuses to start on it, naming the key too. (A serve
			// that started would run until the context ends.)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := serve(ctx, path, time.Second, io.Discard, nil)
			if err == nil || !strings.Contains(err.Error(), tc.key+": ") || !strings.Contains(err.Error(), tc.problem) {
				t.Errorf("serve: %v; want a start-up error naming %s", err, tc.key)
			}
		})
	}
}

func TestReloadRefusesWhatCannotBeProvisioned(t *testing.T) {
	backend := func(name string) *httptest.Server {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, name) }))
		t.Cleanup(s.Close)
		return s
	}
	legacy, newpath := backend("legacy"), backend("newpath")
	path := filepath.Join(t.TempDir(), "strangler.yaml")
	good := provisionConfig(legacy.URL, newpath.URL, 100, "", "")
	if err := os.WriteFile(path, []byte(good), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan [2]string, 1)
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, path, 5*time.Second, io.Discard, func(p, a string) { addrs <- [2]string{p, a} })
	}()
	var front, admin string
	select {
	case a := <-addrs:
		front, admin = "http://"+a[0], "http://"+a[1]
	case err := <-done:
		t.Fatalf("serve: %v", err)
	}
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()

	for i, tc := range unprovisionable {
		t.Run(tc.name, func(t *testing.T) {
			failures := reloadCount(t, admin, "failure")
			if err := replaceFile(path, caseConfig(i, legacy.URL, newpath.URL)); err != nil {
				t.Fatal(err)
			}
			waitUntil(t, "the reload failed", func() bool { return reloadCount(t, admin, "failure") > failures })
			if got := metricValue(t, admin, "strangler_config_last_reload_successful"); got != "0" {
				t.Errorf("strangler_config_last_reload_successful = %s; want 0", got)
			}
			var view struct {
				LastError string `json:"last_reload_error"`
			}
			getJSON(t, admin+"/admin/config", &view)
			// The problem too: a database_url case also trips the
			// restart-key check, which names the same key.
			if !strings.Contains(view.LastError, tc.key+": ") || !strings.Contains(view.LastError, tc.problem) {
				t.Errorf("/admin/config last_reload_error = %q; want it to name %s: …%s", view.LastError, tc.key, tc.problem)
			}
			// The old config (weight 100) still serves.
			if got := get(t, front+"/orders/ord_1"); got != "newpath" {
				t.Errorf("GET /orders/ord_1 answered by %s; want newpath, as the config in force says", got)
			}

			if err := replaceFile(path, good); err != nil {
				t.Fatal(err)
			}
			waitUntil(t, "the good config is back", func() bool {
				return metricValue(t, admin, "strangler_config_last_reload_successful") == "1"
			})
		})
	}
}

// waitUntil polls cond until it holds or ten seconds pass.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// metricValue returns the value of a series (labels sorted, as the text
// format writes them) on admin's /metrics, or "" when it is not there.
func metricValue(t *testing.T, admin, series string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(get(t, admin+"/metrics"))
	if m == nil {
		return ""
	}
	return m[1]
}

func reloadCount(t *testing.T, admin, result string) float64 {
	t.Helper()
	n, err := strconv.ParseFloat(metricValue(t, admin, `strangler_config_reloads_total{result="`+result+`"}`), 64)
	if err != nil {
		t.Fatalf("strangler_config_reloads_total{result=%q}: %v", result, err)
	}
	return n
}

// replaceFile swaps in a new content at path in one rename, as editors and
// ConfigMap updates do: a reload never reads it half written.
func replaceFile(path, content string) error {
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
