// Package diff compares two HTTP answers to the same request, the legacy
// backend's and newpath's, field by field (SPEC §6).
//
// An answer is seen as a tree: /status, /headers/<name> for the configured
// header names, and /body, which is the parsed JSON document after
// Content-Encoding is undone, or the body bytes as one leaf when either side
// is not JSON. Each difference is reported at its concrete path (At, e.g.
// /body/items/3/price_cents) and at its schema path (Path, e.g.
// /body/items/*/price_cents), which has a bounded number of values and so
// can label metrics.
//
// The package is pure: it does no I/O and keeps no state between calls
// beyond pooled buffers, so one Comparer serves a route's every request.
package diff

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
)

// Response is one upstream answer as the proxy captured it. Body is the raw
// body bytes as received (possibly Content-Encoding'd).
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Options configure a Comparer for one route.
type Options struct {
	// Headers are the lower-case response header names compared (/headers/<name>);
	// other headers are not compared.
	Headers []string
	// Ignore are schema-path patterns never compared (nor reported): "*" matches
	// exactly one segment, and a pattern covers its whole subtree.
	// e.g. "/body/updated_at", "/body/items/*/updated_at", "/headers/date".
	Ignore []string
	// Unordered are schema-path patterns of arrays compared as multisets.
	Unordered []string
	// Decode undoes a Content-Encoding the package does not know (the proxy
	// injects brotli, "br"). gzip and deflate are handled by the package
	// itself. nil: unknown encodings are an error. It must not decode past
	// MaxDecodedBytes (one byte more says "too large").
	Decode func(encoding string, body []byte) ([]byte, error)
	// MaxDecodedBytes bounds what a body may expand to while its
	// Content-Encoding is undone, each coding of it (0: 16 MiB): a small
	// compressed body can decode to gigabytes. Larger is ErrBodyTooLarge.
	MaxDecodedBytes int64
	// MaxDifferences bounds the differences one Compare reports (0: 1000), so
	// a pathological response cannot make the proxy do unbounded work.
	MaxDifferences int
	// Rules make values equal that differ only as the API allows
	// (ParseRules reads them from a route's compare section). Where two
	// rules' paths match one value, the most specific applies: the one
	// with the fewest "*" and "{key}" segments, then the first listed.
	Rules []Rule
}

// defaultMaxDifferences is MaxDifferences when Options leaves it zero.
const defaultMaxDifferences = 1000

// Kind is the kind of one difference.
type Kind string

// The kinds of difference (SPEC §6).
const (
	KindValue   Kind = "value"   // same type, different value
	KindType    Kind = "type"    // different JSON types (e.g. string vs number, object vs null)
	KindMissing Kind = "missing" // only legacy has it
	KindExtra   Kind = "extra"   // only newpath has it
	KindSize    Kind = "size"    // arrays of different length (reported once, at the array; not descended)
	KindOrder   Kind = "order"   // an ordered array holding the same elements in another order (reported once at the array)
)

// Difference is one differing field.
type Difference struct {
	// Path is the schema path: array indexes are "*", data-like object keys are "{key}".
	// e.g. /body/items/*/price_cents, /status, /headers/content-type, /body
	Path string
	// At is the concrete JSON-pointer-like path of this occurrence, e.g. /body/items/3/price_cents
	// (keys escaped per RFC 6901: ~0 and ~1).
	At   string
	Kind Kind
	// Legacy and Newpath are the two values as compact JSON text (strings quoted),
	// "" when that side has no value; each cut to at most 256 bytes (cut on a
	// UTF-8 boundary, marked with a trailing "…" that counts within the 256).
	Legacy, Newpath string
}

// Comparer compares responses of one route. Build once per config; safe for concurrent use.
type Comparer struct {
	patterns   []patternNode // ignore and unordered patterns and rules' paths as one trie; node 0 is the root
	rules      []Rule
	ruleWild   []int         // each rule's "*" and "{key}" segments
	headers    []headerField // sorted by name, the order their differences are reported in
	decode     func(encoding string, body []byte) ([]byte, error)
	max        int
	maxDecoded int64

	// The root segments, as the walker's path stack holds them.
	segBody, segHeaders, segStatus []byte

	states sync.Pool // *compareState: parse trees and buffers, reused across calls
	gzip   sync.Pool // *gzip.Reader
	zlib   sync.Pool // zlib reader (io.ReadCloser that is a zlib.Resetter)
	flate  sync.Pool // raw deflate reader (io.ReadCloser that is a flate.Resetter)
}

