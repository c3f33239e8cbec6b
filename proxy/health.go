package proxy

import (
	"context"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/strangler-proxy/strangler/config"
	"github.com/strangler-proxy/strangler/router"
)

// defaultProbeInterval is how often Run dials each upstream when
// Options.ProbeInterval is zero; probeTimeout bounds one dial, whatever
// the interval.
const (
	defaultProbeInterval = 2 * time.Second
	probeTimeout         = time.Second
)

// UpstreamHealth is the last reachability probe of one upstream: a TCP
// connection to its URL's host, as a load balancer's check would make.
type UpstreamHealth struct {
	// URL is the upstream's URL, its password redacted.
	URL string `json:"url"`
	Up  bool   `json:"up"`
	// CheckedAt is when the probe ran; zero before the first one.
	CheckedAt time.Time `json:"checked_at"`
	Error     string    `json:"error,omitempty"`
}

// upstreamHealth holds the last probe of each upstream, which
// strangler_upstream_up, /admin/routes and /readyz report.
type upstreamHealth struct {
	mu   sync.Mutex
	last [2]UpstreamHealth // by router.Backend
}

// probeUpstream dials b's upstream in st and records the outcome, unless
// a probe that started later has already recorded its own. The dial is
// detached from ctx's cancellation: a caller that gives up must not
// record the upstream as down.
func (p *Proxy) probeUpstream(ctx context.Context, st *state, b router.Backend, timeout time.Duration) error {
	u := st.upstream[b].cfg.ParsedURL()
	started := p.now()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	err := dialCheck(ctx, u)
	h := UpstreamHealth{URL: config.Redact(u.String()), Up: err == nil, CheckedAt: started}
	if err != nil {
		h.Error = config.Redact(err.Error())
	}
	p.health.mu.Lock()
	defer p.health.mu.Unlock()
	if p.health.last[b].CheckedAt.After(started) {
		return err
	}
	p.health.last[b] = h
	up := 0.0
	if h.Up {
		up = 1
	}
	p.metrics.upstreamUp[b].Set(up)
	return err
}

// upstreamsHealth returns the last probe of each upstream by name.
func (p *Proxy) upstreamsHealth() map[string]UpstreamHealth {
	p.health.mu.Lock()
	defer p.health.mu.Unlock()
	out := make(map[string]UpstreamHealth, len(backends))
	for _, b := range backends {
		out[b.String()] = p.health.last[b]
	}
	return out
}

// runUpstreamProbes dials both upstreams every interval until ctx is done.
// Run owns it.
func (p *Proxy) runUpstreamProbes(ctx context.Context, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		st := p.state.Load()
		var wg sync.WaitGroup
		for _, b := range backends {
			wg.Go(func() { _ = p.probeUpstream(ctx, st, b, probeTimeout) })
		}
		wg.Wait()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// dialCheck opens and closes a TCP connection to u's host.
func dialCheck(ctx context.Context, u *url.URL) error {
	host := u.Host
	if u.Port() == "" {
		port := "80"
		if u.Scheme == "https" {
			port = "443"
		}
		host = net.JoinHostPort(u.Hostname(), port)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return err
	}
	return c.Close()
}
