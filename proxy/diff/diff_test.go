package diff_test

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/strangler-proxy/strangler/proxy/diff"
)

// res builds a Response; header is name, value pairs.
func res(status int, body string, header ...string) diff.Response {
	h := http.Header{}
	for i := 0; i+1 < len(header); i += 2 {
		h.Add(header[i], header[i+1])
	}
	return diff.Response{Status: status, Header: h, Body: []byte(body)}
}

// d builds a Difference whose schema path is its concrete path.
func d(at string, k diff.Kind, legacy, newpath string) diff.Difference {
	return diff.Difference{Path: at, At: at, Kind: k, Legacy: legacy, Newpath: newpath}
}

// ds builds a Difference with a schema path of its own.
func ds(path, at string, k diff.Kind, legacy, newpath string) diff.Difference {
	return diff.Difference{Path: path, At: at, Kind: k, Legacy: legacy, Newpath: newpath}
}

func format(diffs []diff.Difference) string {
	var b strings.Builder
	for _, x := range diffs {
		fmt.Fprintf(&b, "%s %s %s legacy=%s newpath=%s\n", x.Kind, x.At, x.Path, x.Legacy, x.Newpath)
	}
	return b.String()
}

func mustNew(t testing.TB, opts diff.Options) *diff.Comparer {
	t.Helper()
	c, err := diff.New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

type compareCase struct {
	name            string
	opts            diff.Options
	legacy, newpath diff.Response
	want            []diff.Difference
}

func runCompareCases(t *testing.T, cases []compareCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := mustNew(t, tc.opts)
			got, err := c.Compare(tc.legacy, tc.newpath)
			if err != nil {
				t.Fatalf("Compare: %v", err)
			}
			if g, w := format(got), format(tc.want); g != w {
				t.Errorf("got\n%s; want\n%s", g, w)
			}
		})
	}
}

func TestCompareKinds(t *testing.T) {
	runCompareCases(t, []compareCase{
		{name: "identical", legacy: res(200, `{"id":1}`), newpath: res(200, `{"id":1}`)},
		{name: "key order and whitespace", legacy: res(200, `{"id":1,"a":[1,2]}`), newpath: res(200, " {\"a\" : [1, 2],\n\"id\":1}\n")},
		{
			name:   "string value",
			legacy: res(200, `{"state":"paid"}`), newpath: res(200, `{"state":"open"}`),
			want: []diff.Difference{d("/body/state", diff.KindValue, `"paid"`, `"open"`)},
		},
		{
			name:   "boolean value",
			legacy: res(200, `{"ok":true}`), newpath: res(200, `{"ok":false}`),
			want: []diff.Difference{d("/body/ok", diff.KindValue, `true`, `false`)},
		},
		{
			name:   "string vs number is a type difference",
			legacy: res(200, `{"total":"12.50"}`), newpath: res(200, `{"total":12.5}`),
			want: []diff.Difference{d("/body/total", diff.KindType, `"12.50"`, `12.5`)},
		},
		{
			name:   "object vs null",
			legacy: res(200, `{"customer":{"id":7}}`), newpath: res(200, `{"customer":null}`),
			want: []diff.Difference{d("/body/customer", diff.KindType, `{"id":7}`, `null`)},
		},
		{
			name:   "array vs object at the root",
			legacy: res(200, `[1]`), newpath: res(200, `{"0":1}`),
			want: []diff.Difference{d("/body", diff.KindType, `[1]`, `{"0":1}`)},
		},
		{
			name:   "missing and extra keys",
			legacy: res(200, `{"id":1,"discount":{"code":"X"}}`), newpath: res(200, `{"id":1,"coupon":null}`),
			want: []diff.Difference{
				d("/body/coupon", diff.KindExtra, ``, `null`),
				d("/body/discount", diff.KindMissing, `{"code":"X"}`, ``),
			},
		},
		{
			name:   "size reported once at the array",
			legacy: res(200, `{"items":[{"sku":"A"},{"sku":"B"}]}`), newpath: res(200, `{"items":[{"sku":"X"}]}`),
			want: []diff.Difference{d("/body/items", diff.KindSize, `[{"sku":"A"},{"sku":"B"}]`, `[{"sku":"X"}]`)},
		},
		{
			name:   "order reported once at the array",
			legacy: res(200, `{"items":[{"sku":"A"},{"sku":"B"},{"sku":"C"}]}`), newpath: res(200, `{"items":[{"sku":"C"},{"sku":"A"},{"sku":"B"}]}`),
			want: []diff.Difference{d("/body/items", diff.KindOrder, `[{"sku":"A"},{"sku":"B"},{"sku":"C"}]`, `[{"sku":"C"},{"sku":"A"},{"sku":"B"}]`)},
		},
		{
			name:   "same length, other elements: element by element",
			legacy: res(200, `{"items":[{"sku":"A","qty":1},{"sku":"B","qty":2}]}`), newpath: res(200, `{"items":[{"sku":"A","qty":1},{"sku":"B","qty":3}]}`),
			want: []diff.Difference{ds("/body/items/*/qty", "/body/items/1/qty", diff.KindValue, `2`, `3`)},
		},
		{
			name:   "duplicate elements are not an order difference when counts differ",
			legacy: res(200, `[1,1,2]`), newpath: res(200, `[1,2,2]`),
			want: []diff.Difference{ds("/body/*", "/body/1", diff.KindValue, `1`, `2`)},
		},
		{
			name:   "nested arrays",
			legacy: res(200, `{"m":[[1,2],[3]]}`), newpath: res(200, `{"m":[[1,2],[4]]}`),
			want: []diff.Difference{ds("/body/m/*/*", "/body/m/1/0", diff.KindValue, `3`, `4`)},
		},
		{
			name:   "escaped strings equal their unescaped form",
			legacy: res(200, `{"name":"caf\u00e9 \"x\" \/"}`), newpath: res(200, `{"name":"café \"x\" /"}`),
		},
		{
			name:   "surrogate pair equals the raw character",
			legacy: res(200, `["\ud83d\ude00"]`), newpath: res(200, `["😀"]`),
		},
		{
			name:   "lone surrogates differ from each other",
			legacy: res(200, `["\ud800"]`), newpath: res(200, `["\udc00"]`),
			want: []diff.Difference{ds("/body/*", "/body/0", diff.KindValue, `"\ud800"`, `"\udc00"`)},
		},
		{
			name:   "RFC 6901 escaping of keys",
			legacy: res(200, `{"a/b":{"m~n":1}}`), newpath: res(200, `{"a/b":{"m~n":2}}`),
			want: []diff.Difference{d("/body/a~1b/m~0n", diff.KindValue, `1`, `2`)},
		},
		{
			name:   "empty key",
			legacy: res(200, `{"":1}`), newpath: res(200, `{"":2}`),
			want: []diff.Difference{d("/body/", diff.KindValue, `1`, `2`)},
		},
		{
			name:   "duplicate keys pair by occurrence",
			legacy: res(200, `{"a":1,"a":2}`), newpath: res(200, `{"a":1,"a":3,"a":4}`),
			want: []diff.Difference{
				d("/body/a", diff.KindExtra, ``, `4`),
				d("/body/a", diff.KindValue, `2`, `3`),
			},
		},
		{
			name:   "status",
			legacy: res(200, `{}`), newpath: res(404, `{}`),
			want: []diff.Difference{d("/status", diff.KindValue, `200`, `404`)},
		},
		{
			name:   "results sorted by At with numeric segments by value",
			legacy: res(500, `{"z":1,"items":[0,0,0,0,0,0,0,0,0,0,0,0],"a":1}`), newpath: res(200, `{"a":2,"items":[0,0,1,0,0,0,0,0,0,0,0,2],"z":2}`),
			opts: diff.Options{Headers: []string{"x-b", "x-a"}},
			want: []diff.Difference{
				d("/body/a", diff.KindValue, `1`, `2`),
				ds("/body/items/*", "/body/items/2", diff.KindValue, `0`, `1`),
				ds("/body/items/*", "/body/items/11", diff.KindValue, `0`, `2`),
				d("/body/z", diff.KindValue, `1`, `2`),
				d("/status", diff.KindValue, `500`, `200`),
			},
		},
	})
}

