package deploy

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestRelease checks release archives: their checksums, their contents,
// that the binaries are static and built for their architecture, and that
// this machine's strangler prints the stamped version. Cross-compiling is
// too slow for the default run, so it is opt-in:
//
//   - STRANGLER_RELEASE_DIR=dist STRANGLER_RELEASE_VERSION=V (make release)
//     checks the archives release.sh wrote there;
//   - STRANGLER_RELEASE_TEST=1 runs release.sh for this machine's
//     architecture only, into a temporary directory, and checks that.
func TestRelease(t *testing.T) {
	dir, version := os.Getenv("STRANGLER_RELEASE_DIR"), os.Getenv("STRANGLER_RELEASE_VERSION")
	arches := []string{"amd64", "arm64"}
	switch {
	case dir != "":
		if version == "" {
			t.Fatal("STRANGLER_RELEASE_DIR needs STRANGLER_RELEASE_VERSION, the version the archives are stamped with")
		}
	case os.Getenv("STRANGLER_RELEASE_TEST") == "1":
		if runtime.GOOS != "linux" {
			t.Skip("the release is for Linux; its binaries would not run here")
		}
		dir, version, arches = t.TempDir(), fmt.Sprintf("releasetest-%d", time.Now().UnixNano()), []string{runtime.GOARCH}
		cmd := exec.Command("bash", "release.sh", version)
		cmd.Env = append(os.Environ(), "DIST="+dir, "ARCHES="+runtime.GOARCH)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("release.sh: %v\n%s", err, out)
		}
	default:
		t.Skip("cross-compiles the release archives: run with STRANGLER_RELEASE_TEST=1 (this machine's architecture), " +
			"or make release (both, into dist/)")
	}

	sums := readSums(t, filepath.Join(dir, "SHA256SUMS"))
	var want []string
	for _, arch := range arches {
		want = append(want, fmt.Sprintf("strangler_%s_linux_%s.tar.gz", version, arch))
	}
	if got := slices.Sorted(func(yield func(string) bool) {
		for name := range sums {
			if !yield(name) {
				return
			}
		}
	}); !slices.Equal(got, want) {
		t.Fatalf("SHA256SUMS lists %v, want %v", got, want)
	}

	for _, arch := range arches {
		name := fmt.Sprintf("strangler_%s_linux_%s", version, arch)
		t.Run(arch, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(dir, name+".tar.gz"))
			if err != nil {
				t.Fatal(err)
			}
			if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != sums[name+".tar.gz"] {
				t.Fatalf("%s.tar.gz: sha256 %x, SHA256SUMS says %s", name, sum, sums[name+".tar.gz"])
			}
			files := untar(t, data)
			var names []string
			for n := range files {
				names = append(names, n)
			}
			slices.Sort(names)
			var wantNames []string
			for _, f := range []string{"LICENSE", "README.md", "legacyorders", "neworders", "strangler"} {
				wantNames = append(wantNames, name+"/"+f)
			}
			if !slices.Equal(names, wantNames) {
				t.Fatalf("archive holds %v, want %v", names, wantNames)
			}
			machine := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}[arch]
			for _, bin := range []string{"strangler", "neworders", "legacyorders"} {
				f := files[name+"/"+bin]
				if f.mode&0o111 == 0 {
					t.Errorf("%s: mode %v, not executable", bin, f.mode)
				}
				checkStatic(t, bin, f.data, machine)
			}
			if arch != runtime.GOARCH || runtime.GOOS != "linux" {
				return
			}
			path := filepath.Join(t.TempDir(), "strangler")
			if err := os.WriteFile(path, files[name+"/strangler"].data, 0o755); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(path, "version").CombinedOutput()
			if err != nil {
				t.Fatalf("strangler version: %v\n%s", err, out)
			}
			if got, want := strings.TrimSpace(string(out)), "strangler "+version; got != want {
				t.Errorf("strangler version printed %q, want %q", got, want)
			}
		})
	}
}

func readSums(t *testing.T, path string) map[string]string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sums := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok || len(sum) != 64 {
			t.Fatalf("%s: line %q is not sha256sum's", path, sc.Text())
		}
		sums[name] = sum
	}
	return sums
}

type tarFile struct {
	mode os.FileMode
	data []byte
}

// untar returns the regular files of a .tar.gz by name.
func untar(t *testing.T, data []byte) map[string]tarFile {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]tarFile{}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = tarFile{mode: h.FileInfo().Mode(), data: b}
	}
}

// checkStatic fails unless data is an ELF executable for machine with no
// program interpreter, that is statically linked (it runs on scratch).
func checkStatic(t *testing.T, name string, data []byte, machine elf.Machine) {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		t.Errorf("%s: %v", name, err)
		return
	}
	if f.Machine != machine {
		t.Errorf("%s: built for %v, want %v", name, f.Machine, machine)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s: dynamically linked (has an interpreter); want CGO_ENABLED=0", name)
		}
	}
}
