package proxy

import (
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
)

func TestBodyLines(t *testing.T) {
	type line = bodyLine
	tests := []struct {
		name  string
		body  string
		marks []string
		want  []bodyLine
	}{
		{"keys keep their order, a marked value and its subtree",
			`{"b":1,"a":{"x":[1,{}],"y":"<i>"},"c":[]}`, []string{"/body/a/x"},
			[]line{{"{", false}, {`  "b": 1,`, false}, {`  "a": {`, false}, {`    "x": [`, true}, {"      1,", true}, {"      {}", true},
				{"    ],", true}, {`    "y": "<i>"`, false}, {"  },", false}, {`  "c": []`, false}, {"}", false}}},
		{"a key with a slash, escaped as the differ names it",
			`{"a/b":true,"n":null}`, []string{"/body/a~1b"},
			[]line{{"{", false}, {`  "a/b": true,`, true}, {`  "n": null`, false}, {"}", false}}},
		{"large numbers stay as sent", `[12345678901234567890,1.50]`, nil,
			[]line{{"[", false}, {"  12345678901234567890,", false}, {"  1.50", false}, {"]", false}}},
		{"not JSON: lines, all marked when the body differs", "a\nb", []string{"/body"},
			[]line{{"a", true}, {"b", true}}},
		{"two documents are not JSON", `{} {}`, nil, []line{{"{} {}", false}}},
		{"a header difference marks no body line", `{"a":1}`, []string{"/headers/x"},
			[]line{{"{", false}, {`  "a": 1`, false}, {"}", false}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := bodyLines(tt.body, tt.marks); !slices.Equal(got, tt.want) {
				t.Errorf("bodyLines(%q, %q) =\n%+v\nwant\n%+v", tt.body, tt.marks, got, tt.want)
			}
		})
	}
}

// TestSampleBodies: a mismatch's sample keeps both bodies, decoded and cut
// at divergence_store.sample_body_bytes; 0 keeps none.
func TestSampleBodies(t *testing.T) {
	legacy := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Encoding", "gzip")
		w.Write(gzipped([]byte(`{"total_cents":1000,"pad":"` + strings.Repeat("x", 100) + `"}`)))
	})
	newpath := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"total_cents":1001}`)
	})
	for _, tt := range []struct {
		max                 string
		wantLegacy, wantNew string
		wantCut             bool
	}{
		{"65536", `{"total_cents":1000,"pad":"` + strings.Repeat("x", 100) + `"}`, `{"total_cents":1001}`, false},
		{"16", `{"total_cents":1`, `{"total_cents":1`, true},
		{"0", "", "", false},
	} {
		t.Run("sample_body_bytes="+tt.max, func(t *testing.T) {
			h := newHarness(t, legacy, newpath, "divergence_store: { sample_body_bytes: "+tt.max+" }\n"+shadowAll)
			h.get("/orders/1")
			h.waitCompared("get-order", 1)
			var div struct{ Samples []Sample }
			h.adminJSON("/admin/divergences?route=get-order", &div)
			if len(div.Samples) != 1 {
				t.Fatalf("%d samples; want 1", len(div.Samples))
			}
			s := div.Samples[0]
			if s.LegacyBody != tt.wantLegacy || s.NewpathBody != tt.wantNew || s.BodiesCut != tt.wantCut {
				t.Errorf("bodies %q / %q, cut %v; want %q / %q, cut %v", s.LegacyBody, s.NewpathBody, s.BodiesCut, tt.wantLegacy, tt.wantNew, tt.wantCut)
			}
		})
	}
}
