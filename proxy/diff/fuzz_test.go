package diff

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// fuzzOptions are the option sets FuzzCompare picks from: patterns that hit
// the seed corpus's shapes, so ignores, data keys and multisets are used.
var fuzzOptions = []Options{
	{},
	{Ignore: []string{"/body/a", "/body/*/b"}, Unordered: []string{"/body", "/body/*"}},
	{Ignore: []string{"/body/{key}/x", "/body/items/*/updated_at"}, Unordered: []string{"/body/*/*", "/body/items", "/body/items/*/tags"}},
	{Ignore: []string{"/body/*/*/*"}, Unordered: []string{"/body/items", "/body/{key}"}, MaxDifferences: 3},
	{Headers: []string{"content-type"}, Unordered: []string{"/body/*/{key}"}, MaxDifferences: 1},
	{Unordered: []string{"/body/items", "/body/*"}, Rules: []Rule{
		{Path: "/body/items/*/qty", Absolute: 0.5},
		{Path: "/body/*", Relative: 0.01},
		{Path: "/body/a", Time: true, Within: time.Second},
		{Path: "/body/{key}/x", Mask: regexp.MustCompile(`^[0-9]+$`)},
		{Path: "/body/items/*/sku", FoldCase: true, TrimSpace: true},
	}},
}

