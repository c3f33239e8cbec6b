package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// Row keys, as -rows and BENCH_TARGETS name them, in table order: the
// plain proxies, then the shadowing ones.
const (
	rowDirect          = "direct"
	rowBare            = "bare"
	rowFasthttp        = "fasthttp"
	rowNginxSplit      = "nginx-split"
	rowHAProxy         = "haproxy"
	rowStranglerSplit  = "strangler-split"
	rowNginxMirror     = "nginx-mirror"
	rowStranglerShadow = "strangler-shadow"
	rowSlowOff         = "strangler-slow-off"
	rowSlowShadow      = "strangler-slow-shadow"
)

// A row is one line of the table: what runs in front of the backends.
type row struct {
	key, name string
	// slow: the row runs against the slow newpath, with the slow load.
	slow  bool
	start func(ctx context.Context) (*running, error)
}

// running is a row's proxy, started for one round.
type running struct {
	url  string   // what wrk drives
	proc *process // nil: nothing to stop (the direct row)
	// strangler rows: the admin listener and what its /metrics must show.
	admin string
	claim claim
	// peers that split: the access log, the token of its last field that
	// names the newpath, and the share of it they claim, in percent.
	accessLog, newpathToken string
	wantShare               float64
}

// stop stops the row's proxy, if it has one.
func (r *running) stop() {
	if r.proc != nil {
		r.proc.stop()
	}
}

// rows returns every row the harness knows, in table order.
func (b *bench) rows() []row {
	slow := fmt.Sprintf("%s newpath", b.opt.slowLatency)
	if b.opt.slowRate > 0 {
		slow += fmt.Sprintf(", paced %d/s", b.opt.slowRate)
	}
	return []row{
		{key: rowDirect, name: "direct backend", start: func(context.Context) (*running, error) {
			return &running{url: "http://" + b.legacy + b.opt.path}, nil
		}},
		{key: rowBare, name: "bare httputil.ReverseProxy", start: func(ctx context.Context) (*running, error) {
			return b.startForwarder(ctx, "bareproxy", b.opt.bareproxy, "http://"+b.legacy)
		}},
		{key: rowFasthttp, name: "bare fasthttp forwarder", start: func(ctx context.Context) (*running, error) {
			return b.startForwarder(ctx, "fastproxy", b.opt.fastproxy, b.legacy)
		}},
		{key: rowNginxSplit, name: "nginx split_clients 10%", start: func(ctx context.Context) (*running, error) {
			return b.startNginx(ctx, "split")
		}},
		{key: rowHAProxy, name: "HAProxy hdr hash 10%", start: b.startHAProxy},
		{key: rowStranglerSplit, name: "strangler split 10%", start: func(ctx context.Context) (*running, error) {
			return b.startStrangler(ctx, rowStranglerSplit, b.newpath, b.opt.shadowMaxInFlight, claim{weight: 10})
		}},
		{key: rowNginxMirror, name: "nginx mirror 100%", start: func(ctx context.Context) (*running, error) {
			return b.startNginx(ctx, "mirror")
		}},
		{key: rowStranglerShadow, name: "strangler shadow 100% + compare", start: func(ctx context.Context) (*running, error) {
			return b.startStrangler(ctx, rowStranglerShadow, b.newpath, b.opt.shadowMaxInFlight, claim{shadowPercent: 100})
		}},
		{key: rowSlowOff, name: "strangler shadow off, " + slow, slow: true, start: func(ctx context.Context) (*running, error) {
			return b.startStrangler(ctx, rowSlowOff, b.slowNewpath, b.opt.slowMaxInFlight, claim{})
		}},
		{key: rowSlowShadow, name: "strangler shadow 100%, " + slow, slow: true, start: func(ctx context.Context) (*running, error) {
			return b.startStrangler(ctx, rowSlowShadow, b.slowNewpath, b.opt.slowMaxInFlight, claim{shadowPercent: 100, saturates: true})
		}},
	}
}

