package proxy

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/strangler-proxy/strangler/config"
)

func routeYAML(weight string) string {
	return `
sticky: { key: "header:X-User-Id", salt: "reload" }
routes:
  - { name: get-order, match: "GET /orders/{id}", weight: ` + weight + ` }
`
}

// load runs n clients against the proxy until stop is closed, counting
// failed requests and requests newpath served.
type load struct {
	failures atomic.Int64
	newpath  atomic.Int64
	total    atomic.Int64
	stop     chan struct{}
	wg       sync.WaitGroup
}

func startLoad(h *harness, n int) *load {
	l := &load{stop: make(chan struct{})}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: n}}
	for i := 0; i < n; i++ {
		l.wg.Go(func() {
			for j := 0; ; j++ {
				select {
				case <-l.stop:
					return
				default:
				}
				req, _ := http.NewRequest("GET", h.front.URL+"/orders/7", nil)
				req.Header.Set("X-User-Id", fmt.Sprintf("user-%d-%d", i, j))
				res, err := client.Do(req)
				l.total.Add(1)
				if err != nil || res.StatusCode != http.StatusOK {
					l.failures.Add(1)
					if res != nil {
						res.Body.Close()
					}
					continue
				}
				if res.Header.Get("X-Served-By") == "newpath" {
					l.newpath.Add(1)
				}
				res.Body.Close()
			}
		})
	}
	return l
}

func (l *load) finish() {
	close(l.stop)
	l.wg.Wait()
}

// servedBy asks the proxy who serves a given user now.
func servedBy(h *harness, user string) string {
	res, _ := h.get("/orders/7", "X-User-Id", user)
	return res.Header.Get("X-Served-By")
}

// allOn reports whether 20 distinct users are all served by backend.
func allOn(h *harness, backend string) bool {
	for i := 0; i < 20; i++ {
		if servedBy(h, fmt.Sprintf("probe-%d", i)) != backend {
			return false
		}
	}
	return true
}

func watch(t *testing.T, rl *config.Reloader) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = rl.Watch(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
}

func TestWeightEditTakesEffectUnderLoad(t *testing.T) {
	writes := []struct {
		name  string
		write func(t *testing.T, path, content string)
	}{
		{"plain write", func(t *testing.T, path, content string) {
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"atomic rename", func(t *testing.T, path, content string) {
			tmp := path + ".tmp"
			if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, path); err != nil {
				t.Fatal(err)
			}
		}},
		{"kubernetes symlink swap", nil},
	}
	for _, w := range writes {
		t.Run(w.name, func(t *testing.T) {
			h := newHarness(t, nil, nil, routeYAML("0"))
			rl, write := h.reloader, w.write
			if w.write == nil {
				rl, write = configMapLayout(t, h, routeYAML("0"))
			}
			applied := make(chan time.Time, 1)
			rl.Subscribe(func(*config.Snapshot) { applied <- time.Now() })
			watch(t, rl)
			l := startLoad(h, 50)
			eventually(t, 5*time.Second, "load running", func() bool { return l.total.Load() > 200 })
			if l.newpath.Load() != 0 {
				t.Fatalf("newpath served %d requests at weight 0", l.newpath.Load())
			}

			start := time.Now()
			write(t, rl.Path(), h.expand(routeYAML("100")))
			select {
			case at := <-applied:
				t.Logf("new weight swapped in %v after the write", at.Sub(start))
			case <-time.After(time.Second):
				t.Fatal("the weight edit was not applied within 1s of the write")
			}
			if !allOn(h, "newpath") {
				t.Error("requests after the swap still reach legacy")
			}
			before := l.total.Load()
			eventually(t, 5*time.Second, "more load after the change", func() bool { return l.total.Load() > before+200 })
			l.finish()
			if n := l.failures.Load(); n != 0 {
				t.Errorf("%d of %d requests failed during the reload; want 0", n, l.total.Load())
			}
		})
	}
}