func TestCompareNumbers(t *testing.T) {
	equal := [][2]string{
		{`1`, `1.0`},
		{`1`, `1e0`},
		{`1`, `10e-1`},
		{`1`, `0.1e1`},
		{`100`, `1E2`},
		{`100`, `1e+2`},
		{`0`, `-0`},
		{`0`, `0.000e99`},
		{`-2.50`, `-25e-1`},
		{`12345678901234567890123456789`, `12345678901234567890123456789.000`},
		{`9007199254740993`, `9007199254740993.0`},
		{`1e400`, `10e399`},
		{`1e99999999999999999999999`, `10e99999999999999999999998`},
		{`0.000001`, `1e-6`},
	}
	for _, p := range equal {
		t.Run(p[0]+"="+p[1], func(t *testing.T) {
			c := mustNew(t, diff.Options{})
			got, err := c.Compare(res(200, `{"n":`+p[0]+`}`), res(200, `{"n":`+p[1]+`}`))
			if err != nil || got != nil {
				t.Errorf("got %q, %v; want no difference", format(got), err)
			}
		})
	}
	unequal := [][2]string{
		{`1`, `-1`},
		{`1`, `1.0000000000000000000001`},
		{`9007199254740992`, `9007199254740993`}, // equal as float64
		{`12345678901234567890123456789`, `12345678901234567890123456788`},
		{`1e400`, `1e401`},
		{`1e99999999999999999999999`, `1e99999999999999999999998`},
		{`0`, `1e-400`},
		{`0.1`, `0.01`},
	}
	for _, p := range unequal {
		t.Run(p[0]+"!="+p[1], func(t *testing.T) {
			c := mustNew(t, diff.Options{})
			got, err := c.Compare(res(200, `{"n":`+p[0]+`}`), res(200, `{"n":`+p[1]+`}`))
			want := []diff.Difference{d("/body/n", diff.KindValue, p[0], p[1])}
			if err != nil || format(got) != format(want) {
				t.Errorf("got %q, %v; want %q", format(got), err, format(want))
			}
		})
	}
}

