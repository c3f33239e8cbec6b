package main

import (
	"bytes"
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

func TestDemoServesTrafficAndReportsProgress(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"demo", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
		"--duration", "3s", "--rate", "100", "--dir", t.TempDir()}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("demo exited %d\nstdout: %s\nstderr: %s", code, &stdout, &stderr)
	}
	out := stdout.String()
	for _, want := range []string{"/metrics", "/admin/routes", "proxy         http://127.0.0.1:"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	m := regexp.MustCompile(`requests (\d+)  legacy (\d+)  newpath (\d+)`).FindAllStringSubmatch(out, -1)
	if len(m) == 0 {
		t.Fatalf("no progress line:\n%s", out)
	}
	last := m[len(m)-1]
	total, _ := strconv.Atoi(last[1])
	newpath, _ := strconv.Atoi(last[3])
	if total == 0 || newpath == 0 {
		t.Errorf("progress %q: want traffic on both backends", last[0])
	}
	if !strings.Contains(out, "errors 0") {
		t.Errorf("demo traffic saw errors:\n%s", out)
	}
}
