package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"syscall"

	"github.com/go-viper/mapstructure/v2"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"
)

// EnvPrefix prefixes environment overrides: STRANGLER_LISTEN,
// STRANGLER_ADMIN_LISTEN, STRANGLER_UPSTREAMS_LEGACY_URL, ...
const EnvPrefix = "STRANGLER"

// defaults are the values of every key a file may leave out (SPEC §3). They
// are registered with viper, which is also what lets an environment variable
// override a key the file does not mention.
func defaults() map[string]any {
	return map[string]any{
		"listen":                             "127.0.0.1:8080",
		"admin.listen":                       "127.0.0.1:9090",
		"admin.token_env":                    "STRANGLER_ADMIN_TOKEN",
		"upstreams.legacy.url":               "",
		"upstreams.legacy.timeout":           "30s",
		"upstreams.legacy.preserve_host":     true,
		"upstreams.newpath.url":              "",
		"upstreams.newpath.timeout":          "30s",
		"upstreams.newpath.preserve_host":    true,
		"sticky.key":                         "none",
		"sticky.salt":                        "strangler",
		"trusted_proxies":                    []string{},
		"client_body_timeout":                "60s",
		"overrides.header":                   "X-Strangler-Backend",
		"overrides.trusted_cidrs":            []string{"127.0.0.0/8"},
		"shadow.max_in_flight":               256,
		"shadow.pipeline_depth":              16,
		"shadow.max_body_bytes":              1 << 20,
		"shadow.timeout":                     "5s",
		"divergence_store.database_url":      "",
		"divergence_store.samples_per_route": 100,
		"divergence_store.sample_body_bytes": 65536,
		"divergence_store.retention":         "168h",
		"divergence_store.redact_headers":    []any{},
		"divergence_store.redact_query":      []any{},
		"capture.file":                       "",
		"capture.max_file_bytes":             64 << 20,
		"capture.keep":                       3,
		"capture.queue":                      1024,
		"tracing.exporter":                   "none",
		"tracing.sample_ratio":               1.0,
		"log.level":                          "info",
		"log.access":                         true,
	}
}

// routeDefaults are a route's values when its entry leaves them out. viper
// cannot default the fields of list elements, so they are merged into the raw
// map before decoding.
func routeDefaults() map[string]any {
	return map[string]any{
		"to":       DefaultUpstream,
		"weight":   0,
		"fallback": true,
		"shadow":   map[string]any{"percent": 0, "dry_run": false},
		"capture":  map[string]any{"percent": 0},
		"compare": map[string]any{
			"ignore":         []any{},
			"headers":        []any{"content-type"},
			"unordered":      []any{},
			"noise_percent":  0,
			"confidence":     0.99,
			"verdict_window": "0s",
		},
	}
}

// upstreamDefaults are an upstream's values when its mapping leaves them
// out. viper's defaults cover legacy and newpath, the names it knows; the
// other new services get theirs merged into the raw map, as routes do.
func upstreamDefaults() map[string]any {
	return map[string]any{"url": "", "timeout": "30s", "preserve_host": true}
}

// guardDefaults are a guard's values when its mapping leaves them out
// (SPEC §3's example values). They are merged only into a guard that is
// there: no guard means no guard.
func guardDefaults() map[string]any {
	return map[string]any{
		"max_error_rate":      0.02,
		"max_divergence_rate": 0.05,
		"min_samples":         100,
		"window":              "2m",
		"source":              GuardSourceLocal,
		"prometheus_url":      "",
		"prometheus_matchers": "",
		"prometheus_interval": "5s",
	}
}

// Load reads, parses and validates the file at path, with STRANGLER_*
// environment overrides applied. A *ValidationError lists every problem.
func Load(path string) (*Config, []byte, error) {
	data, err := readRegularFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read config: %w", err)
	}
	cfg, err := Parse(data)
	if err != nil {
		return nil, data, err
	}
	return cfg, data, nil
}

// ErrNotRegular is the error of a config path that is not a regular file
// (or a symlink to one), such as a FIFO, a device or a directory.
var ErrNotRegular = errors.New("not a regular file")

