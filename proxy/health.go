package proxy

import (
	"context"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/strangler-proxy/strangler/config"
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

// upstreamHealth holds the last probe of each upstream by name, which
// strangler_upstream_up, /admin/routes and /readyz report.
type upstreamHealth struct {
	mu   sync.Mutex
	last map[string]UpstreamHealth
	// exported are the names strangler_upstream_up has a series of.
	exported map[string]bool
}

// probeUpstream dials u, the upstream named name, and records the
// outcome, unless a probe that started later has already recorded its
// own, or a reload has removed the upstream meanwhile. The dial is
// detached from ctx's cancellation: a caller that gives up must not
// record the upstream as down.
func (p *Proxy) probeUpstream(ctx context.Context, name string, u *upstream, timeout time.Duration) error {
	target := u.cfg.ParsedURL()
	started := p.now()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	err := dialCheck(ctx, target)
	h := UpstreamHealth{URL: config.Redact(target.String()), Up: err == nil, CheckedAt: started}
	if err != nil {
		h.Error = config.Redact(err.Error())
	}
	p.health.mu.Lock()
	defer p.health.mu.Unlock()
	if p.health.last[name].CheckedAt.After(started) || p.state.Load().upstreams[name] == nil {
		return err
	}
	if p.health.last == nil {
		p.health.last = map[string]UpstreamHealth{}
	}
	p.health.last[name] = h
	up := 0.0
	if h.Up {
		up = 1
	}
	p.metrics.upstreamUp.WithLabelValues(name).Set(up)
	return err
}

// trackUpstreams exports strangler_upstream_up at 0 for each upstream of
// st not probed yet, and forgets the upstreams a reload removed. activate
// calls it after storing st, so that a probe of a removed upstream that
// ends later records nothing (see probeUpstream).
func (p *Proxy) trackUpstreams(st *state) {
	p.health.mu.Lock()
	defer p.health.mu.Unlock()
	for name := range p.health.exported {
		if st.upstreams[name] == nil {
			delete(p.health.last, name)
			delete(p.health.exported, name)
			p.metrics.upstreamUp.DeleteLabelValues(name)
		}
	}
	if p.health.exported == nil {
		p.health.exported = map[string]bool{}
	}
	for name := range st.upstreams {
		p.metrics.upstreamUp.WithLabelValues(name)
		p.health.exported[name] = true
	}
}

// upstreamsHealth returns the last probe of each upstream by name; one
// not probed yet has its URL and a zero CheckedAt.
func (p *Proxy) upstreamsHealth() map[string]UpstreamHealth {
	st := p.state.Load()
	p.health.mu.Lock()
	defer p.health.mu.Unlock()
	out := make(map[string]UpstreamHealth, len(st.upstreams))
	for name, u := range st.upstreams {
		h, ok := p.health.last[name]
		if !ok {
			h.URL = config.Redact(u.cfg.ParsedURL().String())
		}
		out[name] = h
	}
	return out
}

// runUpstreamProbes dials every upstream every interval until ctx is
// done. Run owns it.
func (p *Proxy) runUpstreamProbes(ctx context.Context, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		st := p.state.Load()
		var wg sync.WaitGroup
		for name, u := range st.upstreams {
			wg.Go(func() { _ = p.probeUpstream(ctx, name, u, probeTimeout) })
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
