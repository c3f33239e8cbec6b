package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// A wrkResult is what one `wrk --latency` run printed.
type wrkResult struct {
	rps          float64
	p50, p99     time.Duration
	requests     int
	non2xx       int // "Non-2xx or 3xx responses"
	socketErrors int // connect + read + write + timeout
}

// parseWrk reads the report of `wrk --latency`. Its latencies carry wrk's
// units (us, ms, s, m), which are also Go's duration units.
func parseWrk(report string) (wrkResult, error) {
	var r wrkResult
	var haveRPS, haveP50, haveP99 bool
	sc := bufio.NewScanner(strings.NewReader(report))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		var err error
		switch {
		case f[0] == "Requests/sec:":
			r.rps, err = strconv.ParseFloat(f[1], 64)
			haveRPS = true
		case f[0] == "50%":
			r.p50, err = time.ParseDuration(f[1])
			haveP50 = true
		case f[0] == "99%":
			r.p99, err = time.ParseDuration(f[1])
			haveP99 = true
		case len(f) > 2 && f[1] == "requests" && f[2] == "in":
			r.requests, err = strconv.Atoi(f[0])
		case strings.HasPrefix(sc.Text(), "  Non-2xx or 3xx responses:"):
			r.non2xx, err = strconv.Atoi(f[len(f)-1])
		case f[0] == "Socket" && f[1] == "errors:":
			// "Socket errors: connect 0, read 3, write 0, timeout 12"
			for i := 3; i < len(f); i += 2 {
				n, convErr := strconv.Atoi(strings.TrimSuffix(f[i], ","))
				if convErr != nil {
					err = convErr
					break
				}
				r.socketErrors += n
			}
		}
		if err != nil {
			return wrkResult{}, fmt.Errorf("parse wrk line %q: %w", sc.Text(), err)
		}
	}
	if !haveRPS || !haveP50 || !haveP99 {
		return wrkResult{}, fmt.Errorf("parse wrk report: no Requests/sec or no 50%%/99%% latency (was --latency given?)")
	}
	return r, nil
}

// wrkLoad is how wrk drives every row: the same threads, connections and
// Lua script (a distinct X-User-Id per request).
type wrkLoad struct {
	threads, connections int
	script               string
}

// run runs wrk for d against url, keeps its report in file and parses it.
func (l wrkLoad) run(ctx context.Context, url string, d time.Duration, file string) (wrkResult, error) {
	// Whole seconds: wrk reads "1.5s" as 1 s.
	secs := max(1, int((d+time.Second/2)/time.Second))
	args := []string{"-t", strconv.Itoa(l.threads), "-c", strconv.Itoa(l.connections),
		"-d", strconv.Itoa(secs) + "s", "-s", l.script, "--latency", url}
	out, err := exec.CommandContext(ctx, "wrk", args...).CombinedOutput()
	if werr := os.WriteFile(file, out, 0o644); werr != nil && err == nil {
		err = werr
	}
	if ctx.Err() != nil {
		return wrkResult{}, ctx.Err()
	}
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	r, err := parseWrk(string(out))
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk %s: %w", url, err)
	}
	return r, nil
}
