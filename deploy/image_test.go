package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestImage builds the image with image.sh and runs `strangler version` in
// it. It is opt-in: it may install buildah and podman (as root) and takes
// a build of the three binaries, which the default `go test ./...` must
// not. With STRANGLER_IMAGE_VERSION set (make image) it builds and keeps
// localhost/strangler:VERSION; without it (make image-test) it builds a
// throwaway tag and removes it.
func TestImage(t *testing.T) {
	if os.Getenv("STRANGLER_IMAGE_TEST") != "1" {
		t.Skip("builds the image with buildah and runs it with podman, installing them when missing: " +
			"run with STRANGLER_IMAGE_TEST=1 (make image-test, or make image)")
	}
	if runtime.GOOS != "linux" {
		t.Skip("buildah and podman need Linux")
	}
	version, keep := os.LookupEnv("STRANGLER_IMAGE_VERSION")
	if !keep || version == "" {
		version, keep = fmt.Sprintf("imagetest-%d", time.Now().UnixNano()), false
	}

	build := exec.Command("bash", "image.sh", version)
	var stdout, stderr bytes.Buffer
	build.Stdout, build.Stderr = &stdout, &stderr
	err := build.Run()
	t.Logf("image.sh %s:\n%s", version, stderr.String())
	if code := exitCode(err); code == 3 || code == 4 {
		t.Skipf("image.sh cannot build here (exit %d): %s", code, lastLine(stderr.String()))
	}
	if err != nil {
		t.Fatalf("image.sh: %v", err)
	}
	image, driver, ok := strings.Cut(lastLine(stdout.String()), " storage-driver=")
	if !ok || image != "localhost/strangler:"+version {
		t.Fatalf("image.sh's last line is %q, want \"localhost/strangler:%s storage-driver=DRIVER\"", lastLine(stdout.String()), version)
	}
	buildah := func(args ...string) (string, error) {
		return output("buildah", append([]string{"--storage-driver", driver}, args...)...)
	}
	if !keep {
		t.Cleanup(func() {
			if out, err := buildah("rmi", image); err != nil {
				t.Logf("buildah rmi %s: %v\n%s", image, err, out)
			}
		})
	}

	t.Run("config", func(t *testing.T) {
		out, err := exec.Command("buildah", "--storage-driver", driver, "inspect", "--type", "image", image).Output()
		if err != nil {
			t.Fatalf("buildah inspect: %v", err)
		}
		var inspected struct {
			OCIv1 struct {
				Config struct {
					User         string
					Entrypoint   []string
					Cmd          []string
					ExposedPorts map[string]struct{}
					Labels       map[string]string
				} `json:"config"`
			}
		}
		if err := json.Unmarshal(out, &inspected); err != nil {
			t.Fatalf("buildah inspect: %v\n%s", err, out)
		}
		cfg := inspected.OCIv1.Config
		if cfg.User != "65532:65532" {
			t.Errorf("user %q, want 65532:65532", cfg.User)
		}
		if !slices.Equal(cfg.Entrypoint, []string{"/strangler"}) {
			t.Errorf("entrypoint %q, want [/strangler]", cfg.Entrypoint)
		}
		if want := []string{"serve", "--config", "/etc/strangler/strangler.yaml"}; !slices.Equal(cfg.Cmd, want) {
			t.Errorf("cmd %q, want %q", cfg.Cmd, want)
		}
		for _, port := range []string{"8080/tcp", "9090/tcp"} {
			if _, ok := cfg.ExposedPorts[port]; !ok {
				t.Errorf("port %s not exposed: %v", port, cfg.ExposedPorts)
			}
		}
		if got := cfg.Labels["org.opencontainers.image.version"]; got != version {
			t.Errorf("version label %q, want %q", got, version)
		}
	})

	want := "strangler " + version
	t.Run("podman run", func(t *testing.T) {
		// As root without systemd: cgroupfs and a file for events.
		// Exit 125 is podman's own failure (its storage, the OCI
		// runtime refusing); anything else is the container's.
		out, err := output("podman", "--storage-driver", driver, "--cgroup-manager=cgroupfs", "--events-backend=file",
			"run", "--rm", "--network=none", image, "version")
		switch code := exitCode(err); {
		case err == nil:
		case code == 125 || code == 126 && strings.Contains(out, "OCI permission denied"):
			t.Skipf("podman cannot run containers here (exit %d): %s", code, lastLine(out))
		default:
			t.Fatalf("podman run %s version: %v\n%s", image, err, out)
		}
		if strings.TrimSpace(out) != want {
			t.Fatalf("podman run %s version printed %q, want %q", image, out, want)
		}
	})

	// The same binary run from the image's root file system by buildah's
	// chroot isolation, which needs no namespaces or rlimits: where podman
	// cannot run containers, this still proves the image holds a static,
	// stamped binary that 65532 can execute.
	t.Run("buildah run", func(t *testing.T) {
		ctr, err := buildah("from", "--pull=never", "--isolation", "chroot", image)
		if err != nil {
			t.Fatalf("buildah from %s: %v\n%s", image, err, ctr)
		}
		ctr = lastLine(ctr)
		defer func() {
			if out, err := buildah("rm", ctr); err != nil {
				t.Logf("buildah rm %s: %v\n%s", ctr, err, out)
			}
		}()
		out, err := buildah("run", "--isolation", "chroot", "--user", "65532:65532", ctr, "--", "/strangler", "version")
		if err != nil {
			t.Skipf("buildah cannot run the image here either: %v: %s", err, lastLine(out))
		}
		if strings.TrimSpace(out) != want {
			t.Fatalf("/strangler version printed %q, want %q", out, want)
		}
	})
}

// output runs a command and returns its stdout and stderr together.
func output(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return 0
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndexByte(s, '\n')+1:]
}