// readRegularFile reads path, refusing anything but a regular file. The
// open does not block: a FIFO swapped in for the config would otherwise
// hang the reloader until something writes to it, and SIGTERM with it.
func readRegularFile(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is a %s, %w", path, fileKind(fi.Mode()), ErrNotRegular)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxConfigBytes+1))
	if err == nil && len(data) > maxConfigBytes {
		return nil, fmt.Errorf("%s is larger than %d MiB: not a config", path, maxConfigBytes>>20)
	}
	return data, err
}

// maxConfigBytes bounds a config file: a path pointed at a huge file must
// not cost the proxy its memory at every reload.
const maxConfigBytes = 16 << 20

func fileKind(m os.FileMode) string {
	switch {
	case m&os.ModeNamedPipe != 0:
		return "named pipe (FIFO)"
	case m.IsDir():
		return "directory"
	case m&os.ModeSocket != 0:
		return "socket"
	case m&os.ModeDevice != 0:
		return "device"
	}
	return "special file"
}

// Parse parses and validates YAML config data, with STRANGLER_* environment
// overrides applied.
func Parse(data []byte) (*Config, error) {
	v := viper.New()
	v.SetConfigType("yaml")
	for k, val := range defaults() {
		v.SetDefault(k, val)
	}
	v.SetEnvPrefix(EnvPrefix)
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	if err := v.ReadConfig(bytes.NewReader(data)); err != nil {
		return nil, &ValidationError{Errors: []FieldError{{Path: "(yaml)", Problem: Redact(yamlProblem(err))}}}
	}

	raw := v.AllSettings()
	// The file as written, keys in their case: viper folds them.
	var doc map[string]any
	_ = yaml.Unmarshal(data, &doc) // viper read it, so this does not fail
	restoreRuleKeys(doc, raw)
	errs := miscasedKeys(doc, reflect.TypeOf(Config{}), "")
	if upstreams, ok := raw["upstreams"].(map[string]any); ok {
		for _, u := range upstreams {
			if m, ok := u.(map[string]any); ok {
				mergeDefaults(m, upstreamDefaults())
			}
		}
	}
	if routes, ok := raw["routes"]; ok {
		list, ok := routes.([]any)
		if !ok {
			errs = append(errs, FieldError{Path: "routes", Problem: "must be a list of routes"})
			delete(raw, "routes")
		} else {
			for i, r := range list {
				m, ok := r.(map[string]any)
				if !ok {
					errs = append(errs, FieldError{Path: fmt.Sprintf("routes[%d]", i), Problem: "must be a mapping"})
					continue
				}
				mergeDefaults(m, routeDefaults())
				if g, ok := m["guard"].(map[string]any); ok {
					mergeDefaults(g, guardDefaults())
				}
				if rp, ok := m["ramp"].(map[string]any); ok {
					mergeDefaults(rp, rampDefaults())
				}
			}
		}
	}
	errs = append(errs, unknownKeys(raw, reflect.TypeOf(Config{}), "")...)

	var cfg Config
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		Result:           &cfg,
		WeaklyTypedInput: true,
		DecodeHook:       mapstructure.ComposeDecodeHookFunc(unitlessDuration, mapstructure.TextUnmarshallerHookFunc()),
	})
	if err != nil {
		return nil, fmt.Errorf("config decoder: %w", err)
	}
	if err := dec.Decode(raw); err != nil {
		errs = append(errs, decodeProblems(err)...)
	}
	// Validate the decoded part too, so one pass reports every problem; a
	// key that failed to decode, or one of whose keys did, is not
	// reported a second time.
	reported := map[string]bool{}
	for _, fe := range errs {
		for p := fe.Path; p != ""; p = parentPath(p) {
			reported[p] = true
		}
	}
	for _, fe := range cfg.validate() {
		if !reported[fe.Path] {
			errs = append(errs, fe)
		}
	}
	if len(errs) > 0 {
		sortErrors(errs)
		// Problems quote values, and a value may be a URL with a password.
		for i := range errs {
			errs[i].Problem = Redact(errs[i].Problem)
		}
		return nil, &ValidationError{Errors: errs}
	}
	return &cfg, nil
}