// anyStatus accepts every HTTP answer as ready: a proxy is up once it answers.
func anyStatus(int) bool { return true }

// startReady starts argv and waits until readyURL answers with a status ok
// accepts; on failure nothing is left running.
func (b *bench) startReady(ctx context.Context, name, readyURL string, ok func(int) bool, argv ...string) (*process, error) {
	p, err := startProcess(name, b.file(name+".log"), argv...)
	if err != nil {
		return nil, err
	}
	if err := p.waitReady(ctx, b.client, readyURL, ok, b.opt.readyTimeout); err != nil {
		p.stop()
		return nil, err
	}
	return p, nil
}

// listenAddr is a free loopback address for a proxy.
func listenAddr() (string, error) {
	port, err := freePort()
	if err != nil {
		return "", err
	}
	return "127.0.0.1:" + strconv.Itoa(port), nil
}

// startForwarder runs one of the bare forwarders (bench/bareproxy,
// bench/fastproxy) in front of legacy.
func (b *bench) startForwarder(ctx context.Context, name, bin, upstream string) (*running, error) {
	addr, err := listenAddr()
	if err != nil {
		return nil, err
	}
	url := "http://" + addr + b.opt.path
	p, err := b.startReady(ctx, name, url, anyStatus, bin, "-listen", addr, "-upstream", upstream)
	if err != nil {
		return nil, err
	}
	return &running{url: url, proc: p}, nil
}

// peerConfig is what the nginx and HAProxy templates need.
type peerConfig struct {
	Dir, Mode, Listen, Legacy, Newpath string
	Workers                            int
}

// startNginx runs nginx in mode "split" or "mirror" (templates/nginx.conf.tmpl).
func (b *bench) startNginx(ctx context.Context, mode string) (*running, error) {
	addr, err := listenAddr()
	if err != nil {
		return nil, err
	}
	dir := b.file("nginx-" + mode)
	// nginx workers run as nobody and must reach their paths in here.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	accessLog := filepath.Join(dir, "access.log")
	if err := os.Remove(accessLog); err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	conf := filepath.Join(dir, "nginx.conf")
	cfg := peerConfig{Dir: dir, Mode: mode, Listen: addr, Legacy: b.legacy, Newpath: b.newpath, Workers: b.opt.peerWorkers}
	if err := b.render("nginx.conf.tmpl", conf, cfg); err != nil {
		return nil, err
	}
	argv := []string{b.opt.nginx, "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", conf}
	if err := checkConfig(append(argv, "-t", "-q")...); err != nil {
		return nil, err
	}
	url := "http://" + addr + b.opt.path
	p, err := b.startReady(ctx, "nginx-"+mode, url, anyStatus, argv...)
	if err != nil {
		return nil, err
	}
	r := &running{url: url, proc: p}
	if mode == "split" {
		r.accessLog, r.newpathToken, r.wantShare = accessLog, b.newpath, 10
	}
	return r, nil
}

// startHAProxy runs HAProxy (templates/haproxy.cfg.tmpl); its access log
// goes to stdout, the process's log.
func (b *bench) startHAProxy(ctx context.Context) (*running, error) {
	addr, err := listenAddr()
	if err != nil {
		return nil, err
	}
	conf := b.file("haproxy.cfg")
	cfg := peerConfig{Listen: addr, Legacy: b.legacy, Newpath: b.newpath, Workers: b.opt.peerWorkers}
	if err := b.render("haproxy.cfg.tmpl", conf, cfg); err != nil {
		return nil, err
	}
	if err := checkConfig(b.opt.haproxy, "-c", "-q", "-f", conf); err != nil {
		return nil, err
	}
	url := "http://" + addr + b.opt.path
	p, err := b.startReady(ctx, "haproxy", url, anyStatus, b.opt.haproxy, "-db", "-f", conf)
	if err != nil {
		return nil, err
	}
	return &running{url: url, proc: p, accessLog: p.log, newpathToken: "newpath", wantShare: 10}, nil
}

