package config

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/client_golang/prometheus"
)

// Snapshot is a validated configuration with its provenance.
type Snapshot struct {
	Config *Config
	// SHA256 is the hex digest of the file's bytes.
	SHA256   string
	LoadedAt time.Time
}

// ReloadFailure is the last failed reload.
type ReloadFailure struct {
	Err error
	At  time.Time
}

// ReloaderOptions configures a Reloader. The zero value of each field is a
// documented default.
type ReloaderOptions struct {
	// Registerer receives the reload metrics; nil registers nowhere.
	Registerer prometheus.Registerer
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Now defaults to time.Now.
	Now func() time.Time
	// PollInterval is how often the file is re-read as a backstop for file
	// systems that deliver no change events. Default 1s.
	PollInterval time.Duration
}

// Reloader owns the running configuration: it loads the file at start, and
// reloads it on Reload (SIGHUP) and on changes Watch sees. An invalid file
// changes nothing; subscribers see only validated configurations.
type Reloader struct {
	path    string
	logger  *slog.Logger
	now     func() time.Time
	poll    time.Duration
	metrics reloadMetrics

	mu           sync.Mutex // serializes reloads, provisioner and subscriber calls
	provisioners []Provisioner
	subscribers  []func(*Snapshot)

	current atomic.Pointer[Snapshot]
	failure atomic.Pointer[ReloadFailure]
	// missingSince is when the file was first found missing, zero while it
	// is there; under mu.
	missingSince time.Time
}

// missingGrace is how long the file may be missing before that is a failed
// reload: an editor's rename takes milliseconds; a deleted file or a
// ConfigMap key gone would leave the next restart unable to start, and the
// reload metric must say so before then.
const missingGrace = time.Second

type reloadMetrics struct {
	successful prometheus.Gauge
	successTS  prometheus.Gauge
	reloads    *prometheus.CounterVec
}

// ErrRestartRequired is returned by Reload when the new file changes a key
// that only a restart can apply.
var ErrRestartRequired = errors.New("restart required")

// NewReloader loads path and returns a Reloader serving it. It fails when the
// initial file is invalid: a proxy never starts on a config it cannot check.
func NewReloader(path string, opts ReloaderOptions) (*Reloader, error) {
	r := &Reloader{
		path:   path,
		logger: opts.Logger,
		now:    opts.Now,
		poll:   opts.PollInterval,
	}
	if r.logger == nil {
		r.logger = slog.Default()
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.poll <= 0 {
		r.poll = time.Second
	}
	r.metrics = reloadMetrics{
		successful: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "strangler_config_last_reload_successful",
			Help: "Whether the last configuration load or reload succeeded (1) or failed (0).",
		}),
		successTS: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "strangler_config_last_reload_success_timestamp_seconds",
			Help: "Unix time of the last successful configuration load or reload.",
		}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "strangler_config_reloads_total",
			Help: "Configuration reloads by result (the initial load is not counted).",
		}, []string{"result"}),
	}
	r.metrics.reloads.WithLabelValues("success")
	r.metrics.reloads.WithLabelValues("failure")
	if opts.Registerer != nil {
		for _, c := range []prometheus.Collector{r.metrics.successful, r.metrics.successTS, r.metrics.reloads} {
			if err := opts.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("register reload metrics: %w", err)
			}
		}
	}

	cfg, data, err := Load(path)
	if err != nil {
		return nil, fmt.Errorf("load config %q: %w", path, err)
	}
	r.install(&Snapshot{Config: cfg, SHA256: digest(data), LoadedAt: r.now()})
	return r, nil
}

// A Provisioner builds what a configuration needs at run time (route
// tables, compiled rules, clients) and checks it, without changing what
// runs. Its error rejects the configuration as a validation error does:
// the reload fails, nothing changes, and the reload metrics say so. It
// returns the function that puts what it built in force, called only once
// every provisioner has accepted the configuration.
type Provisioner func(*Snapshot) (activate func(), err error)

// AddProvisioner registers p for every reload. Provision the configuration
// in force yourself (the Reloader loaded it before p existed), and call it
// before Watch starts.
func (r *Reloader) AddProvisioner(p Provisioner) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.provisioners = append(r.provisioners, p)
}

// Path returns the watched file's path.
func (r *Reloader) Path() string { return r.path }

// Current returns the configuration in force.
func (r *Reloader) Current() *Snapshot { return r.current.Load() }

// LastFailure returns the last failed reload, or nil when the last reload
// succeeded.
func (r *Reloader) LastFailure() *ReloadFailure { return r.failure.Load() }

// Subscribe registers fn to be called with every new configuration, in
// order, after it is validated and before Reload returns. Call it before
// Watch starts.
func (r *Reloader) Subscribe(fn func(*Snapshot)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.subscribers = append(r.subscribers, fn)
}

