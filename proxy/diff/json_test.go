package diff

import (
	"bytes"
	"encoding/json"
	"math/big"
	"strings"
	"testing"
)

func TestParseAgreesWithJSONValid(t *testing.T) {
	for _, in := range []string{
		``, ` `, `null`, `true`, `false`, `nul`, `truex`, `0`, `-0`, `01`, `-`, `1.`, `.5`, `1.5e`, `1e+`, `1E-7`,
		`-01`, `+1`, `1e05`, `"`, `""`, `"\u12"`, `"\u12g4"`, `"\x"`, `"a` + "\t" + `"`, `"\/"`, `"\ud800"`,
		"\"\xff\"", "\ufeff{}", `{}`, `{ }`, `[]`, `[ ]`, `[1,]`, `[,1]`, `[1 2]`, `{"a"}`, `{"a":}`, `{"a":1,}`,
		`{a:1}`, `{"a":1 "b":2}`, `{"a":1}}`, `[[]`, `[]]`, `{"a":[{"b":null}]}`, " \r\n\t[1] \n", `[1]x`, `1 2`,
		`"\b\f\n\r\t\\\""`, `{"":0}`, `[-1.5e+3, 0.0, 1e-0]`, "[\"\x7f\"]", "[\"\x1f\"]",
		strings.Repeat("[", maxDepth) + strings.Repeat("]", maxDepth),
		strings.Repeat("[", maxDepth+1) + strings.Repeat("]", maxDepth+1),
		strings.Repeat(`{"a":`, maxDepth) + "1" + strings.Repeat("}", maxDepth),
		strings.Repeat(`{"a":`, maxDepth+1) + "1" + strings.Repeat("}", maxDepth+1),
	} {
		var tr tree
		got, want := tr.parse([]byte(in)), json.Valid([]byte(in))
		if got != want {
			name := in
			if len(name) > 40 {
				name = name[:40] + "…"
			}
			t.Errorf("parse(%q) = %v; want %v, as json.Valid", name, got, want)
		}
	}
}

func TestParseTree(t *testing.T) {
	var tr tree
	if !tr.parse([]byte(`{"a":[1,"x\ny",{"1":null}],"b":true,"c\u00e9":false}`)) {
		t.Fatal("parse failed")
	}
	var b []byte
	b = appendCompact(b, &tr, 0)
	if got, want := string(b), `{"a":[1,"x\ny",{"1":null}],"b":true,"cé":false}`; got != want {
		t.Errorf("got %q; want %q", got, want)
	}
	if got := tr.nodes[0].flags & flagDataKeys; got != 0 {
		t.Errorf("root object is data-like; want not")
	}
	inner := tr.elements(tr.members(0)[1])[2]
	if got := tr.nodes[inner].flags & flagDataKeys; got == 0 {
		t.Errorf(`{"1":null} is not data-like; want data-like`)
	}
}

func TestNumbersEqualAgreesWithBigRat(t *testing.T) {
	nums := []string{
		"0", "-0", "0.0", "0e5", "1", "1.0", "1e0", "10e-1", "0.1e1", "100", "1e2", "1E+2", "-1", "-1.0",
		"0.5", "5e-1", "50e-2", "0.05e1", "123.456", "123456e-3", "1.23456e2", "9007199254740993",
		"9007199254740992", "9007199254740993.0", "1e-7", "0.0000001", "12e300", "1.2e301", "120e299",
	}
	for _, a := range nums {
		for _, b := range nums {
			ra, _ := new(big.Rat).SetString(a)
			rb, _ := new(big.Rat).SetString(b)
			want := ra.Cmp(rb) == 0
			if got := numbersEqual([]byte(a), []byte(b)); got != want {
				t.Errorf("numbersEqual(%s, %s) = %v; want %v", a, b, got, want)
			}
			if want && hashNumber([]byte(a)) != hashNumber([]byte(b)) {
				t.Errorf("hashNumber(%s) != hashNumber(%s); want equal hashes for equal numbers", a, b)
			}
		}
	}
}