// restoreRuleKeys puts back the case of the compare rules' keys in raw:
// they are paths into response bodies, and viper folds every key to lower
// case, but /body/totalCents is not /body/totalcents.
func restoreRuleKeys(doc, raw map[string]any) {
	routes, _ := lookupFold(doc, "routes").([]any)
	rawRoutes, _ := raw["routes"].([]any)
	for i := 0; i < len(routes) && i < len(rawRoutes); i++ {
		route, _ := routes[i].(map[string]any)
		rawRoute, _ := rawRoutes[i].(map[string]any)
		compare, _ := lookupFold(route, "compare").(map[string]any)
		rawCompare, _ := rawRoute["compare"].(map[string]any)
		if compare == nil || rawCompare == nil {
			continue
		}
		for _, key := range []string{"tolerance", "time", "normalize", "mask"} {
			if m, ok := lookupFold(compare, key).(map[string]any); ok {
				rawCompare[key] = m
			}
		}
	}
}

// lookupFold returns m's value for key, matching keys case-insensitively
// as viper does.
func lookupFold(m map[string]any, key string) any {
	for k, v := range m {
		if strings.EqualFold(k, key) {
			return v
		}
	}
	return nil
}

// unitlessDuration refuses a number where a duration goes. Weakly typed
// decoding would take "timeout: 10" as 10 nanoseconds, which validates
// (it is positive) and times out every call; 0 needs no unit.
func unitlessDuration(from, to reflect.Type, data any) (any, error) {
	if to != reflect.TypeFor[Duration]() || from == to {
		return data, nil
	}
	switch from.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		if reflect.ValueOf(data).IsZero() {
			return "0s", nil
		}
		return nil, fmt.Errorf(`expected a duration such as "5s", got %v (a number without a unit)`, data)
	}
	return data, nil
}

// mergeDefaults fills the keys of m missing from def, recursing into nested
// mappings the user gave partially.
func mergeDefaults(m, def map[string]any) {
	for k, dv := range def {
		cur, ok := m[k]
		if !ok || cur == nil {
			m[k] = dv
			continue
		}
		if dm, ok := dv.(map[string]any); ok {
			if cm, ok := cur.(map[string]any); ok {
				mergeDefaults(cm, dm)
			}
		}
	}
}

// unknownKeys walks the raw settings against the schema and names every key
// the schema does not have, with its full path (routes[1].wieght).
func unknownKeys(raw any, t reflect.Type, path string) []FieldError {
	return walkSchema(raw, t, path, func(k string, fields map[string]reflect.Type) (reflect.Type, string) {
		if ft, ok := fields[k]; ok {
			return ft, ""
		}
		return nil, "unknown key"
	})
}

// miscasedKeys reports the keys of the file, doc, that name a key of t
// only once lower-cased. YAML keys are case-sensitive and the schema's are
// lower case, but viper folds case before unknownKeys sees them: without
// this, "Weight: 90" passed, and beside "weight: 10" one of the two won
// unseen. Keys of maps (upstream names, compare rules) are the user's.
func miscasedKeys(doc any, t reflect.Type, path string) []FieldError {
	return walkSchema(doc, t, path, func(k string, fields map[string]reflect.Type) (reflect.Type, string) {
		if ft, ok := fields[k]; ok {
			return ft, ""
		}
		if lower := strings.ToLower(k); fields[lower] != nil {
			return nil, "unknown key (keys are lower case: " + lower + ")"
		}
		return nil, "" // unknown in any case: unknownKeys names it
	})
}

