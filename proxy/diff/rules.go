package diff

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/big"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// A Rule makes two values at a path equal when they differ only in a way
// the API allows: numbers within a tolerance, two spellings of one
// instant, strings that differ in case or surrounding space, or two values
// that both fit a mask. Rules apply to values both sides have; a field
// only one side has is still missing or extra.
//
// A rule compares numbers and strings, and only ever makes more values
// equal: values it does not call equal (objects, arrays, booleans, null,
// two strings a time rule cannot read, two identical ids that do not fit
// a mask) are compared as without it.
type Rule struct {
	// Path is a schema-path pattern under /body, as Ignore's are.
	Path string
	// Absolute and Relative make two numbers equal when they differ by at
	// most Absolute, or by at most Relative (a fraction) of the larger
	// magnitude. A number in a string ("12.50") counts as a number.
	Absolute, Relative float64
	// Time compares values as instants: RFC 3339 strings with any offset
	// and precision, or Unix times as numbers (seconds, or milliseconds
	// from 10^11 up: later than the year 5138 in seconds). Within is how
	// far apart two instants may be.
	Time   bool
	Within time.Duration
	// FoldCase compares strings case-insensitively (Unicode case folding);
	// TrimSpace without leading and trailing white space.
	FoldCase, TrimSpace bool
	// Mask, when set, makes two values equal when both match it: strings
	// by their content, numbers by their JSON text.
	Mask *regexp.Regexp
}

// RuleError is a compare rule ParseRules could not read.
type RuleError struct {
	// List is "tolerance", "time", "normalize" or "mask"; Path its key.
	List, Path string
	Err        error
}

func (e *RuleError) Error() string {
	return fmt.Sprintf("%s[%q]: %v", e.List, e.Path, e.Err)
}

func (e *RuleError) Unwrap() error { return e.Err }

// ParseRules reads the rules of a route's compare section, keyed by path:
//
//	tolerance: {"/body/total": "0.005", "/body/tax": "1%"}  absolute, or relative with %
//	time:      {"/body/created_at": "", "/body/paid_at": "2s"}  instants, exactly or within
//	normalize: {"/body/email": ["case", "trim"]}
//	mask:      {"/body/id": "^ord_[0-9]+$"}
//
// One path has at most one rule. The rules come back sorted by path;
// each error is a *RuleError, all of them joined.
func ParseRules(tolerance, times map[string]string, normalize map[string][]string, mask map[string]string) ([]Rule, error) {
	var rules []Rule
	var errs []error
	lists := map[string]string{} // path → the list whose rule it has
	add := func(list, path string, parse func(r *Rule) error) {
		fail := func(err error) { errs = append(errs, &RuleError{List: list, Path: path, Err: err}) }
		if !strings.HasPrefix(path, "/body/") {
			fail(errors.New("a rule's path starts with /body/"))
			return
		}
		if _, err := splitPattern(path); err != nil {
			fail(err)
			return
		}
		if other, ok := lists[path]; ok {
			fail(fmt.Errorf("the path has a %s rule already: one rule a path", other))
			return
		}
		r := Rule{Path: path}
		if err := parse(&r); err != nil {
			fail(err)
			return
		}
		lists[path] = list
		rules = append(rules, r)
	}
	for _, path := range slices.Sorted(maps.Keys(tolerance)) {
		add("tolerance", path, func(r *Rule) error { return parseTolerance(r, tolerance[path]) })
	}
	for _, path := range slices.Sorted(maps.Keys(times)) {
		add("time", path, func(r *Rule) error {
			r.Time = true
			if v := strings.TrimSpace(times[path]); v != "" {
				d, err := time.ParseDuration(v)
				if err != nil || d < 0 {
					return fmt.Errorf("%q is not a duration such as 500ms or 2s (empty: the same instant)", times[path])
				}
				r.Within = d
			}
			return nil
		})
	}
	for _, path := range slices.Sorted(maps.Keys(normalize)) {
		add("normalize", path, func(r *Rule) error {
			if len(normalize[path]) == 0 {
				return errors.New(`names what to normalise: "case", "trim" or both`)
			}
			for _, n := range normalize[path] {
				switch n {
				case "case":
					r.FoldCase = true
				case "trim":
					r.TrimSpace = true
				default:
					return fmt.Errorf(`%q is not "case" or "trim"`, n)
				}
			}
			return nil
		})
	}
	for _, path := range slices.Sorted(maps.Keys(mask)) {
		add("mask", path, func(r *Rule) error {
			re, err := regexp.Compile(mask[path])
			if err != nil {
				return fmt.Errorf("%q is not a regular expression: %v", mask[path], err)
			}
			r.Mask = re
			return nil
		})
	}
	slices.SortFunc(rules, func(a, b Rule) int { return strings.Compare(a.Path, b.Path) })
	return rules, errors.Join(errs...)
}