// headerField is one compared header.
type headerField struct {
	name      []byte // lower case: the path segment
	canonical string // the http.Header key
}

// New compiles opts; an invalid pattern (not starting with "/", empty
// segment) is a *PatternError naming it.
// A pattern must also start with a segment of the response tree (status,
// headers, body or *), so that a misspelt one is caught at load rather than
// silently matching nothing.
func New(opts Options) (*Comparer, error) {
	if opts.MaxDifferences < 0 {
		return nil, fmt.Errorf("max differences %d is negative", opts.MaxDifferences)
	}
	c := &Comparer{
		decode:     opts.Decode,
		maxDecoded: opts.MaxDecodedBytes,
		max:        opts.MaxDifferences,
		segBody:    []byte("body"),
		segHeaders: []byte("headers"),
		segStatus:  []byte("status"),
	}
	if c.max == 0 {
		c.max = defaultMaxDifferences
	}
	if c.maxDecoded <= 0 {
		c.maxDecoded = defaultMaxDecodedBytes
	}
	var err error
	c.rules = slices.Clone(opts.Rules)
	for _, r := range c.rules {
		c.ruleWild = append(c.ruleWild, strings.Count(r.Path, "/*")+strings.Count(r.Path, "/"+keySegment))
	}
	if c.patterns, err = compilePatterns(opts.Ignore, opts.Unordered, c.rules); err != nil {
		return nil, err
	}
	seen := make(map[string]bool, len(opts.Headers))
	for _, h := range opts.Headers {
		name := strings.ToLower(strings.TrimSpace(h))
		if name == "" {
			return nil, errors.New("empty header name")
		}
		if seen[name] {
			continue
		}
		seen[name] = true
		c.headers = append(c.headers, headerField{name: []byte(name), canonical: http.CanonicalHeaderKey(name)})
	}
	// Report order is walk order (see Compare), so headers are walked in the
	// order their paths sort in.
	slices.SortFunc(c.headers, func(a, b headerField) int { return compareKeys(a.name, b.name) })
	return c, nil
}

// moreSpecific reports whether rule a (1 + its index) is to apply before
// rule b where both paths match.
func (c *Comparer) moreSpecific(a, b int32) bool {
	if wa, wb := c.ruleWild[a-1], c.ruleWild[b-1]; wa != wb {
		return wa < wb
	}
	return a < b
}

// HeaderKeys returns the canonical names of the response headers Compare
// reads: Content-Encoding and the compared ones. A caller capturing
// answers for comparison needs to keep only these.
func (c *Comparer) HeaderKeys() []string {
	keys := []string{"Content-Encoding"}
	for _, h := range c.headers {
		if h.canonical != "Content-Encoding" {
			keys = append(keys, h.canonical)
		}
	}
	return keys
}

// Compare returns the differences between legacy's and newpath's answers, ordered by At.
// An error means the responses could not be compared (e.g. a body whose Content-Encoding
// cannot be undone); the proxy counts that as a comparison error. Bodies
// that decode to more than 16 MiB, and answers so pathological that
// comparing them would take far more work than their size (thousands of
// levels of nested arrays differing at every level), are errors too.
//
// At is ordered segment by segment, a parent before its children; segments
// that are decimal numbers (array indexes, numeric keys) come before other
// segments and compare by value, so /items/2 comes before /items/10. Ties
// are broken by Kind, then Legacy, then Newpath. When more than
// MaxDifferences fields differ, the first MaxDifferences in that order are
// returned (when an object repeats a key, some MaxDifferences of them,
// deterministically). Equal answers yield nil.
func (c *Comparer) Compare(legacy, newpath Response) ([]Difference, error) {
	st := c.getState()
	defer c.putState(st)

	w := &st.w
	w.init(c, st)
	body, err := c.prepareBody(st, legacy, newpath)
	if err != nil {
		return nil, err
	}
	// The first walk takes the fast path through objects whose keys come in
	// the same order, which is most of them, and so reports in no particular
	// order. Only if it finds more than the cap does a second walk visit
	// every object in key order, which is report order, to keep the first
	// MaxDifferences exactly: the result must not depend on the order the
	// backends happened to serialize keys in.
	w.run(body, legacy, newpath, false, c.max+1)
	if len(w.diffs) > c.max && !w.exhausted {
		w.run(body, legacy, newpath, true, c.max)
	}
	if w.exhausted {
		return nil, errTooComplex
	}
	diffs := w.diffs
	w.diffs = nil
	slices.SortFunc(diffs, compareDifferences)
	return diffs, nil
}