func TestComparePaths(t *testing.T) {
	ordered := []string{
		"/body",
		"/body/a",
		"/body/a/b",
		"/body/a-b",
		"/body/items",
		"/body/items/2",
		"/body/items/2/x",
		"/body/items/010",
		"/body/items/10",
		"/body/items/x",
		"/body/m~0",
		"/headers/content-type",
		"/status",
	}
	for i, a := range ordered {
		for j, b := range ordered {
			want := 0
			switch {
			case i < j:
				want = -1
			case i > j:
				want = 1
			}
			if got := comparePaths(a, b); got != want {
				t.Errorf("comparePaths(%q, %q) = %d; want %d", a, b, got, want)
			}
		}
	}
}

func TestCompareKeysIsEscapedOrder(t *testing.T) {
	keys := []string{"", "/", "0", "00", "1", "2", "10", "010", "0A", "1a", "a", "a/", "a0", "a~", "a}", "~", "~1", "é"}
	for _, a := range keys {
		for _, b := range keys {
			ea := string(appendEscapedKey(nil, []byte(a)))
			eb := string(appendEscapedKey(nil, []byte(b)))
			if got, want := compareKeys([]byte(a), []byte(b)), compareSegments(ea, eb); got != want {
				t.Errorf("compareKeys(%q, %q) = %d; want %d as compareSegments(%q, %q)", a, b, got, want, ea, eb)
			}
		}
	}
}

func TestCompareKeysIsATotalOrder(t *testing.T) {
	keys := []string{"", "/", "0", "00", "1", "2", "10", "010", "0A", "1a", "9", "a", "a/", "a0", "a~", "~", "é"}
	for _, a := range keys {
		for _, b := range keys {
			ab := compareKeys([]byte(a), []byte(b))
			if ba := compareKeys([]byte(b), []byte(a)); ab != -ba || (ab == 0) != (a == b) {
				t.Errorf("compareKeys(%q, %q) = %d, reversed %d; want opposite signs, 0 only for equal keys", a, b, ab, ba)
			}
			for _, c := range keys {
				if ab <= 0 && compareKeys([]byte(b), []byte(c)) <= 0 && compareKeys([]byte(a), []byte(c)) > 0 {
					t.Errorf("%q <= %q <= %q but %q > %q; want a transitive order", a, b, c, a, c)
				}
			}
		}
	}
}

func TestCut(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
	}{
		{"short", "abc", "abc"},
		{"exactly 256", strings.Repeat("a", 256), strings.Repeat("a", 256)},
		{"257", strings.Repeat("a", 257), strings.Repeat("a", 253) + "…"},
		{"on a rune boundary", strings.Repeat("a", 252) + "€€", strings.Repeat("a", 252) + "…"},
		{"inside a rune", strings.Repeat("a", 251) + "€€", strings.Repeat("a", 251) + "…"},
		{"four-byte runes", strings.Repeat("😀", 70), strings.Repeat("😀", 63) + "…"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := cut([]byte(tc.in)); got != tc.want {
				t.Errorf("got %q (%d bytes); want %q", got, len(got), tc.want)
			}
		})
	}
}

// The parser against the encoding/json alternatives for turning a body into
// something comparable: Decoder.Token with UseNumber, and Unmarshal into any.

func BenchmarkParseOrder2KB(b *testing.B) {
	src := []byte(benchOrder)
	var tr tree
	b.SetBytes(int64(len(src)))
	b.ReportAllocs()
	for b.Loop() {
		if !tr.parse(src) {
			b.Fatal("not JSON")
		}
	}
}

func BenchmarkDecoderTokenOrder2KB(b *testing.B) {
	src := []byte(benchOrder)
	b.SetBytes(int64(len(src)))
	b.ReportAllocs()
	for b.Loop() {
		dec := json.NewDecoder(bytes.NewReader(src))
		dec.UseNumber()
		for {
			if _, err := dec.Token(); err != nil {
				break
			}
		}
	}
}

func BenchmarkUnmarshalOrder2KB(b *testing.B) {
	src := []byte(benchOrder)
	b.SetBytes(int64(len(src)))
	b.ReportAllocs()
	for b.Loop() {
		var v any
		if err := json.Unmarshal(src, &v); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkValidOrder2KB(b *testing.B) {
	src := []byte(benchOrder)
	b.SetBytes(int64(len(src)))
	b.ReportAllocs()
	for b.Loop() {
		if !json.Valid(src) {
			b.Fatal("not JSON")
		}
	}
}