// FuzzCompare checks what must hold for any two answers: no panic; an
// answer equals itself, and a reformatted or key-sorted copy of itself;
// swapping the sides swaps missing and extra and nothing else; the cap
// keeps a prefix of the report; the parser accepts exactly what
// encoding/json does; and hashing never separates equal values.
func FuzzCompare(f *testing.F) {
	seeds := [][2]string{
		{`{"id":1,"items":[{"sku":"A","qty":1},{"sku":"B","qty":2}]}`, `{"items":[{"sku":"B","qty":2},{"qty":1.0,"sku":"A"}],"id":1e0}`},
		{`{"a":{"b":1,"x":[1,2]},"1":{"x":3}}`, `{"a":{"b":2,"x":[2,1]},"1":{"x":4},"2":null}`},
		{`[1,[2,3],{"a":[4]}]`, `[1,[3,2],{"a":[4,4]}]`},
		{`{"a":1,"a":2,"b":[{"a":1,"a":2}]}`, `{"a":2,"a":1,"b":[{"a":2,"a":1}]}`},
		{`{"items":[{"sku":"A","tags":["x","y"],"updated_at":1}]}`, `{"items":[{"sku":"A","tags":["y","x"],"updated_at":2}]}`},
		{`{"s":"\ud800\u00e9\"","t":"😀","u":"\ud83d\ude00"}`, `{"s":"\udc00é\"","t":"\ud83d\ude00"}`},
		{`12345678901234567890.5e-3`, `1234567890123456789.05e-2`},
		{`{"big":1e99999999999999999999}`, `{"big":10e99999999999999999998}`},
		{`<html>`, `{"error":"bad gateway"}`},
		{``, `{}`},
		{`{"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k10":10,"k11":11,"k12":12,"k13":13,"k14":14,"k15":15,"k16":16,"k17":17}`,
			`{"k17":17,"k16":16,"k15":15,"k14":14,"k13":13,"k12":12,"k11":11,"k10":10,"k9":9,"k8":8,"k7":7,"k6":6,"k5":5,"k4":4,"k3":3,"k2":2,"k1":0}`},
		{`{"a/b":{"~":[null,true,false]}}`, `{"a/b":{"~":[null,false,true]}}`},
		{`[[],[[]],{}]`, `[{},[[]],[]]`},
	}
	for i, s := range seeds {
		f.Add([]byte(s[0]), []byte(s[1]), 200, 200+i%2, uint8(i))
	}
	f.Add([]byte("\x06\x03\x10\x05\x02\x03\x01\x03\x02"), []byte("\x06\x03\x10\x05\x02\x03\x02\x03\x01"), 200, 200, uint8(0x80|2))
	f.Fuzz(func(t *testing.T, lb, nb []byte, ls, ns int, pick uint8) {
		if pick&0x80 != 0 {
			// Read the bytes as recipes for JSON values over a small
			// alphabet, so both sides are valid and often alike.
			lb, nb = generateJSON(lb), generateJSON(nb)
		}
		opts := fuzzOptions[int(pick&0x7F)%len(fuzzOptions)]
		c, err := New(opts)
		if err != nil {
			t.Fatal(err)
		}
		hdr := func(v string) http.Header { return http.Header{"Content-Type": {v}} }
		legacy := Response{Status: ls, Header: hdr("application/json"), Body: lb}
		newpath := Response{Status: ns, Header: hdr("text/plain"), Body: nb}

		for _, r := range []Response{legacy, newpath} {
			var tr tree
			if got, want := tr.parse(r.Body), json.Valid(r.Body); got != want {
				t.Fatalf("parse(%q) = %v; want %v, as json.Valid", r.Body, got, want)
			}
			mustEqual(t, c, r, r)
			if !json.Valid(r.Body) {
				continue
			}
			var indented, compacted bytes.Buffer
			json.Indent(&indented, r.Body, "", "\t")
			json.Compact(&compacted, r.Body)
			mustEqual(t, c, r, Response{Status: r.Status, Header: r.Header, Body: indented.Bytes()})
			mustEqual(t, c, r, Response{Status: r.Status, Header: r.Header, Body: compacted.Bytes()})
			tr.parse(r.Body)
			mustEqual(t, c, r, Response{Status: r.Status, Header: r.Header, Body: sortedKeys(&tr, 0, nil)})
		}

		forward, err := c.Compare(legacy, newpath)
		if errors.Is(err, errTooComplex) {
			return // a pathological pair; that it ends is the test
		}
		if err != nil {
			t.Fatal(err)
		}
		backward, err := c.Compare(newpath, legacy)
		if errors.Is(err, errTooComplex) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		if g, w := formatDiffs(swapSides(backward)), formatDiffs(forward); g != w {
			t.Fatalf("Compare(b, a) with sides swapped:\n%s; want Compare(a, b):\n%s", g, w)
		}
		for _, x := range forward {
			for _, v := range []string{x.Legacy, x.Newpath} {
				if len(v) > maxValueBytes {
					t.Fatalf("value of %d bytes at %s; want at most %d", len(v), x.At, maxValueBytes)
				}
			}
		}

		// The cap keeps the report's first paths. Not quite with repeated
		// keys: the walk finishes one pair of occurrences before the next,
		// and ties at one path may keep other kinds. It is a subset then.
		uncapped := opts
		uncapped.MaxDifferences = 1 << 20
		all, err := mustCompile(t, uncapped).Compare(legacy, newpath)
		if err != nil {
			t.Fatal(err)
		}
		max := c.max
		if len(all) <= max {
			if g, w := formatDiffs(forward), formatDiffs(all); g != w {
				t.Fatalf("under the cap: got\n%s; want\n%s", g, w)
			}
		} else if len(forward) != max || !isSubset(forward, all) {
			t.Fatalf("capped at %d: got\n%s; want %d of\n%s", max, formatDiffs(forward), max, formatDiffs(all))
		} else if g, w := atsOf(forward), atsOf(all[:max]); g != w && !repeatedKeys(lb) && !repeatedKeys(nb) {
			t.Fatalf("capped at %d: got paths\n%s; want\n%s", max, g, w)
		}

		// Walking objects in key order finds what the fast path finds.
		if sorted := compareSorted(t, mustCompile(t, uncapped), legacy, newpath); formatDiffs(sorted) != formatDiffs(all) {
			t.Fatalf("sorted walk: got\n%s; want\n%s", formatDiffs(sorted), formatDiffs(all))
		}

		checkHashes(t, c, lb, nb)

		// Without patterns, the bodies have no difference exactly when
		// encoding/json sees equal values, numbers compared exactly: but
		// encoding/json makes invalid UTF-8 and lone surrogates U+FFFD,
		// where this package keeps their bytes apart, and keeps only the
		// last of repeated keys.
		if len(opts.Ignore)+len(opts.Unordered) == 0 && referenceComparable(lb) && referenceComparable(nb) {
			var body []Difference
			for _, x := range forward {
				if strings.HasPrefix(x.At, "/body") {
					body = append(body, x)
				}
			}
			if want, ok := referenceEqual(t, lb, nb); ok && (body == nil) != want {
				got := body == nil
				t.Fatalf("bodies %q and %q: no difference %v; want %v, as encoding/json", lb, nb, got, want)
			}
		}
	})
}