// parseTolerance reads "0.005" (absolute) or "1%" (relative).
func parseTolerance(r *Rule, v string) error {
	v = strings.TrimSpace(v)
	pct, relative := strings.CutSuffix(v, "%")
	f, err := strconv.ParseFloat(strings.TrimSpace(pct), 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
		return fmt.Errorf("%q is not a tolerance such as 0.005 (absolute) or 1%% (relative)", v)
	}
	if relative {
		r.Relative = f / 100
	} else {
		r.Absolute = f
	}
	return nil
}

// equal reports whether r makes legacy node a and newpath node b equal.
// When it does not (or cannot read them), walk compares them as without
// the rule, so two identical values are equal whatever the rule says.
func (r *Rule) equal(ta *tree, a uint32, tb *tree, b uint32) bool {
	ka, kb := ta.nodes[a].kind, tb.nodes[b].kind
	if !ruled(ka) || !ruled(kb) {
		return false
	}
	switch {
	case r.Mask != nil:
		return r.Mask.Match(scalarText(ta, a)) && r.Mask.Match(scalarText(tb, b))
	case r.Time:
		ia, oka := instant(ta, a)
		ib, okb := instant(tb, b)
		d := ia.Sub(ib)
		return oka && okb && d <= r.Within && -d <= r.Within
	case r.FoldCase || r.TrimSpace:
		if ka != kindString || kb != kindString {
			return false
		}
		sa, sb := ta.str(a), tb.str(b)
		if r.TrimSpace {
			sa, sb = bytes.TrimSpace(sa), bytes.TrimSpace(sb)
		}
		if r.FoldCase {
			return bytes.EqualFold(sa, sb)
		}
		return bytes.Equal(sa, sb)
	default:
		na, oka := numberText(ta, a)
		nb, okb := numberText(tb, b)
		return oka && okb && withinTolerance(na, nb, r.Absolute, r.Relative)
	}
}

// hash hashes node n as r's equality sees it, so that walk's multiset
// pairing finds what r calls equal: a string by its normalised form, a
// value by whether it fits a mask, and any number or string alike under a
// tolerance or a time rule, whose equality is no equivalence (values
// within 0.01 of 1.00 are not all within 0.01 of each other). ok is false
// where the value hashes as without the rule.
func (r *Rule) hash(t *tree, n uint32) (h uint64, ok bool) {
	const ruledHash = 0x72756c65
	switch {
	case r.Mask != nil:
		if r.Mask.Match(scalarText(t, n)) {
			return ruledHash, true
		}
		return 0, false // only itself is equal to it
	case r.FoldCase || r.TrimSpace:
		if t.nodes[n].kind != kindString {
			return 0, false
		}
		s := t.str(n)
		if r.TrimSpace {
			s = bytes.TrimSpace(s)
		}
		h = fnvOffset ^ uint64(kindString)
		for _, c := range string(s) {
			if r.FoldCase {
				c = foldCanonical(c)
			}
			h = fnvBytes(h, utf8.AppendRune(nil, c))
		}
		return mix(h), true
	}
	return ruledHash, true
}

// foldCanonical is the smallest rune of c's case-folding orbit: runes
// bytes.EqualFold calls equal map to the same one.
func foldCanonical(c rune) rune {
	least := c
	for f := unicode.SimpleFold(c); f != c; f = unicode.SimpleFold(f) {
		least = min(least, f)
	}
	return least
}

// ruled reports whether rules judge values of kind k.
func ruled(k kind) bool { return k == kindNumber || k == kindString }

// scalarText is a string's content or a number's JSON text.
func scalarText(t *tree, n uint32) []byte {
	if t.nodes[n].kind == kindString {
		return t.str(n)
	}
	return t.text(n)
}

// numberText is a number's JSON text, or a string's content when it is a
// JSON number ("12.50").
func numberText(t *tree, n uint32) ([]byte, bool) {
	switch t.nodes[n].kind {
	case kindNumber:
		return t.text(n), true
	case kindString:
		s := t.str(n)
		return s, isJSONNumber(s)
	}
	return nil, false
}

