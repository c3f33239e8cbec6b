// Package router matches requests to configured routes and assigns each
// request a backend: by sticky bucket, by uniform draw, or by a trusted
// override header (SPEC §4).
package router

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"

	"github.com/cespare/xxhash/v2"

	"github.com/strangler-proxy/strangler/config"
)

// Backend is one of the two upstreams.
type Backend uint8

// The backends.
const (
	Legacy Backend = iota
	Newpath
)

// String returns the backend's metric label.
func (b Backend) String() string {
	if b == Newpath {
		return "newpath"
	}
	return "legacy"
}

// Other returns the backend that is not b.
func (b Backend) Other() Backend { return 1 - b }

// Buckets is the number of sticky buckets; a weight of w percent sends the
// buckets below w × 100 to newpath.
const Buckets = 10000

// Table matches requests to the routes of one configuration. It is built
// once per configuration and safe for concurrent use.
type Table struct {
	mux *http.ServeMux

	stickyKind config.StickyKind
	stickyName string
	// saltDigest has "salt:" already written, so a bucket costs one copy and
	// the key's bytes, without building salt+":"+key.
	saltDigest xxhash.Digest

	overrideHeader string
	overrideFrom   []netip.Prefix
}

// routeHandler marks the ServeMux entries that are ours, so that ServeMux's
// own answers (redirects to cleaned paths, 404, 405) read as "unmatched".
type routeHandler int

func (routeHandler) ServeHTTP(http.ResponseWriter, *http.Request) {}

// New builds the table for a validated configuration.
func New(cfg *config.Config) (*Table, error) {
	t := &Table{
		mux:            http.NewServeMux(),
		overrideHeader: http.CanonicalHeaderKey(cfg.Overrides.Header),
		overrideFrom:   cfg.Overrides.TrustedPrefixes(),
	}
	t.stickyKind, t.stickyName = cfg.Sticky.Source()
	t.saltDigest.Reset()
	_, _ = t.saltDigest.WriteString(cfg.Sticky.Salt + ":")
	for i, r := range cfg.Routes {
		if err := config.RegisterPattern(t.mux, r.Match, routeHandler(i)); err != nil {
			return nil, fmt.Errorf("route %q: %w", r.Name, err)
		}
	}
	return t, nil
}

// Match returns the index in Config.Routes of the route a request
// matches, with net/http.ServeMux precedence, or ok false. path is the
// decoded path, as net/http's Request.URL.Path; a path that is not clean
// (a "..", a "//") matches nothing.
func (t *Table) Match(method, host, path string) (index int, ok bool) {
	m := matchRequests.Get().(*matchRequest)
	m.req.Method, m.req.Host = method, host
	m.url.Path = path
	h, _ := t.mux.Handler(&m.req)
	m.req.Method, m.req.Host, m.url.Path = "", "", ""
	matchRequests.Put(m)
	i, ok := h.(routeHandler)
	return int(i), ok
}

// matchRequest is what ServeMux reads of a request, pooled: routing
// allocates nothing of its own.
type matchRequest struct {
	req http.Request
	url url.URL
}

var matchRequests = sync.Pool{New: func() any {
	m := &matchRequest{}
	m.req.URL = &m.url
	return m
}}

// Request is what assigning a backend reads of a request: a header (by
// its canonical name), a cookie and a query parameter, "" when absent.
type Request interface {
	Header(name string) string
	Cookie(name string) string
	Query(name string) string
}

// HTTPRequest adapts a net/http request, for tools and tests.
func HTTPRequest(r *http.Request) Request { return httpRequest{r} }

type httpRequest struct{ r *http.Request }

func (h httpRequest) Header(name string) string { return h.r.Header.Get(name) }
func (h httpRequest) Query(name string) string  { return h.r.URL.Query().Get(name) }
func (h httpRequest) Cookie(name string) string {
	if c, err := h.r.Cookie(name); err == nil {
		return c.Value
	}
	return ""
}

// Assignment is the backend chosen for one request and why.
type Assignment struct {
	Backend Backend
	// Overridden is true when a trusted override header chose the backend.
	Overridden bool
	// Bucket is the sticky bucket, or -1 when the request had no sticky key.
	Bucket int
}

// Assign chooses the backend of a request to a route whose effective
// newpath weight is weightBasisPoints (0..10000). client is the peer
// address, used for override trust and the ip sticky key.
func (t *Table) Assign(r Request, client netip.Addr, weightBasisPoints int) Assignment {
	if v := r.Header(t.overrideHeader); v != "" && t.overrideTrusted(client) {
		switch strings.ToLower(v) {
		case "newpath":
			return Assignment{Backend: Newpath, Overridden: true, Bucket: -1}
		case "legacy":
			return Assignment{Backend: Legacy, Overridden: true, Bucket: -1}
		}
	}
	key, ok := t.stickyKey(r, client)
	if !ok {
		// No key: a uniform draw per request.
		return Assignment{Backend: newpathIf(rand.IntN(Buckets) < weightBasisPoints), Bucket: -1}
	}
	bucket := t.bucketFor(key)
	return Assignment{Backend: newpathIf(bucket < weightBasisPoints), Bucket: bucket}
}

func newpathIf(cond bool) Backend {
	if cond {
		return Newpath
	}
	return Legacy
}

// OverrideHeader returns the canonical name of the override header, which
// the proxy strips before forwarding.
func (t *Table) OverrideHeader() string { return t.overrideHeader }

func (t *Table) overrideTrusted(client netip.Addr) bool {
	client = client.Unmap()
	for _, p := range t.overrideFrom {
		if p.Contains(client) {
			return true
		}
	}
	return false
}

func (t *Table) stickyKey(r Request, client netip.Addr) (string, bool) {
	var key string
	switch t.stickyKind {
	case config.StickyHeader:
		key = r.Header(t.stickyName)
	case config.StickyCookie:
		key = r.Cookie(t.stickyName)
	case config.StickyQuery:
		key = r.Query(t.stickyName)
	case config.StickyIP:
		if client.IsValid() {
			key = client.Unmap().String()
		}
	}
	return key, key != ""
}

// bucketFor returns xxhash64(salt + ":" + key) mod Buckets, the same on every
// route and every replica with the same salt: raising a weight only moves
// users from legacy to newpath.
func (t *Table) bucketFor(key string) int {
	d := t.saltDigest
	_, _ = d.WriteString(key)
	return int(d.Sum64() % Buckets)
}

// BucketFor is bucketFor for a salt, for tools and tests that must agree with
// the proxy on a user's bucket.
func BucketFor(salt, key string) int {
	return int(xxhash.Sum64String(salt+":"+key) % Buckets)
}