func referenceComparable(b []byte) bool {
	return json.Valid(b) && utf8.Valid(b) && !bytes.Contains(bytes.ToLower(b), []byte(`\ud`)) && !repeatedKeys(b)
}

// referenceEqual is deep equality through encoding/json, numbers as exact
// rationals; not ok when a number is beyond big.Rat.
func referenceEqual(t *testing.T, a, b []byte) (equal, ok bool) {
	ok = true
	decode := func(b []byte) any {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	var eq func(x, y any) bool
	eq = func(x, y any) bool {
		switch x := x.(type) {
		case json.Number:
			y, isNumber := y.(json.Number)
			if !isNumber {
				return false
			}
			rx, okx := new(big.Rat).SetString(string(x))
			ry, oky := new(big.Rat).SetString(string(y))
			if !okx || !oky {
				ok = false
				return false
			}
			return rx.Cmp(ry) == 0
		case []any:
			y, isArray := y.([]any)
			if !isArray || len(x) != len(y) {
				return false
			}
			for i := range x {
				if !eq(x[i], y[i]) {
					return false
				}
			}
			return true
		case map[string]any:
			y, isObject := y.(map[string]any)
			if !isObject || len(x) != len(y) {
				return false
			}
			for k, v := range x {
				if w, found := y[k]; !found || !eq(v, w) {
					return false
				}
			}
			return true
		default:
			return x == y
		}
	}
	equal = eq(decode(a), decode(b))
	return equal, ok
}

func mustCompile(t *testing.T, opts Options) *Comparer {
	c, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustEqual(t *testing.T, c *Comparer, a, b Response) {
	t.Helper()
	got, err := c.Compare(a, b)
	if err != nil || got != nil {
		t.Fatalf("Compare(%q, %q) = %s, %v; want no difference", a.Body, b.Body, formatDiffs(got), err)
	}
}

// compareSorted is Compare with the walk in key order from the start.
func compareSorted(t *testing.T, c *Comparer, legacy, newpath Response) []Difference {
	st := c.getState()
	defer c.putState(st)
	st.w.init(c, st)
	body, err := c.prepareBody(st, legacy, newpath)
	if err != nil {
		t.Fatal(err)
	}
	st.w.run(body, legacy, newpath, true, c.max)
	diffs := st.w.diffs
	st.w.diffs = nil
	slices.SortFunc(diffs, compareDifferences)
	return diffs
}

// checkHashes checks that whenever the bodies are equal (at the root of
// the body, with c's patterns), they hash alike, which the multiset
// comparison relies on.
func checkHashes(t *testing.T, c *Comparer, lb, nb []byte) {
	st := c.getState()
	defer c.putState(st)
	w := &st.w
	w.init(c, st)
	if !w.a.parse(lb) || !w.b.parse(nb) {
		return
	}
	root := w.root()
	w.path = append(w.path[:0], segment{key: c.segBody, index: -1})
	m := w.step(root, &w.path[0], false)
	if m.ignore || !w.walk(0, 0, m, true) {
		return
	}
	if ha, hb := w.hash(w.a, 0, m), w.hash(w.b, 0, m); ha != hb {
		t.Fatalf("equal bodies %q and %q hash to %x and %x", lb, nb, ha, hb)
	}
}

func isSubset(sub, all []Difference) bool {
	count := map[Difference]int{}
	for _, x := range all {
		count[x]++
	}
	for _, x := range sub {
		if count[x]--; count[x] < 0 {
			return false
		}
	}
	return true
}

// repeatedKeys reports whether body is JSON with an object that has a key
// more than once.
func repeatedKeys(body []byte) bool {
	var t tree
	if !t.parse(body) {
		return false
	}
	for i, n := range t.nodes {
		if n.kind != kindObject {
			continue
		}
		seen := map[string]bool{}
		ms := t.members(uint32(i))
		for k := 0; k < len(ms); k += 2 {
			key := string(t.str(ms[k]))
			if seen[key] {
				return true
			}
			seen[key] = true
		}
	}
	return false
}

func swapSides(diffs []Difference) []Difference {
	out := make([]Difference, len(diffs))
	for i, x := range diffs {
		x.Legacy, x.Newpath = x.Newpath, x.Legacy
		switch x.Kind {
		case KindMissing:
			x.Kind = KindExtra
		case KindExtra:
			x.Kind = KindMissing
		}
		out[i] = x
	}
	slices.SortFunc(out, compareDifferences)
	return out
}

func formatDiffs(diffs []Difference) string {
	var b strings.Builder
	for _, x := range diffs {
		fmt.Fprintf(&b, "%s %s %s legacy=%s newpath=%s\n", x.Kind, x.At, x.Path, x.Legacy, x.Newpath)
	}
	return b.String()
}

func atsOf(diffs []Difference) string {
	var b strings.Builder
	for _, x := range diffs {
		b.WriteString(x.At + "\n")
	}
	return b.String()
}

// sortedKeys writes node n of t as JSON with every object's members
// stably sorted by key bytes: the same value, serialized otherwise.
func sortedKeys(t *tree, n uint32, buf []byte) []byte {
	switch nd := t.nodes[n]; nd.kind {
	case kindString:
		return quoteRaw(buf, t.str(n))
	case kindArray:
		buf = append(buf, '[')
		for i, e := range t.elements(n) {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = sortedKeys(t, e, buf)
		}
		return append(buf, ']')
	case kindObject:
		ms := t.members(n)
		idx := make([]int, 0, len(ms)/2)
		for i := 0; i < len(ms); i += 2 {
			idx = append(idx, i)
		}
		slices.SortStableFunc(idx, func(x, y int) int { return bytes.Compare(t.str(ms[x]), t.str(ms[y])) })
		buf = append(buf, '{')
		for k, i := range idx {
			if k > 0 {
				buf = append(buf, ',')
			}
			buf = append(quoteRaw(buf, t.str(ms[i])), ':')
			buf = sortedKeys(t, ms[i+1], buf)
		}
		return append(buf, '}')
	case kindNumber:
		return append(buf, t.text(n)...)
	default:
		return append(buf, appendCompact(nil, t, n)...) // null, true, false: short
	}
}

// quoteRaw quotes s escaping only what JSON requires, so that it parses
// back to exactly s, invalid UTF-8 and all.
func quoteRaw(buf, s []byte) []byte {
	buf = append(buf, '"')
	for _, c := range s {
		switch {
		case c == '"' || c == '\\':
			buf = append(buf, '\\', c)
		case c < 0x20:
			buf = append(buf, fmt.Sprintf(`\u%04x`, c)...)
		default:
			buf = append(buf, c)
		}
	}
	return append(buf, '"')
}

// generateJSON turns recipe into a JSON document: each byte picks the next
// value's kind and content from a few that make interesting pairs (equal
// numbers written differently, keys that are data, repeated keys, keys
// that patterns name).
func generateJSON(recipe []byte) []byte {
	g := generator{recipe: recipe}
	return g.value(nil, 0)
}

type generator struct {
	recipe []byte
	at     int
}

func (g *generator) next() byte {
	if g.at >= len(g.recipe) {
		return 0
	}
	g.at++
	return g.recipe[g.at-1]
}

var (
	genNumbers = []string{"0", "-0", "1", "1.0", "1e0", "10e-1", "2", "9007199254740993", "9007199254740992", "1e400", "10e399", "-2.5"}
	genStrings = []string{`""`, `"a"`, `"b"`, `"1"`, `"x/y"`, `"~"`, `"\u0061"`, `"\ud800"`, `"é"`}
	genKeys    = []string{"a", "b", "x", "1", "2", "items", "tags", "updated_at", "a/b", "~", ""}
)

func (g *generator) value(buf []byte, depth int) []byte {
	c := g.next()
	if depth >= 5 {
		c %= 5
	}
	switch c % 7 {
	case 0:
		return append(buf, "null"...)
	case 1:
		return append(buf, "true"...)
	case 2:
		return append(buf, genNumbers[int(g.next())%len(genNumbers)]...)
	case 3:
		return append(buf, genStrings[int(g.next())%len(genStrings)]...)
	case 4:
		return append(buf, "false"...)
	case 5:
		buf = append(buf, '[')
		for i := range int(g.next() % 5) {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = g.value(buf, depth+1)
		}
		return append(buf, ']')
	default:
		buf = append(buf, '{')
		for i := range int(g.next() % 5) {
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = append(quoteRaw(buf, []byte(genKeys[int(g.next())%len(genKeys)])), ':')
			buf = g.value(buf, depth+1)
		}
		return append(buf, '}')
	}
}