// compareDifferences is the report order: At segment by segment, then Kind,
// Legacy, Newpath.
func compareDifferences(a, b Difference) int {
	if c := comparePaths(a.At, b.At); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Kind, b.Kind); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Legacy, b.Legacy); c != 0 {
		return c
	}
	return cmp.Compare(a.Newpath, b.Newpath)
}

// comparePaths orders two concrete paths segment by segment; see Compare.
func comparePaths(a, b string) int {
	for {
		if a == "" || b == "" {
			return cmp.Compare(len(a), len(b))
		}
		a, b = a[1:], b[1:] // the "/" before each segment
		i := strings.IndexByte(a, '/')
		if i < 0 {
			i = len(a)
		}
		j := strings.IndexByte(b, '/')
		if j < 0 {
			j = len(b)
		}
		if c := compareSegments(a[:i], b[:j]); c != 0 {
			return c
		}
		a, b = a[i:], b[j:]
	}
}

// compareSegments orders two escaped path segments: decimal numbers first,
// by value, then the others bytewise.
func compareSegments(a, b string) int {
	if c := compareClass(isDecimal(a), isDecimal(b)); c != 0 {
		return c
	}
	if isDecimal(a) {
		ta, tb := strings.TrimLeft(a, "0"), strings.TrimLeft(b, "0")
		if c := cmp.Compare(len(ta), len(tb)); c != 0 {
			return c
		}
		if c := strings.Compare(ta, tb); c != 0 {
			return c
		}
	}
	return strings.Compare(a, b)
}

// compareClass puts decimal segments before the others: comparing a
// decimal with a non-decimal segment bytewise, and two decimals by value,
// would not be transitive ("010" > "1" > "0A" > "010").
func compareClass(aDecimal, bDecimal bool) int {
	return cmp.Compare(boolInt(bDecimal), boolInt(aDecimal))
}

func isDecimal[S string | []byte](s S) bool {
	if len(s) == 0 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// compareKeys orders two unescaped object keys as compareSegments orders
// their escaped forms, without escaping them: it is the order objects are
// walked in when the report is capped, which must be report order.
func compareKeys(a, b []byte) int {
	if c := compareClass(isDecimal(a), isDecimal(b)); c != 0 {
		return c
	}
	if isDecimal(a) {
		ta, tb := trimLeftZeros(a), trimLeftZeros(b)
		if c := cmp.Compare(len(ta), len(tb)); c != 0 {
			return c
		}
		if c := bytes.Compare(ta, tb); c != 0 {
			return c
		}
		return bytes.Compare(a, b)
	}
	return compareEscaped(a, b)
}

func trimLeftZeros(b []byte) []byte {
	for len(b) > 0 && b[0] == '0' {
		b = b[1:]
	}
	return b
}

// compareEscaped compares a and b as their RFC 6901 escaped forms ("~"
// becomes "~0", "/" becomes "~1") would compare bytewise.
func compareEscaped(a, b []byte) int {
	var i, j int
	var pa, pb byte // the second byte of an escape in progress; 0: none
	for {
		ca, oka := nextEscaped(a, &i, &pa)
		cb, okb := nextEscaped(b, &j, &pb)
		if !oka || !okb {
			return cmp.Compare(boolInt(oka), boolInt(okb))
		}
		if ca != cb {
			return cmp.Compare(ca, cb)
		}
	}
}

func nextEscaped(s []byte, i *int, pending *byte) (byte, bool) {
	if *pending != 0 {
		c := *pending
		*pending = 0
		return c, true
	}
	if *i >= len(s) {
		return 0, false
	}
	c := s[*i]
	*i++
	switch c {
	case '~':
		*pending = '0'
		return '~', true
	case '/':
		*pending = '1'
		return '~', true
	}
	return c, true
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// compareState is the scratch one Compare works in, pooled per Comparer.
type compareState struct {
	sides [2]side // legacy, newpath
	w     walker
}

// maxPooledNodes keeps a state that parsed a huge body out of the pool, so
// one large answer does not pin its memory for the life of the process.
const maxPooledNodes = 1 << 16

func (c *Comparer) getState() *compareState {
	if st, ok := c.states.Get().(*compareState); ok {
		return st
	}
	return new(compareState)
}

func (c *Comparer) putState(st *compareState) {
	for i := range st.sides {
		s := &st.sides[i]
		if cap(s.tree.nodes) > maxPooledNodes || s.bufs[0].Cap() > maxPooledNodes*16 || s.bufs[1].Cap() > maxPooledNodes*16 {
			return
		}
		s.release()
	}
	st.w.release()
	c.states.Put(st)
}
