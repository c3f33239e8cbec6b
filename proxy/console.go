package proxy

import (
	"cmp"
	"embed"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/strangler-proxy/strangler/router"
)

// The console's pages, style sheet and script, in the binary: it needs
// no network and no build step.
//
//go:embed console
var consoleFiles embed.FS

var consolePages = template.Must(template.New("").Funcs(template.FuncMap{
	"pct":        formatPercent,
	"ms":         formatMillis,
	"ago":        formatAgo,
	"pathEscape": url.PathEscape,
	"join":       strings.Join,
}).ParseFS(consoleFiles, "console/*.html"))

// consoleCSP lets the pages load only their own style sheet and script,
// run no inline script, and be framed by no one.
const consoleCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// consoleHandler serves the migration console under /ui/: the routes, a
// route's fields and samples, and one sample's two answers side by side.
// It only reads; re-arming a guard goes from the page's script to the
// admin API with the bearer token the engineer types in.
func (p *Proxy) consoleHandler() http.Handler {
	static, err := fs.Sub(consoleFiles, "console/static")
	if err != nil {
		panic(err) // the embedded tree is part of the binary
	}
	mux := http.NewServeMux()
	mux.Handle("GET /ui/static/", http.StripPrefix("/ui/static/", http.FileServerFS(static)))
	mux.HandleFunc("GET /ui/{$}", p.serveConsoleRoutes)
	mux.HandleFunc("GET /ui/routes/{name}", p.serveConsoleRoute)
	mux.HandleFunc("GET /ui/routes/{name}/samples/{id}", p.serveConsoleSample)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", consoleCSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store")
		mux.ServeHTTP(w, r)
	})
}

// consoleRoute is one row of the routes page.
type consoleRoute struct {
	routeView
	Tripped bool
	// Sparks are the window's traffic, newpath error rate and mismatch
	// rate, slot by slot.
	Sparks []sparkline
}

// sparkline is one small chart: an SVG polyline of the window's slots.
type sparkline struct {
	Title  string
	Points string // "x,y x,y …" in a 120×24 box
	Total  string // over the whole window
}

const sparkWidth, sparkHeight = 120, 24

func (p *Proxy) serveConsoleRoutes(w http.ResponseWriter, r *http.Request) {
	st := p.state.Load()
	now := p.now()
	rows := make([]consoleRoute, 0, len(st.routes))
	for _, br := range st.routes {
		rows = append(rows, consoleRoute{
			routeView: p.routeView(br),
			Tripped:   br.rt.guard.tripped.Load(),
			Sparks:    sparklines(br.rt.win.series(now), br.rt.win.sum(now)),
		})
	}
	p.renderConsole(w, "routes.html", map[string]any{
		"Routes": rows, "Upstreams": p.upstreamsHealth(), "Now": now, "ConfigSHA": st.snap.SHA256,
	})
}

// sparklines draws the window's slots: upstream answers (both backends,
// all roles), newpath's error rate, and the real mismatch rate, each with
// its value over the whole window, sum.
func sparklines(slots []windowCounts, sum windowCounts) []sparkline {
	traffic, errs, mismatch := make([]float64, len(slots)), make([]float64, len(slots)), make([]float64, len(slots))
	for i, s := range slots {
		traffic[i] = float64(s.calls[router.Legacy] + s.calls[router.Newpath])
		errs[i] = s.errorRate(router.Newpath)
		mismatch[i] = s.mismatchRate()
	}
	return []sparkline{
		spark("upstream answers", traffic, fmt.Sprint(sum.calls[router.Legacy]+sum.calls[router.Newpath])),
		spark("newpath error rate", errs, formatPercent(sum.errorRate(router.Newpath))),
		spark("real mismatch rate", mismatch, formatPercent(sum.mismatchRate())),
	}
}

func spark(title string, values []float64, total string) sparkline {
	top := slices.Max(values)
	if top <= 0 {
		top = 1
	}
	var pts strings.Builder
	step := float64(sparkWidth) / float64(max(len(values)-1, 1))
	for i, v := range values {
		y := float64(sparkHeight-1) - v/top*float64(sparkHeight-2)
		fmt.Fprintf(&pts, "%.1f,%.1f ", float64(i)*step, y)
	}
	return sparkline{Title: title, Points: strings.TrimSpace(pts.String()), Total: total}
}