func TestCompareUnordered(t *testing.T) {
	unordered := diff.Options{Unordered: []string{"/body/items", "/body/items/*/tags"}}
	runCompareCases(t, []compareCase{
		{
			name: "same elements in another order", opts: unordered,
			legacy:  res(200, `{"items":[{"sku":"A","qty":1},{"sku":"B","qty":2},{"sku":"A","qty":1}]}`),
			newpath: res(200, `{"items":[{"qty":1,"sku":"A"},{"sku":"A","qty":1.0},{"sku":"B","qty":2}]}`),
		},
		{
			name: "nested unordered arrays inside elements", opts: unordered,
			legacy:  res(200, `{"items":[{"sku":"A","tags":["x","y"]},{"sku":"B","tags":[]}]}`),
			newpath: res(200, `{"items":[{"sku":"B","tags":[]},{"sku":"A","tags":["y","x"]}]}`),
		},
		{
			name: "nested ordered arrays stay ordered", opts: diff.Options{Unordered: []string{"/body/items"}},
			legacy:  res(200, `{"items":[{"sku":"A","tags":["x","y"]},{"sku":"B"}]}`),
			newpath: res(200, `{"items":[{"sku":"B"},{"sku":"A","tags":["y","x"]}]}`),
			want: []diff.Difference{d("/body/items", diff.KindValue,
				`[{"sku":"A","tags":["x","y"]},{"sku":"B"}]`, `[{"sku":"B"},{"sku":"A","tags":["y","x"]}]`)},
		},
		{
			name: "other multiplicities, same length: one value difference", opts: unordered,
			legacy:  res(200, `{"items":[{"sku":"A"},{"sku":"A"},{"sku":"B"}]}`),
			newpath: res(200, `{"items":[{"sku":"B"},{"sku":"B"},{"sku":"A"}]}`),
			want: []diff.Difference{d("/body/items", diff.KindValue,
				`[{"sku":"A"},{"sku":"A"},{"sku":"B"}]`, `[{"sku":"B"},{"sku":"B"},{"sku":"A"}]`)},
		},
		{
			name: "other lengths: size", opts: unordered,
			legacy: res(200, `{"items":[1,2]}`), newpath: res(200, `{"items":[2,1,1]}`),
			want: []diff.Difference{d("/body/items", diff.KindSize, `[1,2]`, `[2,1,1]`)},
		},
		{
			name:    "ignored fields do not count in the multiset",
			opts:    diff.Options{Unordered: []string{"/body/items"}, Ignore: []string{"/body/items/*/updated_at"}},
			legacy:  res(200, `{"items":[{"sku":"A","updated_at":1},{"sku":"B","updated_at":2}]}`),
			newpath: res(200, `{"items":[{"sku":"B","updated_at":3},{"sku":"A"}]}`),
		},
		{
			name: "unordered root array", opts: diff.Options{Unordered: []string{"/body"}},
			legacy: res(200, `[3,1,2]`), newpath: res(200, `[1,2,3]`),
		},
		{
			name: "an unordered pattern on an object is moot", opts: diff.Options{Unordered: []string{"/body/items"}},
			legacy: res(200, `{"items":{"a":1}}`), newpath: res(200, `{"items":{"a":2}}`),
			want: []diff.Difference{d("/body/items/a", diff.KindValue, `1`, `2`)},
		},
		{
			name:    "ignored fields do not make an order difference",
			opts:    diff.Options{Ignore: []string{"/body/items/*/at"}},
			legacy:  res(200, `{"items":[{"sku":"A","at":1},{"sku":"B","at":2}]}`),
			newpath: res(200, `{"items":[{"sku":"B","at":3},{"sku":"A","at":4}]}`),
			want: []diff.Difference{d("/body/items", diff.KindOrder,
				`[{"sku":"A","at":1},{"sku":"B","at":2}]`, `[{"sku":"B","at":3},{"sku":"A","at":4}]`)},
		},
	})
}

// manyKeys returns an object with n keys k0..k(n-1) whose values are
// value(i).
func manyKeys(n int, value func(int) int) string {
	var b strings.Builder
	b.WriteString("{")
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `"k%d":%d`, i, value(i))
	}
	b.WriteString("}")
	return b.String()
}

