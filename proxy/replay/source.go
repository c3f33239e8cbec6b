// Package replay sends recorded requests (the samples and captures of
// strangler's proxy) to legacy and newpath again, compares the answers with
// the routes' compare rules, and tells what a newpath change fixed and what
// it broke: strangler replay, a parity suite built from real traffic.
package replay

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/strangler-proxy/strangler/proxy"
)

// Filter selects the records a source yields.
type Filter struct {
	// Routes, when set, keeps only these routes' records.
	Routes []string
	// Since, when set, keeps only records at or after it.
	Since time.Time
}

func (f Filter) keep(s *proxy.Sample) bool {
	return (len(f.Routes) == 0 || slices.Contains(f.Routes, s.Route)) && (f.Since.IsZero() || !s.Time.Before(f.Since))
}

// Load reads the records of from: a postgres:// URL (strangler_divergences),
// an http(s):// admin URL of a running proxy (GET /admin/divergences), or
// a file of JSON Lines (a capture.file, one sample a line).
func Load(ctx context.Context, from string, f Filter) ([]proxy.Sample, error) {
	switch {
	case strings.HasPrefix(from, "postgres://") || strings.HasPrefix(from, "postgresql://"):
		return loadPostgres(ctx, from, f)
	case strings.HasPrefix(from, "http://") || strings.HasPrefix(from, "https://"):
		return loadAdmin(ctx, from, f)
	}
	return loadFile(from, f)
}

// loadFile reads a JSON Lines file of samples. A line that is no sample
// is an error naming its line: a parity suite that silently skips
// records would pass for the wrong reason.
func loadFile(path string, f Filter) ([]proxy.Sample, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	var out []proxy.Sample
	sc := bufio.NewScanner(file)
	sc.Buffer(nil, 64<<20)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var s proxy.Sample
		if err := json.Unmarshal(line, &s); err != nil {
			return nil, fmt.Errorf("%s:%d: not a recorded request: %w", path, n, err)
		}
		if f.keep(&s) {
			out = append(out, s)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return out, nil
}

// loadAdmin reads a running proxy's samples: every route's ring buffer.
func loadAdmin(ctx context.Context, admin string, f Filter) ([]proxy.Sample, error) {
	routes := f.Routes
	if len(routes) == 0 {
		routes = []string{""}
	}
	var out []proxy.Sample
	for _, route := range routes {
		q := url.Values{"limit": {"1000000"}}
		if route != "" {
			q.Set("route", route)
		}
		u := strings.TrimSuffix(admin, "/") + "/admin/divergences?" + q.Encode()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return nil, err
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, err
		}
		body, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil {
			return nil, err
		}
		if res.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("GET %s: %s: %s", u, res.Status, bytes.TrimSpace(body))
		}
		var page struct{ Samples []proxy.Sample }
		if err := json.Unmarshal(body, &page); err != nil {
			return nil, fmt.Errorf("GET %s: %w", u, err)
		}
		for _, s := range page.Samples {
			if f.keep(&s) {
				out = append(out, s)
			}
		}
	}
	// Oldest first, as a file and Postgres give them.
	slices.SortStableFunc(out, func(a, b proxy.Sample) int { return a.Time.Compare(b.Time) })
	return out, nil
}

// loadPostgres reads strangler_divergences. Postgres keeps no answer
// bodies: its writes cannot be replayed (see Run).
func loadPostgres(ctx context.Context, dsn string, f Filter) ([]proxy.Sample, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, `SELECT id, time, route, method, path, query, request_id, trace_id, legacy_status, newpath_status,
       differences, request_header, request_body, request_body_base64, dry_run
FROM strangler_divergences
WHERE (coalesce(cardinality($1::text[]), 0) = 0 OR route = ANY($1)) AND time >= $2
ORDER BY time, id`, f.Routes, f.Since)
	if err != nil {
		return nil, fmt.Errorf("read strangler_divergences: %w", err)
	}
	var out []proxy.Sample
	for rows.Next() {
		var s proxy.Sample
		var id int64
		var diffs, header []byte
		if err := rows.Scan(&id, &s.Time, &s.Route, &s.Method, &s.Path, &s.Query, &s.RequestID, &s.TraceID,
			&s.LegacyStatus, &s.NewpathStatus, &diffs, &header, &s.RequestBody, &s.RequestBodyBase64, &s.DryRun); err != nil {
			return nil, fmt.Errorf("read strangler_divergences: %w", err)
		}
		s.ID, s.Result = uint64(id), "mismatch"
		if err := json.Unmarshal(diffs, &s.Differences); err != nil {
			return nil, fmt.Errorf("strangler_divergences row %d: differences: %w", id, err)
		}
		if err := json.Unmarshal(header, &s.RequestHeader); err != nil {
			return nil, fmt.Errorf("strangler_divergences row %d: request_header: %w", id, err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read strangler_divergences: %w", err)
	}
	return out, nil
}
