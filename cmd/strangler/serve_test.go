package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// buildStrangler compiles this command once per test binary run.
var buildStrangler = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "strangler-bin")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "strangler")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// startServe runs `strangler serve` on cfg and returns the process and the
// proxy and admin addresses it logged.
func startServe(t *testing.T, cfg string) (*exec.Cmd, string, string) {
	t.Helper()
	bin, err := buildStrangler()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "strangler.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", "--config", path, "--shutdown-grace", "30s")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	lines := bufio.NewScanner(stderr)
	for lines.Scan() {
		var entry struct{ Msg, Listen, Admin string }
		if json.Unmarshal(lines.Bytes(), &entry) == nil && entry.Msg == "strangler serving" {
			go func() { _, _ = io.Copy(io.Discard, stderr) }()
			return cmd, entry.Listen, entry.Admin
		}
	}
	t.Fatalf("strangler exited before serving: %v", lines.Err())
	return nil, "", ""
}

// TestSIGTERMFinishesInFlightRequests sends SIGTERM with 50 requests in
// flight and two connections that never sent a request, one to each
// listener: the requests finish with 200, and the process exits 0 without
// waiting on the unused connections (net/http alone would count each busy
// for five seconds).
func TestSIGTERMFinishesInFlightRequests(t *testing.T) {
	const n = 50
	var entered atomic.Int64
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered.Add(1)
		<-release
		fmt.Fprint(w, "done")
	}))
	defer slow.Close()
	cmd, addr, adminAddr := startServe(t, fmt.Sprintf(`
listen: "127.0.0.1:0"
admin: { listen: "127.0.0.1:0" }
log: { access: false }
upstreams:
  legacy: { url: %q }
  newpath: { url: %q }
`, slow.URL, slow.URL))

	statuses := make(chan int, n)
	for i := 0; i < n; i++ {
		go func() {
			res, err := http.Get("http://" + addr + "/slow")
			if err != nil {
				statuses <- 0
				return
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			statuses <- res.StatusCode
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for entered.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d requests reached the upstream", entered.Load(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}

	// Net/http's own five seconds start now.
	unusedMark := time.Now().Add(5 * time.Second)
	for _, a := range []string{addr, adminAddr} {
		c, err := net.Dial("tcp", a)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	exited := make(chan error, 1)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Stop accepting first: wait until new connections are refused.
	for {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("the listener still accepts after SIGTERM")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// While the proxy drains, the admin listener still answers, and
	// /readyz says the replica is going away.
	res, err := http.Get("http://" + adminAddr + "/readyz")
	if err != nil {
		t.Fatalf("admin listener during the drain: %v", err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz during the drain = %d; want 503", res.StatusCode)
	}
	close(release)

	for i := 0; i < n; i++ {
		if code := <-statuses; code != http.StatusOK {
			t.Errorf("in-flight request %d finished with %d; want 200", i, code)
		}
	}
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("strangler exited with %v; want exit 0", err)
		}
	case <-time.After(time.Until(unusedMark)):
		t.Error("strangler still runs at the five-second mark: shutdown waited on the unused connections")
		<-exited
	}
}