// isJSONNumber reports whether s is a number as RFC 8259 writes one: no
// NaN, no Infinity, no hex, no leading "+".
func isJSONNumber(s []byte) bool {
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	digits := func() int {
		start := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		return i - start
	}
	switch n := digits(); {
	case n == 0:
		return false
	case n > 1 && s[i-n] == '0':
		return false // leading zero
	}
	if i < len(s) && s[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(s)
}

// maxExactFloat is 2^53: below it float64 holds every integer, so a
// difference there is what it seems.
const maxExactFloat = 1 << 53

// withinTolerance compares two valid JSON numbers. Numbers float64 holds
// exactly enough (below 2^53, at most 15 significant digits) it subtracts
// as floats; others it subtracts in 256 bits (big.Float), and numbers
// beyond float64's range (1e400) are equal only when they are the same
// number.
func withinTolerance(a, b []byte, abs, rel float64) bool {
	if numbersEqual(a, b) {
		return true
	}
	fa, erra := strconv.ParseFloat(string(a), 64)
	fb, errb := strconv.ParseFloat(string(b), 64)
	if erra != nil || errb != nil {
		return false // out of float64's range: only the same number is equal
	}
	if math.Abs(fa) <= maxExactFloat && math.Abs(fb) <= maxExactFloat && significantDigits(a) <= 15 && significantDigits(b) <= 15 {
		d := math.Abs(fa - fb)
		return d <= abs || d <= rel*math.Max(math.Abs(fa), math.Abs(fb))
	}
	const prec = 256
	ba, _, err1 := big.ParseFloat(string(a), 10, prec, big.ToNearestEven)
	bb, _, err2 := big.ParseFloat(string(b), 10, prec, big.ToNearestEven)
	if err1 != nil || err2 != nil {
		return false
	}
	d := new(big.Float).SetPrec(prec).Sub(ba, bb)
	d.Abs(d)
	if d.Cmp(big.NewFloat(abs)) <= 0 {
		return true
	}
	larger := new(big.Float).Abs(ba)
	if lb := new(big.Float).Abs(bb); lb.Cmp(larger) > 0 {
		larger = lb
	}
	return d.Cmp(larger.Mul(larger, big.NewFloat(rel))) <= 0
}

// significantDigits counts the digits of a JSON number's mantissa from its
// first non-zero one: float64 holds 15 of them exactly.
func significantDigits(num []byte) int {
	n, started := 0, false
	for _, c := range num {
		switch {
		case c == 'e' || c == 'E':
			return n
		case c >= '1' && c <= '9', c == '0' && started:
			started = true
			n++
		}
	}
	return n
}

// instant reads node n as a time: an RFC 3339 string (a lower-case t or
// z, or a space between date and time, as RFC 3339 allows), or Unix
// seconds (milliseconds from 10^11 up) as a number or a numeric string,
// read exactly: a float64 of seconds since 1970 is only good to some
// hundreds of nanoseconds.
func instant(t *tree, n uint32) (time.Time, bool) {
	if t.nodes[n].kind == kindString {
		s := t.str(n)
		if !isJSONNumber(s) {
			if !utf8.Valid(s) || len(s) < len("2006-01-02T15:04:05Z") {
				return time.Time{}, false
			}
			b := []byte(string(s))
			if b[10] == 't' || b[10] == ' ' {
				b[10] = 'T'
			}
			if last := len(b) - 1; b[last] == 'z' {
				b[last] = 'Z'
			}
			at, err := time.Parse(time.RFC3339Nano, string(b))
			return at, err == nil
		}
	}
	text, ok := numberText(t, n)
	if !ok {
		return time.Time{}, false
	}
	return unixInstant(string(text))
}

// unixInstant reads a JSON number as Unix seconds, or milliseconds when
// its magnitude is 10^11 or more (later than the year 5138 in seconds),
// from its digits: its whole part and up to nine digits of fraction.
func unixInstant(text string) (time.Time, bool) {
	if strings.ContainsAny(text, "eE") {
		// An exponent: rare for a time; float64 is as good as it gets.
		f, err := strconv.ParseFloat(text, 64)
		if err != nil || math.Abs(f) >= 1e16 {
			return time.Time{}, false
		}
		text = strconv.FormatFloat(f, 'f', -1, 64)
	}
	neg := strings.HasPrefix(text, "-")
	whole, frac, _ := strings.Cut(strings.TrimPrefix(text, "-"), ".")
	if len(whole) > 16 { // past the year 300000 even in ms
		return time.Time{}, false
	}
	units, err := strconv.ParseInt(whole, 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	// The fraction's first nine digits: nanoseconds of a second, or
	// picoseconds of a millisecond.
	fracDigits, _ := strconv.ParseInt((frac + "000000000")[:9], 10, 64)
	sec, nsec := units, fracDigits
	if units >= 1e11 {
		sec, nsec = units/1000, (units%1000)*int64(time.Millisecond)+fracDigits/1000
	}
	if neg {
		sec, nsec = -sec, -nsec
	}
	return time.Unix(sec, nsec).UTC(), true
}