// checkConfig runs a proxy's own config check (nginx -t, haproxy -c).
func checkConfig(argv ...string) error {
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%v: %w: %s", argv, err, bytes.TrimSpace(out))
	}
	return nil
}

// stranglerConfig is what templates/strangler.yaml.tmpl needs.
type stranglerConfig struct {
	Listen, Admin, Legacy, Newpath, Route string
	MaxInFlight, PipelineDepth            int
	Weight, ShadowPercent                 float64
}

// startStrangler runs `strangler serve` on route benchRoute with the
// weight and shadow percent of cl, newpath at newpath.
func (b *bench) startStrangler(ctx context.Context, key, newpath string, maxInFlight int, cl claim) (*running, error) {
	addr, err := listenAddr()
	if err != nil {
		return nil, err
	}
	admin, err := listenAddr()
	if err != nil {
		return nil, err
	}
	conf := b.file(key + ".yaml")
	cfg := stranglerConfig{Listen: addr, Admin: admin, Legacy: b.legacy, Newpath: newpath, Route: benchRoute,
		MaxInFlight: maxInFlight, PipelineDepth: b.opt.pipelineDepth, Weight: cl.weight, ShadowPercent: cl.shadowPercent}
	if err := b.render("strangler.yaml.tmpl", conf, cfg); err != nil {
		return nil, err
	}
	url := "http://" + addr + b.opt.path
	p, err := b.startReady(ctx, key, "http://"+admin+"/healthz", func(s int) bool { return s == 200 },
		b.opt.strangler, "serve", "--config", conf)
	if err != nil {
		return nil, err
	}
	if err := p.waitReady(ctx, b.client, url, anyStatus, b.opt.readyTimeout); err != nil {
		p.stop()
		return nil, err
	}
	return &running{url: url, proc: p, admin: "http://" + admin, claim: cl}, nil
}

// startBackends starts the legacy simulator, a second one standing in for
// the newpath (both sides cost the same and answer alike, so only the
// proxies differ and comparisons match), and with slow a third that
// answers every order request after -slow-latency. They serve every round.
func (b *bench) startBackends(ctx context.Context, slow bool) error {
	type backend struct {
		name string
		addr *string // where its address goes
		args []string
	}
	backends := []backend{{"legacy", &b.legacy, nil}, {"newpath", &b.newpath, nil}}
	if slow {
		backends = append(backends, backend{"slow-newpath", &b.slowNewpath, []string{"--latency", b.opt.slowLatency.String()}})
	}
	for _, be := range backends {
		addr, err := listenAddr()
		if err != nil {
			return err
		}
		downstream, err := listenAddr()
		if err != nil {
			return err
		}
		argv := append([]string{b.opt.legacyorders, "--listen", addr, "--downstream-listen", downstream}, be.args...)
		// /healthz answers at once, also on the slow newpath.
		p, err := b.startReady(ctx, be.name, "http://"+addr+"/healthz", anyStatus, argv...)
		if err != nil {
			return err
		}
		b.backends = append(b.backends, p)
		*be.addr = addr
	}
	return nil
}

// render writes the template name, executed on data, to file.
func (b *bench) render(name, file string, data any) error {
	var buf bytes.Buffer
	if err := b.templates.ExecuteTemplate(&buf, name, data); err != nil {
		return fmt.Errorf("render %s: %w", name, err)
	}
	return os.WriteFile(file, buf.Bytes(), 0o644)
}

// slowShadowSoak is the soak after the rounds: strangler shadowing every
// request to the slow newpath for -soak, then its VmRSS.
type slowShadowSoak struct {
	duration time.Duration
	wrk      wrkResult
	rssMB    float64
	counts   counts
	problems []string
}
