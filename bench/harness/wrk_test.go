package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseWrk(t *testing.T) {
	tests := []struct {
		file string
		want wrkResult
	}{
		{"wrk-ok.txt", wrkResult{rps: 32952.30, p50: 764 * time.Microsecond, p99: 5590 * time.Microsecond, requests: 65971}},
		{"wrk-non2xx.txt", wrkResult{rps: 35242.58, p50: 694 * time.Microsecond, p99: 5380 * time.Microsecond, requests: 35419, non2xx: 35419}},
		{"wrk-socket-errors.txt", wrkResult{rps: 13.97, p50: 2 * time.Second, p99: 2250 * time.Millisecond, requests: 70, socketErrors: 16}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			got, err := parseWrk(string(b))
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %+v; want %+v", got, tt.want)
			}
		})
	}
}

func TestParseWrkRefusesIncompleteReports(t *testing.T) {
	ok, err := os.ReadFile(filepath.Join("testdata", "wrk-ok.txt"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, report, wantErr string
	}{
		{"no --latency", dropLines(string(ok), "%"), "no Requests/sec or no 50%/99% latency"},
		{"nothing", "unable to connect to 127.0.0.1:20001 Connection refused\n", "no Requests/sec"},
		{"bad latency", strings.Replace(string(ok), "5.59ms", "5.59xs", 1), `parse wrk line "     99%    5.59xs"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseWrk(tt.report)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("got error %v; want one containing %q", err, tt.wantErr)
			}
		})
	}
}

// dropLines removes the lines of s that contain sub.
func dropLines(s, sub string) string {
	var kept []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.Contains(l, sub) {
			kept = append(kept, l)
		}
	}
	return strings.Join(kept, "\n")
}