func (p *Proxy) serveConsoleRoute(w http.ResponseWriter, r *http.Request) {
	br := p.boundRoute(r.PathValue("name"))
	if br == nil {
		p.consoleNotFound(w, "no route named "+r.PathValue("name"))
		return
	}
	view := p.routeView(br)
	fields := slices.Clone(view.Fields)
	// Real fields first: they are what blocks a promotion.
	slices.SortStableFunc(fields, func(a, b FieldVerdict) int {
		return cmp.Compare(verdictRank(a.Verdict), verdictRank(b.Verdict))
	})
	field := r.URL.Query().Get("field")
	c := &br.rt.cmp
	c.mu.Lock()
	samples := c.samples.newest(c.samples.n)
	if field != "" {
		// By label, so that "other" finds the samples of the fields
		// counted under it.
		samples = slices.DeleteFunc(samples, func(s Sample) bool {
			return !slices.ContainsFunc(s.Differences, func(d SampleDifference) bool { return c.labelled(d.Path) == field })
		})
	}
	c.mu.Unlock()
	p.renderConsole(w, "route.html", map[string]any{
		"Route": view, "Tripped": br.rt.guard.tripped.Load(), "Fields": fields, "Samples": samples, "Field": field, "Now": p.now(),
	})
}

// verdictRank orders verdicts gravest first: real, undecided, noisy,
// match.
func verdictRank(v string) int {
	return int(VerdictReal - verdictNamed(v))
}

func (p *Proxy) serveConsoleSample(w http.ResponseWriter, r *http.Request) {
	br := p.boundRoute(r.PathValue("name"))
	if br == nil {
		p.consoleNotFound(w, "no route named "+r.PathValue("name"))
		return
	}
	id, err := strconv.ParseUint(r.PathValue("id"), 10, 64)
	if err != nil {
		p.consoleNotFound(w, "a sample's id is a number, not "+r.PathValue("id"))
		return
	}
	br.rt.cmp.mu.Lock()
	samples := br.rt.cmp.samples.newest(br.rt.cmp.samples.n)
	br.rt.cmp.mu.Unlock()
	i := slices.IndexFunc(samples, func(s Sample) bool { return s.ID == id })
	if i < 0 {
		p.consoleNotFound(w, fmt.Sprintf("sample %d of route %s is not kept: newer ones may have replaced it", id, br.rt.name))
		return
	}
	s := samples[i]
	marks := make([]string, 0, len(s.Differences))
	for _, d := range s.Differences {
		marks = append(marks, d.At)
	}
	p.renderConsole(w, "sample.html", map[string]any{
		"Route": br.rt.name, "Sample": s,
		"Legacy": bodyLines(s.LegacyBody, marks), "Newpath": bodyLines(s.NewpathBody, marks),
	})
}

// boundRoute returns the route named name in the config in force, or nil.
func (p *Proxy) boundRoute(name string) *boundRoute {
	for _, br := range p.state.Load().routes {
		if br.rt.name == name {
			return br
		}
	}
	return nil
}

func (p *Proxy) consoleNotFound(w http.ResponseWriter, msg string) {
	p.renderConsoleStatus(w, http.StatusNotFound, "notfound.html", map[string]any{"Message": msg})
}

func (p *Proxy) renderConsole(w http.ResponseWriter, page string, data map[string]any) {
	p.renderConsoleStatus(w, http.StatusOK, page, data)
}

// renderConsoleStatus executes a page into a buffer first, so that a
// failure is a clean 500 rather than half a page.
func (p *Proxy) renderConsoleStatus(w http.ResponseWriter, status int, page string, data map[string]any) {
	var buf strings.Builder
	if err := consolePages.ExecuteTemplate(&buf, page, data); err != nil {
		p.logger.Error("console page failed", "page", page, "error", err.Error())
		http.Error(w, "the console page failed; the proxy's log says why", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, buf.String())
}

func formatPercent(v float64) string {
	if math.IsNaN(v) {
		return "–"
	}
	return fmt.Sprintf("%.2f%%", v*100)
}

func formatMillis(seconds float64) string {
	if math.IsNaN(seconds) || seconds == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f ms", seconds*1000)
}

func formatAgo(now time.Time, t *time.Time) string {
	if t == nil {
		return "–"
	}
	d := now.Sub(*t).Round(time.Second)
	if d < time.Second {
		return "just now"
	}
	return d.String() + " ago"
}
