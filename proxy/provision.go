package proxy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/strangler-proxy/strangler/config"
	"github.com/strangler-proxy/strangler/proxy/diff"
	"github.com/strangler-proxy/strangler/router"
)

// Provisioned is everything a configuration needs at run time beyond its
// own validation, built and checked once: the route table, each route's
// compiled compare options, and the
// divergence store's connection settings as pgx reads them. Provision builds it for
// strangler check, for serve's start-up (New) and for every reload
// (Prepare), so a configuration check accepts is one the proxy runs, and a
// reload that would not run is a failed reload.
type Provisioned struct {
	cfg       *config.Config
	table     *router.Table
	comparers []*diff.Comparer // index-aligned with cfg.Routes
	// divergences is nil without divergence_store.database_url.
	divergences *pgxpool.Config
}

// Provision builds and checks what cfg, a validated configuration, needs
// at run time. Its error is a *config.ValidationError naming every key
// that cannot be put in force.
func Provision(cfg *config.Config) (*Provisioned, error) {
	var errs []config.FieldError
	add := func(path, format string, args ...any) {
		errs = append(errs, config.FieldError{Path: path, Problem: fmt.Sprintf(format, args...)})
	}
	pv := &Provisioned{cfg: cfg, comparers: make([]*diff.Comparer, len(cfg.Routes))}

	table, err := router.New(cfg)
	if err != nil {
		add("routes", "%v", err)
	}
	pv.table = table
	for i := range cfg.Routes {
		rc := &cfg.Routes[i]
		path := fmt.Sprintf("routes[%d]", i)
		comparer, err := NewComparer(rc, cfg.Shadow.MaxBodyBytes)
		var pe *diff.PatternError
		switch {
		case errors.As(err, &pe):
			add(fmt.Sprintf("%s.compare.%s[%d]", path, pe.List, pe.Index), "%q: %v", pe.Pattern, pe.Err)
		case err != nil:
			add(path+".compare", "%v", err)
		}
		pv.comparers[i] = comparer
	}
	if dsn := cfg.DivergenceStore.DatabaseURL; dsn != "" {
		pc, err := pgxpool.ParseConfig(dsn)
		if err != nil {
			add("divergence_store.database_url", "%s", config.Redact(pgxProblem(err)))
		} else {
			pc.MaxConns = 2
			pv.divergences = pc
		}
	}

	if f := cfg.Capture.File; f != "" {
		if err := appendable(f); err != nil {
			add("capture.file", "%v", err)
		}
	}

	if len(errs) > 0 {
		return nil, &config.ValidationError{Errors: errs}
	}
	return pv, nil
}

// appendable reports why the proxy could not open path to append its
// captures, as it does at start, without creating it: check must refuse
// what serve would. (A reload cannot change capture.file.)
func appendable(path string) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("its directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("its directory %s is not a directory", dir)
	}
	return nil
}

// pgxProblem is pgx's reason for refusing a connection string, without
// the string itself: the key already names it.
func pgxProblem(err error) string {
	msg := err.Error()
	if rest, ok := strings.CutPrefix(msg, "cannot parse `"); ok {
		if _, reason, ok := strings.Cut(rest, "`: "); ok {
			return reason
		}
	}
	return msg
}