func TestCompareSchemaPaths(t *testing.T) {
	long := strings.Repeat("x", 65)
	at64 := strings.Repeat("y", 64)
	same := func(int) int { return 1 }
	last := func(i int) int {
		if i == 50 {
			return 2
		}
		return 1
	}
	runCompareCases(t, []compareCase{
		{
			name:   "array indexes are *",
			legacy: res(200, `{"items":[{"p":1},{"p":2}]}`), newpath: res(200, `{"items":[{"p":1},{"p":3}]}`),
			want: []diff.Difference{ds("/body/items/*/p", "/body/items/1/p", diff.KindValue, `2`, `3`)},
		},
		{
			name:   "keys starting with a digit are data",
			legacy: res(200, `{"stock":{"1001":{"qty":3},"sku":{"qty":1}}}`), newpath: res(200, `{"stock":{"1001":{"qty":0},"sku":{"qty":2}}}`),
			want: []diff.Difference{
				ds("/body/stock/{key}/qty", "/body/stock/1001/qty", diff.KindValue, `3`, `0`),
				ds("/body/stock/{key}/qty", "/body/stock/sku/qty", diff.KindValue, `1`, `2`),
			},
		},
		{
			name:   "data keys on one side make the object data on both",
			legacy: res(200, `{"stock":{"a":1}}`), newpath: res(200, `{"stock":{"a":2,"7":1}}`),
			want: []diff.Difference{
				ds("/body/stock/{key}", "/body/stock/7", diff.KindExtra, ``, `1`),
				ds("/body/stock/{key}", "/body/stock/a", diff.KindValue, `1`, `2`),
			},
		},
		{
			name:   "a key longer than 64 bytes is data",
			legacy: res(200, `{"m":{"`+long+`":1,"a":1}}`), newpath: res(200, `{"m":{"`+long+`":1,"a":2}}`),
			want: []diff.Difference{ds("/body/m/{key}", "/body/m/a", diff.KindValue, `1`, `2`)},
		},
		{
			name:   "a key of 64 bytes is a field",
			legacy: res(200, `{"m":{"`+at64+`":1}}`), newpath: res(200, `{"m":{"`+at64+`":2}}`),
			want: []diff.Difference{d("/body/m/"+at64, diff.KindValue, `1`, `2`)},
		},
		{
			name:   "more than 50 keys are data",
			legacy: res(200, `{"m":`+manyKeys(51, same)+`}`), newpath: res(200, `{"m":`+manyKeys(51, last)+`}`),
			want: []diff.Difference{ds("/body/m/{key}", "/body/m/k50", diff.KindValue, `1`, `2`)},
		},
		{
			name:   "50 keys are fields",
			legacy: res(200, `{"m":`+manyKeys(50, func(i int) int { return i })+`}`), newpath: res(200, `{"m":`+manyKeys(50, func(i int) int { return i + boolInt(i == 49) })+`}`),
			want: []diff.Difference{d("/body/m/k49", diff.KindValue, `49`, `50`)},
		},
		{
			name:   "data keys are escaped in At",
			legacy: res(200, `{"m":{"1/2":1}}`), newpath: res(200, `{"m":{"1/2":2}}`),
			want: []diff.Difference{ds("/body/m/{key}", "/body/m/1~12", diff.KindValue, `1`, `2`)},
		},
	})
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestCompareIgnore(t *testing.T) {
	order := `{"id":"o-1","updated_at":"2024-05-01T10:00:00Z","items":[{"sku":"A","updated_at":"t1","price":{"cents":100,"at":"t"}}],"meta":{"trace":"abc"}}`
	other := `{"id":"o-1","updated_at":"2024-05-01T10:00:09Z","items":[{"sku":"A","updated_at":"t2","price":{"cents":100,"at":"u"}}],"meta":{"trace":"def"}}`
	runCompareCases(t, []compareCase{
		{
			name:   "not ignored",
			legacy: res(200, order), newpath: res(200, other),
			want: []diff.Difference{
				ds("/body/items/*/price/at", "/body/items/0/price/at", diff.KindValue, `"t"`, `"u"`),
				ds("/body/items/*/updated_at", "/body/items/0/updated_at", diff.KindValue, `"t1"`, `"t2"`),
				d("/body/meta/trace", diff.KindValue, `"abc"`, `"def"`),
				d("/body/updated_at", diff.KindValue, `"2024-05-01T10:00:00Z"`, `"2024-05-01T10:00:09Z"`),
			},
		},
		{
			name:   "exact, star and subtree",
			opts:   diff.Options{Ignore: []string{"/body/updated_at", "/body/items/*/updated_at", "/body/meta", "/body/*/*/price/at"}},
			legacy: res(200, order), newpath: res(200, other),
		},
		{
			name:   "star matches a data key",
			opts:   diff.Options{Ignore: []string{"/body/stock/*/at"}},
			legacy: res(200, `{"stock":{"1001":{"at":1,"qty":1}}}`), newpath: res(200, `{"stock":{"1001":{"at":2,"qty":1}}}`),
		},
		{
			name:   "{key} matches a data key",
			opts:   diff.Options{Ignore: []string{"/body/stock/{key}/at"}},
			legacy: res(200, `{"stock":{"1001":{"at":1,"qty":1}}}`), newpath: res(200, `{"stock":{"1001":{"at":2,"qty":2}}}`),
			want: []diff.Difference{ds("/body/stock/{key}/qty", "/body/stock/1001/qty", diff.KindValue, `1`, `2`)},
		},
		{
			name:   "a concrete index does not match: patterns are schema paths",
			opts:   diff.Options{Ignore: []string{"/body/items/0"}},
			legacy: res(200, `{"items":[1]}`), newpath: res(200, `{"items":[2]}`),
			want: []diff.Difference{ds("/body/items/*", "/body/items/0", diff.KindValue, `1`, `2`)},
		},
		{
			name:   "ignored key missing on one side",
			opts:   diff.Options{Ignore: []string{"/body/debug"}},
			legacy: res(200, `{"id":1,"debug":{"host":"a"}}`), newpath: res(200, `{"id":1}`),
		},
		{
			name:   "ignored elements still have a length",
			opts:   diff.Options{Ignore: []string{"/body/items/*"}},
			legacy: res(200, `{"items":[1,2]}`), newpath: res(200, `{"items":[3]}`),
			want: []diff.Difference{d("/body/items", diff.KindSize, `[1,2]`, `[3]`)},
		},
		{
			name:   "ignored elements of one length are equal",
			opts:   diff.Options{Ignore: []string{"/body/items/*"}},
			legacy: res(200, `{"items":[1,2]}`), newpath: res(200, `{"items":[3,4]}`),
		},
		{
			name: "the whole body", opts: diff.Options{Ignore: []string{"/body"}},
			legacy: res(200, `{"a":1}`), newpath: res(200, `<html>`),
		},
		{
			name: "an escaped key", opts: diff.Options{Ignore: []string{"/body/a~1b"}},
			legacy: res(200, `{"a/b":1}`), newpath: res(200, `{"a/b":2}`),
		},
		{
			name: "status", opts: diff.Options{Ignore: []string{"/status"}},
			legacy: res(200, `{}`), newpath: res(503, `{}`),
		},
		{
			name: "a header", opts: diff.Options{Headers: []string{"date", "content-type"}, Ignore: []string{"/headers/date"}},
			legacy:  res(200, `{}`, "Date", "Mon, 01 Jan 2024 00:00:00 GMT", "Content-Type", "application/json"),
			newpath: res(200, `{}`, "Date", "Mon, 01 Jan 2024 00:00:01 GMT", "Content-Type", "text/plain"),
			want:    []diff.Difference{d("/headers/content-type", diff.KindValue, `"application/json"`, `"text/plain"`)},
		},
		{
			name: "a star at the root", opts: diff.Options{Headers: []string{"etag"}, Ignore: []string{"/*"}},
			legacy: res(200, `{"a":1}`, "Etag", "1"), newpath: res(500, `{"a":2}`, "Etag", "2"),
		},
	})
}

func TestCompareHeaders(t *testing.T) {
	opts := diff.Options{Headers: []string{"Content-Type", "cache-control", "x-version"}}
	runCompareCases(t, []compareCase{
		{
			name: "only configured headers", opts: opts,
			legacy:  res(200, `{}`, "Content-Type", "application/json", "Server", "legacy"),
			newpath: res(200, `{}`, "Content-Type", "application/json", "Server", "go"),
		},
		{
			name: "value", opts: opts,
			legacy:  res(200, `{}`, "Content-Type", "application/json"),
			newpath: res(200, `{}`, "Content-Type", "application/json; charset=utf-8"),
			want:    []diff.Difference{d("/headers/content-type", diff.KindValue, `"application/json"`, `"application/json; charset=utf-8"`)},
		},
		{
			name: "missing and extra", opts: opts,
			legacy:  res(200, `{}`, "Cache-Control", "no-store"),
			newpath: res(200, `{}`, "X-Version", "2"),
			want: []diff.Difference{
				d("/headers/cache-control", diff.KindMissing, `"no-store"`, ``),
				d("/headers/x-version", diff.KindExtra, ``, `"2"`),
			},
		},
		{
			name: "field lines are joined with a comma", opts: opts,
			legacy:  res(200, `{}`, "Cache-Control", "no-store", "Cache-Control", "private"),
			newpath: res(200, `{}`, "Cache-Control", "no-store, private"),
		},
		{
			name: "joined field lines that differ", opts: opts,
			legacy:  res(200, `{}`, "Cache-Control", "no-store", "Cache-Control", "private"),
			newpath: res(200, `{}`, "Cache-Control", "private", "Cache-Control", "no-store"),
			want:    []diff.Difference{d("/headers/cache-control", diff.KindValue, `"no-store, private"`, `"private, no-store"`)},
		},
		{
			name: "an empty value is a value", opts: opts,
			legacy:  res(200, `{}`, "X-Version", ""),
			newpath: res(200, `{}`),
			want:    []diff.Difference{d("/headers/x-version", diff.KindMissing, `""`, ``)},
		},
	})
}

func TestCompareBodies(t *testing.T) {
	html := "<html><body>502 Bad Gateway</body></html>"
	runCompareCases(t, []compareCase{
		{name: "both empty", legacy: res(204, ``), newpath: res(204, ``)},
		{
			name:   "empty and JSON compare as bytes",
			legacy: res(200, ``), newpath: res(200, `{"a":1}`),
			want: []diff.Difference{d("/body", diff.KindValue, `""`, `"{\"a\":1}"`)},
		},
		{
			name:   "non-JSON on one side",
			legacy: res(502, html), newpath: res(502, `{"error":"bad gateway"}`),
			want: []diff.Difference{d("/body", diff.KindValue, `"`+html+`"`, `"{\"error\":\"bad gateway\"}"`)},
		},
		{name: "equal non-JSON", legacy: res(200, "plain\n"), newpath: res(200, "plain\n")},
		{
			name:   "whitespace only is not JSON",
			legacy: res(200, " "), newpath: res(200, "  "),
			want: []diff.Difference{d("/body", diff.KindValue, `" "`, `"  "`)},
		},
		{
			name:   "invalid JSON falls back to bytes",
			legacy: res(200, `{"a":1,}`), newpath: res(200, `{"a":1}`),
			want: []diff.Difference{d("/body", diff.KindValue, `"{\"a\":1,}"`, `"{\"a\":1}"`)},
		},
		{
			name:   "trailing garbage is not JSON",
			legacy: res(200, `{"a":1} x`), newpath: res(200, `{"a":1}`),
			want: []diff.Difference{d("/body", diff.KindValue, `"{\"a\":1} x"`, `"{\"a\":1}"`)},
		},
		{
			name:   "binary bodies",
			legacy: res(200, "\xff\x00a"), newpath: res(200, "\xfe"),
			want: []diff.Difference{d("/body", diff.KindValue, `"\ufffd\u0000a"`, `"\ufffd"`)},
		},
	})
}

func TestCompareTruncatesValues(t *testing.T) {
	ascii := strings.Repeat("a", 300)
	euro := strings.Repeat("€", 100) // 3 bytes each
	c := mustNew(t, diff.Options{})
	got, err := c.Compare(res(200, `{"a":"`+ascii+`","e":"`+euro+`","s":"short"}`), res(200, `{"a":"b","e":"x","s":"`+euro[:3*84]+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	want := []diff.Difference{
		d("/body/a", diff.KindValue, `"`+ascii[:252]+"…", `"b"`),
		d("/body/e", diff.KindValue, `"`+euro[:3*84]+"…", `"x"`),
		d("/body/s", diff.KindValue, `"short"`, `"`+euro[:3*84]+`"`),
	}
	if g, w := format(got), format(want); g != w {
		t.Errorf("got\n%s; want\n%s", g, w)
	}
	for _, x := range got {
		for _, v := range []string{x.Legacy, x.Newpath} {
			if len(v) > 256 || !utf8.ValidString(v) {
				t.Errorf("value %q: %d bytes, valid UTF-8 %v; want at most 256, valid", v, len(v), utf8.ValidString(v))
			}
		}
	}
}

func TestCompareTruncatesBytesBodies(t *testing.T) {
	c := mustNew(t, diff.Options{})
	body := strings.Repeat("é", 1000)
	got, err := c.Compare(res(200, body), res(200, "x"))
	if err != nil {
		t.Fatal(err)
	}
	want := []diff.Difference{d("/body", diff.KindValue, `"`+strings.Repeat("é", 126)+"…", `"x"`)}
	if g, w := format(got), format(want); g != w {
		t.Errorf("got\n%s; want\n%s", g, w)
	}
}

func gzipped(t testing.TB, s string) string {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write([]byte(s))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func zlibbed(t testing.TB, s string) string {
	var b bytes.Buffer
	zw := zlib.NewWriter(&b)
	zw.Write([]byte(s))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func deflated(t testing.TB, s string) string {
	var b bytes.Buffer
	zw, _ := flate.NewWriter(&b, flate.BestSpeed)
	zw.Write([]byte(s))
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// fakeBrotli "compresses" by reversing the bytes: the package must call
// Decode for br, and only for what it cannot undo itself.
func fakeBrotli(s string) string {
	b := []byte(s)
	for i, j := 0, len(b)-1; i < j; i, j = i+1, j-1 {
		b[i], b[j] = b[j], b[i]
	}
	return string(b)
}

func decodeFakeBrotli(encoding string, body []byte) ([]byte, error) {
	if encoding != "br" {
		return nil, fmt.Errorf("unknown encoding %q", encoding)
	}
	return []byte(fakeBrotli(string(body))), nil
}

func TestCompareEncodings(t *testing.T) {
	order := `{"id":"o-1","items":[{"sku":"A","qty":2}],"total_cents":1299}`
	other := `{"id":"o-1","items":[{"sku":"A","qty":3}],"total_cents":1299}`
	qty := []diff.Difference{ds("/body/items/*/qty", "/body/items/0/qty", diff.KindValue, `2`, `3`)}
	br := diff.Options{Decode: decodeFakeBrotli}
	runCompareCases(t, []compareCase{
		{name: "gzip vs identity", legacy: res(200, gzipped(t, order), "Content-Encoding", "gzip"), newpath: res(200, order)},
		{name: "x-gzip", legacy: res(200, gzipped(t, order), "Content-Encoding", "x-gzip"), newpath: res(200, order, "Content-Encoding", "identity")},
		{name: "gzip, case-insensitive", legacy: res(200, gzipped(t, order), "Content-Encoding", "GZip"), newpath: res(200, gzipped(t, other), "Content-Encoding", "gzip"), want: qty},
		{name: "deflate (zlib)", legacy: res(200, zlibbed(t, order), "Content-Encoding", "deflate"), newpath: res(200, other), want: qty},
		{name: "deflate (raw)", legacy: res(200, order), newpath: res(200, deflated(t, other), "Content-Encoding", "deflate"), want: qty},
		{name: "br through Decode", opts: br, legacy: res(200, fakeBrotli(order), "Content-Encoding", "br"), newpath: res(200, gzipped(t, other), "Content-Encoding", "gzip"), want: qty},
		{name: "gzip, br: undone from the last", opts: br, legacy: res(200, fakeBrotli(gzipped(t, order)), "Content-Encoding", "gzip, br"), newpath: res(200, other), want: qty},
		{name: "codings over two field lines", opts: br, legacy: res(200, fakeBrotli(gzipped(t, order)), "Content-Encoding", "gzip", "Content-Encoding", "br"), newpath: res(200, order)},
		{name: "empty body with an encoding (HEAD)", legacy: res(200, ``, "Content-Encoding", "gzip"), newpath: res(200, ``)},
		{name: "concatenated gzip members", legacy: res(200, gzipped(t, order[:10])+gzipped(t, order[10:]), "Content-Encoding", "gzip"), newpath: res(200, order)},
		{
			name:   "decoded non-JSON bodies compare decoded",
			legacy: res(200, gzipped(t, "hello"), "Content-Encoding", "gzip"), newpath: res(200, "help"),
			want: []diff.Difference{d("/body", diff.KindValue, `"hello"`, `"help"`)},
		},
		{
			name: "ignored body is not decoded", opts: diff.Options{Ignore: []string{"/body"}},
			legacy: res(200, "not gzip", "Content-Encoding", "gzip"), newpath: res(200, "x", "Content-Encoding", "zstd"),
		},
	})
}

func TestCompareEncodingErrors(t *testing.T) {
	for _, tc := range []struct {
		name            string
		opts            diff.Options
		legacy, newpath diff.Response
		want            string
	}{
		{name: "unknown encoding, no Decode", legacy: res(200, "x", "Content-Encoding", "br"), newpath: res(200, "x"), want: "legacy body: content-encoding br: unsupported"},
		{name: "Decode fails", opts: diff.Options{Decode: decodeFakeBrotli}, legacy: res(200, "{}"), newpath: res(200, "x", "Content-Encoding", "zstd"), want: `newpath body: content-encoding zstd: unknown encoding "zstd"`},
		{name: "corrupt gzip", legacy: res(200, "not gzip at all", "Content-Encoding", "gzip"), newpath: res(200, "{}"), want: "legacy body: content-encoding gzip: gzip: invalid header"},
		{name: "truncated gzip", legacy: res(200, gzipped(t, `{"a":1}`)[:15], "Content-Encoding", "gzip"), newpath: res(200, "{}"), want: "legacy body: content-encoding gzip: unexpected EOF"},
		{name: "corrupt deflate", legacy: res(200, "{}"), newpath: res(200, "\xff\xff\xff", "Content-Encoding", "deflate"), want: "newpath body: content-encoding deflate: flate: corrupt input before offset 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mustNew(t, tc.opts)
			got, err := c.Compare(tc.legacy, tc.newpath)
			if err == nil || err.Error() != tc.want {
				t.Errorf("got %q, %v; want error %q", format(got), err, tc.want)
			}
		})
	}
}

func TestCompareDecodedBodyTooLarge(t *testing.T) {
	var b bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&b, gzip.BestCompression)
	zeros := make([]byte, 1<<20)
	for i := 0; i < 17; i++ {
		zw.Write(zeros)
	}
	zw.Close()
	c := mustNew(t, diff.Options{})
	_, err := c.Compare(res(200, b.String(), "Content-Encoding", "gzip"), res(200, "{}"))
	if !errors.Is(err, diff.ErrBodyTooLarge) {
		t.Errorf("got %v; want ErrBodyTooLarge past the default 16 MiB", err)
	}
}

// MaxDecodedBytes bounds every coding of a body, "gzip, gzip" included:
// a bomb is refused, never inflated past the cap.
func TestCompareMaxDecodedBytes(t *testing.T) {
	zip := func(b []byte) []byte {
		var out bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&out, gzip.BestCompression)
		zw.Write(b)
		zw.Close()
		return out.Bytes()
	}
	const max = 64 << 10
	fits := []byte(`{"pad":"` + strings.Repeat("a", max-20) + `"}`)
	bomb := make([]byte, 4<<20)
	tests := []struct {
		name     string
		body     []byte
		encoding string
		tooLarge bool
	}{
		{"within the cap", zip(fits), "gzip", false},
		{"gzip bomb", zip(bomb), "gzip", true},
		{"gzip, gzip bomb", zip(zip(bomb)), "gzip, gzip", true},
		{"gzip, gzip within the cap", zip(zip(fits)), "gzip, gzip", false},
	}
	c := mustNew(t, diff.Options{MaxDecodedBytes: max})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Compare(res(200, string(tt.body), "Content-Encoding", tt.encoding), res(200, "{}"))
			if got := errors.Is(err, diff.ErrBodyTooLarge); got != tt.tooLarge {
				t.Errorf("err = %v; too large %t, want %t", err, got, tt.tooLarge)
			}
		})
	}
}