// walkSchema walks a YAML document against the schema type t. Every key
// of a struct's map goes to key with the struct's fields by tag, which
// answers the field's type to descend into, or a problem with the key;
// maps' and lists' elements are walked as their element type.
func walkSchema(doc any, t reflect.Type, path string, key func(k string, fields map[string]reflect.Type) (reflect.Type, string)) []FieldError {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var errs []FieldError
	switch t.Kind() {
	case reflect.Struct:
		m, ok := doc.(map[string]any)
		if !ok || t == reflect.TypeOf(Duration(0)) {
			return nil // a type error, reported by the decoder
		}
		fields := map[string]reflect.Type{}
		for i := 0; i < t.NumField(); i++ {
			if tag := strings.Split(t.Field(i).Tag.Get("mapstructure"), ",")[0]; tag != "" && tag != "-" {
				fields[tag] = t.Field(i).Type
			}
		}
		for k, v := range m {
			p := joinPath(path, k)
			ft, problem := key(k, fields)
			if problem != "" {
				errs = append(errs, FieldError{Path: p, Problem: problem})
			}
			if ft != nil {
				errs = append(errs, walkSchema(v, ft, p, key)...)
			}
		}
	case reflect.Map:
		if m, ok := doc.(map[string]any); ok {
			for k, v := range m {
				errs = append(errs, walkSchema(v, t.Elem(), joinPath(path, k), key)...)
			}
		}
	case reflect.Slice:
		if list, ok := doc.([]any); ok {
			for i, v := range list {
				errs = append(errs, walkSchema(v, t.Elem(), fmt.Sprintf("%s[%d]", path, i), key)...)
			}
		}
	}
	return errs
}

// parentPath is the key that holds path: upstreams.legacy for
// upstreams.legacy.timeout, routes for routes[1]; "" at the top.
func parentPath(path string) string {
	if i := strings.LastIndexAny(path, ".["); i > 0 {
		return path[:i]
	}
	return ""
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// upstreamKeyRE is how the decoder names an upstream, a key of a map:
// upstreams[payments]. The file, and every other error, says
// upstreams.payments.
var upstreamKeyRE = regexp.MustCompile(`^upstreams\[([^\]]*)\]`)

// decodeProblems turns the decoder's joined errors into one FieldError each.
func decodeProblems(err error) []FieldError {
	var out []FieldError
	var walk func(error)
	walk = func(err error) {
		switch e := err.(type) {
		case interface{ Unwrap() []error }:
			for _, inner := range e.Unwrap() {
				walk(inner)
			}
		case *mapstructure.DecodeError:
			if _, joined := e.Unwrap().(interface{ Unwrap() []error }); joined {
				walk(e.Unwrap())
				return
			}
			out = append(out, FieldError{Path: upstreamKeyRE.ReplaceAllString(e.Name(), "upstreams.$1"), Problem: typeProblem(e.Unwrap())})
		default:
			if inner := errors.Unwrap(err); inner != nil {
				walk(inner)
				return
			}
			out = append(out, FieldError{Path: "(config)", Problem: err.Error()})
		}
	}
	walk(err)
	return out
}

// typeProblem rewrites the decoder's Go-type wording in the words of the
// YAML file.
func typeProblem(err error) string {
	var ute *mapstructure.UnconvertibleTypeError
	if errors.As(err, &ute) {
		return fmt.Sprintf("expected %s, got %v", yamlKind(ute.Expected.Type()), ute.Value)
	}
	var pe *mapstructure.ParseError
	if errors.As(err, &pe) {
		return fmt.Sprintf("expected %s, got %q", yamlKind(pe.Expected.Type()), fmt.Sprint(pe.Value))
	}
	return err.Error()
}

func yamlKind(t reflect.Type) string {
	switch {
	case t == reflect.TypeOf(Duration(0)):
		return `a duration such as "5s"`
	case t.Kind() == reflect.Bool:
		return "true or false"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return "an integer"
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		return "a number"
	case t.Kind() == reflect.String:
		return "a string"
	case t.Kind() == reflect.Slice:
		return "a list"
	default:
		return "a mapping"
	}
}

func yamlProblem(err error) string {
	msg := err.Error()
	// viper wraps the YAML parser's message; keep the part that names the line.
	if i := strings.Index(msg, "yaml: "); i >= 0 {
		msg = msg[i:]
	}
	return "invalid YAML: " + msg
}

func sortErrors(errs []FieldError) {
	sort.SliceStable(errs, func(i, j int) bool { return errs[i].Path < errs[j].Path })
}