// Reload re-reads the file. An unchanged file is a no-op; an invalid one
// keeps the current configuration, is logged and counted, and returned.
func (r *Reloader) Reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()

	cfg, data, err := Load(r.path)
	missing := data == nil && errors.Is(err, os.ErrNotExist)
	if !missing {
		r.missingSince = time.Time{}
	}
	if data != nil && err == nil && digest(data) == r.current.Load().SHA256 && r.failure.Load() == nil {
		return nil
	}
	var snap *Snapshot
	var activations []func()
	if err == nil {
		// Both kinds of refusal are reported, so one edit can fix them.
		snap = &Snapshot{Config: cfg, SHA256: digest(data), LoadedAt: r.now()}
		var provisionErr error
		activations, provisionErr = r.provision(snap)
		err = errors.Join(r.checkRestartKeys(cfg), provisionErr)
	}
	if err != nil {
		if missing {
			// Mid-swap (an editor's rename dance): the next event or poll
			// sees the finished file. Not a failed reload, unless it stays
			// missing.
			now := r.now()
			if r.missingSince.IsZero() {
				r.missingSince = now
			}
			if now.Sub(r.missingSince) < missingGrace {
				return nil
			}
		}
		if prev := r.failure.Load(); prev != nil && prev.Err.Error() == err.Error() {
			return err // the same broken file, seen again by the poll
		}
		// Logged before it is counted: whoever sees the count (an alert,
		// a test) finds the reason in the log.
		r.logger.Error("config reload failed; keeping the previous config", "path", r.path, "error", Redact(err.Error()))
		r.failure.Store(&ReloadFailure{Err: err, At: r.now()})
		r.metrics.successful.Set(0)
		r.metrics.reloads.WithLabelValues("failure").Inc()
		return fmt.Errorf("reload config %q: %w", r.path, err)
	}
	for _, activate := range activations {
		activate()
	}
	r.install(snap)
	r.logger.Info("config reloaded", "path", r.path, "sha256", snap.SHA256)
	r.metrics.reloads.WithLabelValues("success").Inc()
	for _, fn := range r.subscribers {
		fn(snap)
	}
	return nil
}

// provision runs every provisioner on snap and returns their activations,
// or the first refusal.
func (r *Reloader) provision(snap *Snapshot) ([]func(), error) {
	activations := make([]func(), 0, len(r.provisioners))
	for _, p := range r.provisioners {
		activate, err := p(snap)
		if err != nil {
			return nil, err
		}
		activations = append(activations, activate)
	}
	return activations, nil
}

func (r *Reloader) install(snap *Snapshot) {
	r.current.Store(snap)
	r.failure.Store(nil)
	r.metrics.successful.Set(1)
	r.metrics.successTS.Set(float64(snap.LoadedAt.UnixNano()) / 1e9)
	for _, w := range snap.Config.Warnings() {
		r.logger.Warn("config warning", "path", r.path, "key", w.Path, "warning", w.Problem)
	}
}

// checkRestartKeys refuses changes to the listeners: the sockets are bound
// once, and silently ignoring the change would mislead the operator.
func (r *Reloader) checkRestartKeys(next *Config) error {
	cur := r.current.Load().Config
	var errs []FieldError
	if next.Listen != cur.Listen {
		errs = append(errs, FieldError{Path: "listen", Problem: fmt.Sprintf("changed from %q to %q", cur.Listen, next.Listen)})
	}
	if next.DivergenceStore.DatabaseURL != cur.DivergenceStore.DatabaseURL {
		errs = append(errs, FieldError{Path: "divergence_store.database_url", Problem: "changed; the sample writer connects once"})
	}
	if next.Capture != cur.Capture {
		errs = append(errs, FieldError{Path: "capture", Problem: "changed; the capture file is opened once"})
	}
	if next.Tracing != cur.Tracing {
		errs = append(errs, FieldError{Path: "tracing", Problem: "changed; the exporter is built once"})
	}
	if next.Admin.Listen != cur.Admin.Listen {
		errs = append(errs, FieldError{Path: "admin.listen", Problem: fmt.Sprintf("changed from %q to %q", cur.Admin.Listen, next.Admin.Listen)})
	}
	if errs != nil {
		return fmt.Errorf("%w: %w", ErrRestartRequired, &ValidationError{Errors: errs})
	}
	return nil
}

// Watch reloads on every change to the file until ctx is done. It watches
// the file's directory rather than the file, so an atomic rename and a
// Kubernetes ConfigMap symlink swap (..data) are seen, and re-reads the file
// every PollInterval as a backstop. Reload errors are logged, never
// returned: a bad file must not stop the watch.
func (r *Reloader) Watch(ctx context.Context) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		r.logger.Warn("file events unavailable; polling the config file only", "error", err.Error())
	} else {
		defer w.Close()
		r.watchDirs(w)
	}
	var events chan fsnotify.Event
	var watchErrs chan error
	if w != nil {
		events, watchErrs = w.Events, w.Errors
	}

	poll := time.NewTicker(r.poll)
	defer poll.Stop()
	// Editors and ConfigMap updates produce bursts of events; reload once
	// the burst settles.
	debounce := time.NewTimer(time.Hour)
	debounce.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-events:
			debounce.Reset(50 * time.Millisecond)
		case err := <-watchErrs:
			r.logger.Warn("config watch error", "error", err.Error())
		case <-debounce.C:
			_ = r.Reload()
			if w != nil {
				r.watchDirs(w)
			}
		case <-poll.C:
			_ = r.Reload()
		}
	}
}

// watchDirs watches the directory holding the path and, when the path is a
// symlink into another directory, the directory of its target.
func (r *Reloader) watchDirs(w *fsnotify.Watcher) {
	dirs := []string{filepath.Dir(r.path)}
	if target, err := filepath.EvalSymlinks(r.path); err == nil {
		dirs = append(dirs, filepath.Dir(target))
	}
	watched := map[string]bool{}
	for _, d := range w.WatchList() {
		watched[d] = true
	}
	for _, d := range dirs {
		if abs, err := filepath.Abs(d); err == nil && !watched[abs] && !watched[d] {
			if err := w.Add(d); err != nil {
				r.logger.Warn("cannot watch config directory", "dir", d, "error", err.Error())
			}
			watched[d] = true
		}
	}
}

func digest(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}