func TestCompareMaxDifferences(t *testing.T) {
	// 30 differing fields, serialized in another order on each side: the
	// cap must keep the first in report order whichever side is which.
	var l, n []string
	for i := 0; i < 30; i++ {
		l = append(l, fmt.Sprintf(`"f%02d":%d`, i, i))
		n = append([]string{fmt.Sprintf(`"f%02d":%d`, i, i+100)}, n...)
	}
	legacy, newpath := res(500, "{"+strings.Join(l, ",")+"}"), res(200, "{"+strings.Join(n, ",")+"}")
	all, err := mustNew(t, diff.Options{}).Compare(legacy, newpath)
	if err != nil || len(all) != 31 {
		t.Fatalf("got %d differences, %v; want 31", len(all), err)
	}
	for _, max := range []int{1, 5, 30, 31, 32} {
		c := mustNew(t, diff.Options{MaxDifferences: max})
		got, err := c.Compare(legacy, newpath)
		if err != nil {
			t.Fatal(err)
		}
		want := all[:min(max, len(all))]
		if g, w := format(got), format(want); g != w {
			t.Errorf("MaxDifferences %d: got\n%s; want\n%s", max, g, w)
		}
	}
}

func TestCompareDefaultMaxDifferences(t *testing.T) {
	var b strings.Builder
	b.WriteString("[")
	for i := 0; i < 5000; i++ {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"id":%d}`, i)
	}
	b.WriteString("]")
	got, err := mustNew(t, diff.Options{}).Compare(res(200, b.String()), res(200, strings.ReplaceAll(b.String(), "id", "ID")))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1000 {
		t.Fatalf("got %d differences; want 1000", len(got))
	}
	if g, w := got[999].At, "/body/499/id"; g != w {
		t.Errorf("last reported At: got %q; want %q", g, w)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts diff.Options
		want string
	}{
		{"relative pattern", diff.Options{Ignore: []string{"body/a"}}, `ignore pattern "body/a": does not start with /`},
		{"empty segment", diff.Options{Ignore: []string{"/body//a"}}, `ignore pattern "/body//a": segment 2 is empty`},
		{"trailing slash", diff.Options{Unordered: []string{"/body/items/"}}, `unordered pattern "/body/items/": segment 3 is empty`},
		{"root only", diff.Options{Ignore: []string{"/"}}, `ignore pattern "/": segment 1 is empty`},
		{"bad escape", diff.Options{Ignore: []string{"/body/a~2"}}, `ignore pattern "/body/a~2": segment "a~2": ~ must be followed by 0 or 1 (RFC 6901)`},
		{"outside the response tree", diff.Options{Ignore: []string{"/updated_at"}}, `ignore pattern "/updated_at": does not start with /status, /headers, /body or /*`},
		{"empty header", diff.Options{Headers: []string{" "}}, `empty header name`},
		{"negative cap", diff.Options{MaxDifferences: -1}, `max differences -1 is negative`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := diff.New(tc.opts)
			if err == nil || err.Error() != tc.want {
				t.Errorf("got %v; want %q", err, tc.want)
			}
		})
	}
}

func TestCompareConcurrentUse(t *testing.T) {
	c := mustNew(t, diff.Options{Headers: []string{"content-type"}, Unordered: []string{"/body/items"}, Ignore: []string{"/body/at"}})
	legacy := res(200, gzipped(t, `{"id":1,"at":1,"items":[1,2,3]}`), "Content-Encoding", "gzip")
	newpath := res(200, `{"id":2,"at":2,"items":[3,2,1]}`)
	want := format([]diff.Difference{d("/body/id", diff.KindValue, `1`, `2`)})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				got, err := c.Compare(legacy, newpath)
				if err != nil {
					errs <- err
					return
				}
				if format(got) != want {
					errs <- errors.New(format(got))
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("got %v; want %q", err, want)
	}
}

func TestCompareDeepNesting(t *testing.T) {
	const depth = 10000 // the deepest encoding/json accepts
	deep := func(leaf string) string { return strings.Repeat("[", depth) + leaf + strings.Repeat("]", depth) }
	c := mustNew(t, diff.Options{})
	got, err := c.Compare(res(200, deep("1")), res(200, deep("2")))
	if err != nil {
		t.Fatal(err)
	}
	at := "/body" + strings.Repeat("/0", depth)
	if len(got) != 1 || got[0].At != at || got[0].Legacy != "1" {
		t.Errorf("got %d differences; want one at /body/0/0/…/0", len(got))
	}
	// One level deeper is not JSON to encoding/json, nor here: bytes.
	got, err = c.Compare(res(200, "["+deep("1")+"]"), res(200, "["+deep("2")+"]"))
	if err != nil || len(got) != 1 || got[0].At != "/body" {
		t.Errorf("got %v, %v; want one difference at /body", len(got), err)
	}
}

func TestCompareWorkIsBounded(t *testing.T) {
	// Every level of this nest of arrays differs in both its elements, so
	// telling an order difference from others hashes all that is below it,
	// at every level: quadratic in the depth. It must end in an error
	// rather than take seconds.
	const depth = 10000
	nest := func(leaf string) string {
		return strings.Repeat("[", depth) + strings.Repeat(leaf+"],", depth-1) + leaf + "]"
	}
	c := mustNew(t, diff.Options{})
	_, err := c.Compare(res(200, nest("1")), res(200, nest("2")))
	if err == nil || err.Error() != "responses too complex to compare" {
		t.Errorf("got %v; want the work budget error", err)
	}
	// A shallower nest is compared.
	shallow := func(leaf string) string {
		return strings.Repeat("[", 100) + strings.Repeat(leaf+"],", 99) + leaf + "]"
	}
	got, err := c.Compare(res(200, shallow("1")), res(200, shallow("2")))
	if err != nil || len(got) != 100 {
		t.Errorf("got %d differences, %v; want 100", len(got), err)
	}
}

func TestCompareDoesNotKeepTheBodies(t *testing.T) {
	c := mustNew(t, diff.Options{})
	lb, nb := []byte(`{"a":"x"}`), []byte(`{"a":"y"}`)
	got, err := c.Compare(diff.Response{Status: 200, Body: lb}, diff.Response{Status: 200, Body: nb})
	if err != nil {
		t.Fatal(err)
	}
	copy(lb, `{"a":"z"}`) // the proxy reuses its buffers once Compare returns
	if g, w := got[0].Legacy, `"x"`; g != w {
		t.Errorf("Legacy after the body was reused: got %q; want %q", g, w)
	}
}

func TestHeaderKeys(t *testing.T) {
	c, err := diff.New(diff.Options{Headers: []string{"x-version", "content-encoding", "content-type"}})
	if err != nil {
		t.Fatal(err)
	}
	got := c.HeaderKeys()
	want := []string{"Content-Encoding", "Content-Type", "X-Version"}
	if !slices.Equal(got, want) {
		t.Errorf("HeaderKeys() = %q; want %q: Content-Encoding once, then the compared ones in report order", got, want)
	}
}
