package diff_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/strangler-proxy/strangler/proxy/diff"
)

// reserialized is BenchOrder as another implementation would write it:
// indented, with a fresh updated_at (which the route ignores).
func reserialized(tb testing.TB) []byte {
	var b bytes.Buffer
	if err := json.Indent(&b, []byte(strings.Replace(diff.BenchOrder, `09.412Z`, `09.977Z`, 1)), "", "  "); err != nil {
		tb.Fatal(err)
	}
	return b.Bytes()
}

func benchComparer(tb testing.TB) *diff.Comparer {
	return mustNew(tb, diff.Options{
		Headers: []string{"content-type"},
		Ignore:  []string{"/body/updated_at", "/body/items/*/updated_at", "/headers/date"},
	})
}

func benchCompare(b *testing.B, legacy, newpath diff.Response, wantDiffs int) {
	c := benchComparer(b)
	got, err := c.Compare(legacy, newpath)
	if err != nil || len(got) != wantDiffs {
		b.Fatalf("got %q, %v; want %d differences", format(got), err, wantDiffs)
	}
	b.SetBytes(int64(len(legacy.Body) + len(newpath.Body)))
	b.ReportAllocs()
	for b.Loop() {
		c.Compare(legacy, newpath)
	}
}

// BenchmarkCompareOrder2KB compares two equal answers that are not equal
// bytes, so both bodies are parsed and walked: the common shadowing case.
func BenchmarkCompareOrder2KB(b *testing.B) {
	h := map[string][]string{"Content-Type": {"application/json"}}
	benchCompare(b, diff.Response{Status: 200, Header: h, Body: []byte(diff.BenchOrder)}, diff.Response{Status: 200, Header: h, Body: reserialized(b)}, 0)
}

// BenchmarkCompareOrder2KBOneDiff is BenchmarkCompareOrder2KB with one
// differing price.
func BenchmarkCompareOrder2KBOneDiff(b *testing.B) {
	h := map[string][]string{"Content-Type": {"application/json"}}
	newpath := bytes.Replace(reserialized(b), []byte(`899`), []byte(`900`), 1)
	benchCompare(b, diff.Response{Status: 200, Header: h, Body: []byte(diff.BenchOrder)}, diff.Response{Status: 200, Header: h, Body: newpath}, 1)
}

// BenchmarkCompareOrder2KBOtherKeyOrder compares equal answers whose
// objects list their keys in another order (newpath sorts them), so every
// object is paired by key rather than by position.
func BenchmarkCompareOrder2KBOtherKeyOrder(b *testing.B) {
	var order any
	if err := json.Unmarshal([]byte(diff.BenchOrder), &order); err != nil {
		b.Fatal(err)
	}
	sorted, _ := json.Marshal(order) // maps marshal with sorted keys
	h := map[string][]string{"Content-Type": {"application/json"}}
	benchCompare(b, diff.Response{Status: 200, Header: h, Body: []byte(diff.BenchOrder)}, diff.Response{Status: 200, Header: h, Body: sorted}, 0)
}

// BenchmarkCompareOrder2KBIdentical compares byte for byte equal answers,
// which skip the parse.
func BenchmarkCompareOrder2KBIdentical(b *testing.B) {
	h := map[string][]string{"Content-Type": {"application/json"}}
	benchCompare(b, diff.Response{Status: 200, Header: h, Body: []byte(diff.BenchOrder)}, diff.Response{Status: 200, Header: h, Body: []byte(diff.BenchOrder)}, 0)
}

// BenchmarkCompareOrder2KBGzip is BenchmarkCompareOrder2KB with a gzipped
// legacy answer.
func BenchmarkCompareOrder2KBGzip(b *testing.B) {
	h := map[string][]string{"Content-Type": {"application/json"}}
	gz := map[string][]string{"Content-Type": {"application/json"}, "Content-Encoding": {"gzip"}}
	benchCompare(b, diff.Response{Status: 200, Header: gz, Body: []byte(gzipped(b, diff.BenchOrder))}, diff.Response{Status: 200, Header: h, Body: reserialized(b)}, 0)
}

// BenchmarkCompareOrder2KBUnordered compares the items as a multiset, in
// reverse order on one side.
func BenchmarkCompareOrder2KBUnordered(b *testing.B) {
	var order map[string]any
	dec := json.NewDecoder(strings.NewReader(diff.BenchOrder))
	dec.UseNumber()
	if err := dec.Decode(&order); err != nil {
		b.Fatal(err)
	}
	items := order["items"].([]any)
	for i, j := 0, len(items)-1; i < j; i, j = i+1, j-1 {
		items[i], items[j] = items[j], items[i]
	}
	reversed, _ := json.Marshal(order)
	c := mustNew(b, diff.Options{Unordered: []string{"/body/items"}, Ignore: []string{"/body/items/*/updated_at"}})
	legacy, newpath := diff.Response{Status: 200, Body: []byte(diff.BenchOrder)}, diff.Response{Status: 200, Body: reversed}
	if got, err := c.Compare(legacy, newpath); err != nil || len(got) != 0 {
		b.Fatalf("got %q, %v; want no difference", format(got), err)
	}
	b.ReportAllocs()
	for b.Loop() {
		c.Compare(legacy, newpath)
	}
}
