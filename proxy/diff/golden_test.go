package diff_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net/textproto"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/strangler-proxy/strangler/proxy/diff"
)

var update = flag.Bool("update", false, "rewrite the want sections of testdata/golden/*.txt")

// A golden file is one comparison in sections, each opened by a line
// "-- name --":
//
//	-- options --   JSON: headers, ignore, unordered, max_differences,
//	                decode_br to undo "br" with the fake codec of these tests,
//	                and the rules: tolerance, time, normalize, mask
//	-- legacy --    an HTTP response: status line, header, blank line, body
//	-- newpath --
//	-- want --      the differences, rewritten by -update
//
// Bodies are written plain; a Content-Encoding header makes the test encode
// them so (gzip, deflate, br), as the backend would have sent them.
// Lines before the first section are a comment.

type goldenOptions struct {
	Headers        []string `json:"headers"`
	Ignore         []string `json:"ignore"`
	Unordered      []string `json:"unordered"`
	MaxDifferences int      `json:"max_differences"`
	DecodeBr       bool     `json:"decode_br"`
	// The compare rules, as a route's compare section writes them.
	Tolerance map[string]string   `json:"tolerance"`
	Time      map[string]string   `json:"time"`
	Normalize map[string][]string `json:"normalize"`
	Mask      map[string]string   `json:"mask"`
}

type goldenSection struct{ name, body string }

func parseSections(t *testing.T, text string) (comment string, sections []goldenSection) {
	t.Helper()
	lines := strings.SplitAfter(text, "\n")
	cur := -1
	for _, line := range lines {
		if name, ok := strings.CutPrefix(strings.TrimRight(line, "\n"), "-- "); ok && strings.HasSuffix(name, " --") {
			sections = append(sections, goldenSection{name: strings.TrimSuffix(name, " --")})
			cur = len(sections) - 1
			continue
		}
		if cur < 0 {
			comment += line
		} else {
			sections[cur].body += line
		}
	}
	return comment, sections
}

func TestGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "golden", "*.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 20 {
		t.Fatalf("got %d golden files; want at least 20", len(files))
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txt"), func(t *testing.T) {
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			comment, sections := parseSections(t, string(raw))
			byName := map[string]string{}
			for _, s := range sections {
				byName[s.name] = s.body
			}
			for _, name := range []string{"options", "legacy", "newpath"} {
				if _, ok := byName[name]; !ok {
					t.Fatalf("no %q section", name)
				}
			}
			var g goldenOptions
			if err := json.Unmarshal([]byte(byName["options"]), &g); err != nil {
				t.Fatalf("options: %v", err)
			}
			rules, err := diff.ParseRules(g.Tolerance, g.Time, g.Normalize, g.Mask)
			if err != nil {
				t.Fatalf("options: %v", err)
			}
			opts := diff.Options{Headers: g.Headers, Ignore: g.Ignore, Unordered: g.Unordered, MaxDifferences: g.MaxDifferences, Rules: rules}
			if g.DecodeBr {
				opts.Decode = decodeFakeBrotli
			}
			c := mustNew(t, opts)
			got := renderGolden(c.Compare(parseGoldenResponse(t, byName["legacy"]), parseGoldenResponse(t, byName["newpath"])))

			if *update {
				var b strings.Builder
				b.WriteString(comment)
				for _, name := range []string{"options", "legacy", "newpath"} {
					fmt.Fprintf(&b, "-- %s --\n%s", name, byName[name])
				}
				fmt.Fprintf(&b, "-- want --\n%s", got)
				if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if want := byName["want"]; got != want {
				t.Errorf("got\n%s; want\n%s(go test ./proxy/diff -update rewrites the want sections)", got, want)
			}
		})
	}
}

// renderGolden renders a Compare result for a want section.
func renderGolden(diffs []diff.Difference, err error) string {
	if err != nil {
		return "error: " + err.Error() + "\n"
	}
	if len(diffs) == 0 {
		return "no differences\n"
	}
	var b strings.Builder
	for _, x := range diffs {
		fmt.Fprintf(&b, "%s %s", x.Kind, x.At)
		if x.Path != x.At {
			fmt.Fprintf(&b, " (%s)", x.Path)
		}
		fmt.Fprintf(&b, "\n\tlegacy:  %s\n\tnewpath: %s\n", x.Legacy, x.Newpath)
	}
	return b.String()
}

// parseGoldenResponse reads a response section, encoding the body as its
// Content-Encoding says.
func parseGoldenResponse(t *testing.T, text string) diff.Response {
	t.Helper()
	r := textproto.NewReader(bufio.NewReader(strings.NewReader(text)))
	status, err := r.ReadLine()
	if err != nil {
		t.Fatalf("status line: %v", err)
	}
	fields := strings.Fields(status)
	if len(fields) < 2 {
		t.Fatalf("status line %q: want HTTP/1.1 <code> <reason>", status)
	}
	code, err := strconv.Atoi(fields[1])
	if err != nil {
		t.Fatalf("status line %q: %v", status, err)
	}
	header, err := r.ReadMIMEHeader()
	if err != nil {
		t.Fatalf("header: %v", err)
	}
	var body bytes.Buffer
	if _, err := body.ReadFrom(r.R); err != nil {
		t.Fatal(err)
	}
	plain := strings.TrimSuffix(body.String(), "\n") // the section's own line end
	encoded := plain
	codings := strings.Split(strings.Join(header.Values("Content-Encoding"), ","), ",")
	for _, coding := range codings {
		switch strings.TrimSpace(coding) {
		case "gzip":
			encoded = gzipped(t, encoded)
		case "deflate":
			encoded = zlibbed(t, encoded)
		case "br":
			encoded = fakeBrotli(encoded)
		}
	}
	if plain == "" {
		encoded = ""
	}
	return diff.Response{Status: code, Header: map[string][]string(header), Body: []byte(encoded)}
}