// configMapLayout lays the config out as Kubernetes mounts a ConfigMap
// (strangler.yaml -> ..data/strangler.yaml, ..data -> ..<timestamp>), loads
// it into a new Reloader feeding h's proxy, and returns a writer that swaps
// the ..data symlink atomically, as the kubelet does.
func configMapLayout(t *testing.T, h *harness, yaml string) (*config.Reloader, func(*testing.T, string, string)) {
	dir := t.TempDir()
	gen := 0
	swap := func(t *testing.T, _ string, content string) {
		gen++
		version := fmt.Sprintf("..2026_11_27_%d", gen)
		if err := os.Mkdir(filepath.Join(dir, version), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, version, "strangler.yaml"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(version, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	swap(t, "", h.expand(yaml))
	path := filepath.Join(dir, "strangler.yaml")
	if err := os.Symlink(filepath.Join("..data", "strangler.yaml"), path); err != nil {
		t.Fatal(err)
	}
	rl, err := config.NewReloader(path, config.ReloaderOptions{PollInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	rl.AddProvisioner(h.proxy.Prepare)
	return rl, swap
}

func TestInvalidEditChangesNothing(t *testing.T) {
	const valid50 = `
sticky: { key: "header:X-User-Id", salt: "reload" }
routes:
  - { name: get-order, match: "GET /orders/{id}", weight: 100 }
`
	bad := []struct{ name, yaml, wantLog string }{
		{"bad yaml", "routes: [\n", "invalid YAML"},
		{"unknown key", valid50 + "lisen: x\n", "lisen: unknown key"},
		{"weight 150", strings.Replace(valid50, "weight: 100", "weight: 150", 1), "routes[0].weight"},
		{"conflicting patterns", valid50 + `  - { name: other, match: "GET /orders/{oid}" }` + "\n", "conflicts with"},
		{"bad url", "upstreams:\n  legacy: { url: \"not a url\" }\n  newpath: { url: \"{{newpath}}\" }\n" + valid50, "upstreams.legacy.url"},
		{"duplicate route name", valid50 + `  - { name: get-order, match: "GET /items" }` + "\n", "duplicate route name"},
		{"listen change", "listen: \"127.0.0.1:1\"\n" + valid50, "restart required"},
	}
	h := newHarness(t, nil, nil, valid50)
	watch(t, h.reloader)
	if !allOn(h, "newpath") {
		t.Fatal("weight 100 not in force at start")
	}
	for i, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			h.writeConfig(b.yaml)
			eventually(t, 5*time.Second, "failed reload counted", func() bool {
				v, _ := h.metric("strangler_config_reloads_total", map[string]string{"result": "failure"})
				return v == float64(i+1)
			})
			if v, _ := h.metric("strangler_config_last_reload_successful", nil); v != 0 {
				t.Errorf("last_reload_successful = %v; want 0", v)
			}
			if !allOn(h, "newpath") {
				t.Error("an invalid file changed routing")
			}
			if !strings.Contains(h.logs.String(), b.wantLog) {
				t.Errorf("log lacks %q:\n%s", b.wantLog, h.logs.String())
			}
			if f := h.reloader.LastFailure(); f == nil || !strings.Contains(f.Err.Error(), b.wantLog) {
				t.Errorf("LastFailure = %v; want it to mention %q", f, b.wantLog)
			}

			h.writeConfig(strings.Replace(valid50, "weight: 100", "weight: 0", 1))
			eventually(t, 5*time.Second, "valid edit applied", func() bool { return allOn(h, "legacy") })
			if v, _ := h.metric("strangler_config_last_reload_successful", nil); v != 1 {
				t.Errorf("last_reload_successful = %v after a valid edit; want 1", v)
			}
			h.writeConfig(valid50)
			eventually(t, 5*time.Second, "back to 100", func() bool { return allOn(h, "newpath") })
		})
	}
}

func TestSIGHUPStyleReloadAndInFlightRequestsKeepTheirConfig(t *testing.T) {
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	legacy := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/orders/slow" {
			entered <- struct{}{}
			<-release
		}
		w.Header().Set("X-Served-By", "legacy")
	})
	h := newHarness(t, legacy, nil, routeYAML("0"))
	done := make(chan string)
	go func() {
		res, _ := h.get("/orders/slow", "X-User-Id", "u1")
		done <- res.Header.Get("X-Served-By")
	}()
	<-entered
	h.writeConfig(routeYAML("100"))
	if err := h.reloader.Reload(); err != nil { // what SIGHUP calls
		t.Fatal(err)
	}
	if got := servedBy(h, "u2"); got != "newpath" {
		t.Errorf("new request served by %q after reload; want newpath", got)
	}
	close(release)
	if got := <-done; got != "legacy" {
		t.Errorf("in-flight request finished on %q; want legacy, the backend it started on", got)
	}
}

func TestRemovedRouteSeriesStayRemoved(t *testing.T) {
	release := make(chan struct{})
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Strangler-Shadow") != "" {
			<-release // the shadow is still out when the route goes
		}
		fmt.Fprintf(w, `{"v":%q}`, r.Header.Get("X-Strangler-Shadow"))
	})
	h := newHarness(t, slow, slow, `
routes:
  - { name: doomed, match: "GET /orders/{id}", shadow: { percent: 100 } }
`)
	h.get("/orders/1")
	h.writeConfig("routes: []\n")
	if err := h.reloader.Reload(); err != nil {
		t.Fatal(err)
	}
	close(release)
	h.proxy.shadows.Wait()
	if series := h.fieldSeries("strangler_field_differences_total", "doomed"); len(series) != 0 {
		t.Errorf("a removed route's field series came back: %v", series)
	}
}

// TestReloadRetiresRemovedRoutesPipelines: a route's pipelined shadow
// connections go with the route, so reloads that rename routes do not
// pile up pipelines.
func TestReloadRetiresRemovedRoutesPipelines(t *testing.T) {
	h := newHarness(t, legacyAPI(), legacyAPI(), `
routes:
  - { name: first, match: "GET /orders/{id}", shadow: { percent: 100 } }
`)
	h.get("/orders/1")
	pipelines := func() []string {
		h.proxy.client.mu.Lock()
		defer h.proxy.client.mu.Unlock()
		var routes []string
		for pk := range h.proxy.client.pipes {
			routes = append(routes, pk.route)
		}
		slices.Sort(routes)
		return routes
	}
	if got := pipelines(); !slices.Equal(got, []string{"first", "first"}) {
		t.Fatalf("pipelines before the reload: %v; want first's to each upstream", got)
	}
	h.writeConfig(`
routes:
  - { name: second, match: "GET /orders/{id}", shadow: { percent: 100 } }
`)
	if err := h.reloader.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := pipelines(); !slices.Equal(got, []string{"second", "second"}) {
		t.Errorf("pipelines after renaming the route: %v; want only second's", got)
	}
	h.get("/orders/1")
	h.proxy.shadows.Wait()
}
