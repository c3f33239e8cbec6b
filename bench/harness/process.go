package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// A process is one program the harness started. It runs in its own process
// group, so that stop also ends its children (nginx workers).
type process struct {
	name string
	log  string // its stdout and stderr
	cmd  *exec.Cmd
	done chan struct{} // closed once it has exited
}

// startProcess runs argv with its output in logFile. The caller owns the
// process and must stop it.
func startProcess(name, logFile string, argv ...string) (*process, error) {
	out, err := os.Create(logFile)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	defer out.Close() // the child has its own copy
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, log: logFile, cmd: cmd, done: make(chan struct{})}
	// The one goroutine per process: it reaps the child and ends with it.
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

// stop sends SIGTERM to the process group, and SIGKILL after 5 s.
func (p *process) stop() {
	pgid := p.pid()
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
	// nginx workers may outlive the master by a moment.
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
}

// logTail is the end of the process's log, for error messages.
func (p *process) logTail() string {
	b, _ := os.ReadFile(p.log)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-15):], "\n")
}

// waitReady polls url until it answers with a status ok accepts, the
// process exits, or timeout passes.
func (p *process) waitReady(ctx context.Context, client *http.Client, url string, ok func(status int) bool, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	last := "no answer"
	for {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before it was ready; log %s:\n%s", p.name, p.log, p.logTail())
		default:
		}
		status, err := getStatus(ctx, client, url)
		if err == nil && ok(status) {
			return nil
		}
		if err == nil {
			last = "status " + strconv.Itoa(status)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s: GET %s: %s; log %s:\n%s", p.name, timeout, url, last, p.log, p.logTail())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// rssMB is the process's VmRSS from /proc/PID/status, in MiB.
func (p *process) rssMB() (float64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.pid()))
	if err != nil {
		return 0, fmt.Errorf("read VmRSS of %s: %w", p.name, err)
	}
	defer f.Close()
	return vmRSS(f)
}

// vmRSS reads the "VmRSS:  1234 kB" line of a /proc/PID/status.
func vmRSS(r io.Reader) (float64, error) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 3 && f[0] == "VmRSS:" && f[2] == "kB" {
			kb, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return 0, fmt.Errorf("parse %q: %w", sc.Text(), err)
			}
			return kb / 1024, nil
		}
	}
	return 0, errors.New("no VmRSS line in /proc status")
}

// freePort returns a loopback TCP port nothing listens on. It picks from
// below the kernel's ephemeral range (32768 and up), so that wrk's and the
// proxies' own client sockets can never hold it.
func freePort() (int, error) {
	for range 100 {
		port := 20000 + rand.IntN(12000)
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err == nil {
			ln.Close()
			return port, nil
		}
	}
	return 0, errors.New("no free port in 20000-31999")
}

// getStatus GETs url with a user id (so that sticky routing has a key) and
// returns the status, draining the body.
func getStatus(ctx context.Context, client *http.Client, url string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("X-User-Id", "1")
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

// get returns the body of a GET of url that must answer 200.
func get(ctx context.Context, client *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("get %s: %w", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", fmt.Errorf("get %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("get %s: status %d", url, resp.StatusCode)
	}
	return string(b), nil
}

func writeFile(name, text string) error { return os.WriteFile(name, []byte(text), 0o644) }
