package diff

import (
	"encoding/binary"
	"math/bits"
	"unicode/utf8"
)

// The JSON parser builds a compact tree over the body: no reflection, no
// interface values, no per-value allocation. Strings and numbers stay spans
// of the body (a string with escapes is unescaped once, into tree.aux);
// containers list their children contiguously in tree.kids. encoding/json
// into `any` costs one allocation per value and parses numbers through
// float64, which cannot tell 2^53 from 2^53+1.

// kind is a JSON value's kind. true and false are kinds of their own so that
// a value fits in a node without a payload; jsonType groups them.
type kind uint8

const (
	kindNull kind = iota
	kindFalse
	kindTrue
	kindNumber
	kindString
	kindArray
	kindObject
)

// jsonType is the JSON type of k, which a type difference is about.
func jsonType(k kind) kind {
	if k == kindTrue {
		return kindFalse
	}
	return k
}

const (
	flagEscaped  uint8 = 1 << iota // a string whose unescaped bytes are in tree.aux
	flagDataKeys                   // an object whose keys look like data (schema segment {key})
)

// Data-like objects (SPEC §6): their keys are ids, dates, SKUs rather than
// field names, so all their keys share the schema segment {key}.
const (
	maxFieldKeyLen = 64
	maxFieldKeys   = 50
)

// maxDepth is the deepest nesting accepted as JSON, the limit encoding/json
// applies, so that a body is JSON here exactly when json.Valid says so; it
// also bounds the recursion of everything that walks a tree.
const maxDepth = 10000

// node is one JSON value. For a number, off and n delimit its text in
// tree.src; for a string, its unescaped bytes in tree.src (or tree.aux if
// flagEscaped); for an array, its n children are kids[off:off+n]; for an
// object, its n members are kids[off:off+2n], key and value alternating.
type node struct {
	kind  kind
	flags uint8
	off   uint32
	n     uint32
}

// tree is a parsed JSON document; the root is nodes[0]. Its slices are
// reused from one parse to the next.
type tree struct {
	src   []byte
	aux   []byte
	nodes []node
	kids  []uint32
	stack []uint32 // the children of the containers being parsed
}

// str returns the unescaped bytes of string node i.
func (t *tree) str(i uint32) []byte {
	n := t.nodes[i]
	if n.flags&flagEscaped != 0 {
		return t.aux[n.off : n.off+n.n]
	}
	return t.src[n.off : n.off+n.n]
}

// text returns the source text of number node i.
func (t *tree) text(i uint32) []byte {
	n := t.nodes[i]
	return t.src[n.off : n.off+n.n]
}

// members returns object node i's members, key and value alternating.
func (t *tree) members(i uint32) []uint32 {
	n := t.nodes[i]
	return t.kids[n.off : n.off+2*n.n]
}

// elements returns array node i's elements.
func (t *tree) elements(i uint32) []uint32 {
	n := t.nodes[i]
	return t.kids[n.off : n.off+n.n]
}

// maxParseBytes keeps offsets within uint32.
const maxParseBytes = 1<<31 - 1

// parse parses src, which must stay unchanged while t is used, and reports
// whether it is one JSON value (RFC 8259) surrounded by optional whitespace.
func (t *tree) parse(src []byte) bool {
	t.src = src
	t.aux = t.aux[:0]
	t.nodes = t.nodes[:0]
	t.kids = t.kids[:0]
	t.stack = t.stack[:0]
	if len(src) > maxParseBytes {
		return false
	}
	i := t.value(skipSpace(src, 0), 0)
	return i >= 0 && skipSpace(src, i) == len(src)
}

func skipSpace(src []byte, i int) int {
	for i < len(src) {
		switch src[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// value parses the value at src[i:], at nesting depth, and returns the
// index after it, or -1 if there is none.
func (t *tree) value(i, depth int) int {
	src := t.src
	if i >= len(src) {
		return -1
	}
	switch c := src[i]; c {
	case '{':
		return t.object(i+1, depth+1)
	case '[':
		return t.array(i+1, depth+1)
	case '"':
		return t.string(i + 1)
	case 't':
		return t.literal(i, "true", kindTrue)
	case 'f':
		return t.literal(i, "false", kindFalse)
	case 'n':
		return t.literal(i, "null", kindNull)
	default:
		if c == '-' || c >= '0' && c <= '9' {
			return t.number(i)
		}
	}
	return -1
}

func (t *tree) literal(i int, lit string, k kind) int {
	if len(t.src)-i < len(lit) || string(t.src[i:i+len(lit)]) != lit {
		return -1
	}
	t.nodes = append(t.nodes, node{kind: k})
	return i + len(lit)
}

// number parses the number at src[i:]: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (t *tree) number(i int) int {
	src := t.src
	start := i
	if src[i] == '-' {
		i++
	}
	switch {
	case i >= len(src):
		return -1
	case src[i] == '0':
		i++
	case src[i] >= '1' && src[i] <= '9':
		i = skipDigits(src, i+1)
	default:
		return -1
	}
	if i < len(src) && src[i] == '.' {
		j := skipDigits(src, i+1)
		if j == i+1 {
			return -1
		}
		i = j
	}
	if i < len(src) && (src[i] == 'e' || src[i] == 'E') {
		i++
		if i < len(src) && (src[i] == '+' || src[i] == '-') {
			i++
		}
		j := skipDigits(src, i)
		if j == i {
			return -1
		}
		i = j
	}
	t.nodes = append(t.nodes, node{kind: kindNumber, off: uint32(start), n: uint32(i - start)})
	return i
}

func skipDigits(src []byte, i int) int {
	for i < len(src) && src[i] >= '0' && src[i] <= '9' {
		i++
	}
	return i
}

// string parses the string whose opening quote is at src[i-1].
func (t *tree) string(i int) int {
	src := t.src
	start := i
	// Eight bytes at a time while no byte is special, which is most of a
	// string: this loop is the parser's hottest.
	for i+8 <= len(src) {
		if m := specialBytes(binary.LittleEndian.Uint64(src[i:])); m != 0 {
			i += bits.TrailingZeros64(m) / 8
			break
		}
		i += 8
	}
	for ; i < len(src); i++ {
		switch c := src[i]; {
		case c == '"':
			t.nodes = append(t.nodes, node{kind: kindString, off: uint32(start), n: uint32(i - start)})
			return i + 1
		case c == '\\':
			return t.escapedString(start, i)
		case c < 0x20:
			return -1
		}
	}
	return -1
}

// specialBytes returns a word with the high bit set in (at least) the
// lowest byte of w that ends a plain run of string bytes: '"', '\\' or a
// control character. Bytes above a flagged one may be flagged wrongly (the
// subtraction borrows), so only the lowest counts.
func specialBytes(w uint64) uint64 {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	quote := w ^ (ones * '"')
	backslash := w ^ (ones * '\\')
	return ((quote-ones) & ^quote | (backslash-ones) & ^backslash | (w-ones*0x20) & ^w) & highs
}

// escapedString continues string at its first backslash, src[i], copying
// the unescaped bytes to aux.
func (t *tree) escapedString(start, i int) int {
	src := t.src
	off := len(t.aux)
	aux := append(t.aux, src[start:i]...)
	for i < len(src) {
		c := src[i]
		switch {
		case c == '"':
			t.aux = aux
			t.nodes = append(t.nodes, node{kind: kindString, flags: flagEscaped, off: uint32(off), n: uint32(len(aux) - off)})
			return i + 1
		case c < 0x20:
			return -1
		case c != '\\':
			j := i + 1
			for j < len(src) && src[j] != '"' && src[j] != '\\' && src[j] >= 0x20 {
				j++
			}
			aux = append(aux, src[i:j]...)
			i = j
			continue
		}
		if i+1 >= len(src) {
			return -1
		}
		switch src[i+1] {
		case '"', '\\', '/':
			aux = append(aux, src[i+1])
		case 'b':
			aux = append(aux, '\b')
		case 'f':
			aux = append(aux, '\f')
		case 'n':
			aux = append(aux, '\n')
		case 'r':
			aux = append(aux, '\r')
		case 't':
			aux = append(aux, '\t')
		case 'u':
			r, ok := hex4(src, i+2)
			if !ok {
				return -1
			}
			i += 6
			if utf16IsHigh(r) && i+1 < len(src) && src[i] == '\\' && src[i+1] == 'u' {
				if lo, ok := hex4(src, i+2); ok && utf16IsLow(lo) {
					aux = utf8.AppendRune(aux, 0x10000+(r-0xD800)<<10+(lo-0xDC00))
					i += 6
					continue
				}
			}
			aux = appendWTF8(aux, r)
			continue
		default:
			return -1
		}
		i += 2
	}
	return -1
}

func hex4(src []byte, i int) (rune, bool) {
	if len(src)-i < 4 {
		return 0, false
	}
	var r rune
	for _, c := range src[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

func utf16IsHigh(r rune) bool { return r >= 0xD800 && r < 0xDC00 }
func utf16IsLow(r rune) bool  { return r >= 0xDC00 && r < 0xE000 }

// appendWTF8 appends r, which may be a lone surrogate, in the generalized
// UTF-8 of WTF-8: utf8.AppendRune would turn every lone surrogate into
// U+FFFD and so make "\ud800" equal "\udc00".
func appendWTF8(b []byte, r rune) []byte {
	if r >= 0xD800 && r < 0xE000 {
		return append(b, 0xE0|byte(r>>12), 0x80|byte(r>>6)&0x3F, 0x80|byte(r)&0x3F)
	}
	return utf8.AppendRune(b, r)
}

// array parses the array whose "[" is at src[i-1].
func (t *tree) array(i, depth int) int {
	if depth > maxDepth {
		return -1
	}
	src := t.src
	self := len(t.nodes)
	t.nodes = append(t.nodes, node{kind: kindArray})
	mark := len(t.stack)
	i = skipSpace(src, i)
	if i < len(src) && src[i] == ']' {
		t.nodes[self].off = uint32(len(t.kids))
		return i + 1
	}
	for {
		child := uint32(len(t.nodes))
		if i = t.value(i, depth); i < 0 {
			return -1
		}
		t.stack = append(t.stack, child)
		if i = skipSpace(src, i); i >= len(src) {
			return -1
		}
		if src[i] == ']' {
			break
		}
		if src[i] != ',' {
			return -1
		}
		i = skipSpace(src, i+1)
	}
	t.close(self, mark, len(t.stack)-mark)
	return i + 1
}

// object parses the object whose "{" is at src[i-1].
func (t *tree) object(i, depth int) int {
	if depth > maxDepth {
		return -1
	}
	src := t.src
	self := len(t.nodes)
	t.nodes = append(t.nodes, node{kind: kindObject})
	mark := len(t.stack)
	i = skipSpace(src, i)
	if i < len(src) && src[i] == '}' {
		t.nodes[self].off = uint32(len(t.kids))
		return i + 1
	}
	dataKeys := false
	for {
		if i >= len(src) || src[i] != '"' {
			return -1
		}
		key := uint32(len(t.nodes))
		if i = t.string(i + 1); i < 0 {
			return -1
		}
		if k := t.str(key); len(k) > maxFieldKeyLen || len(k) > 0 && k[0] >= '0' && k[0] <= '9' {
			dataKeys = true
		}
		if i = skipSpace(src, i); i >= len(src) || src[i] != ':' {
			return -1
		}
		value := uint32(len(t.nodes))
		if i = t.value(skipSpace(src, i+1), depth); i < 0 {
			return -1
		}
		t.stack = append(t.stack, key, value)
		if i = skipSpace(src, i); i >= len(src) {
			return -1
		}
		if src[i] == '}' {
			break
		}
		if src[i] != ',' {
			return -1
		}
		i = skipSpace(src, i+1)
	}
	n := (len(t.stack) - mark) / 2
	if n > maxFieldKeys {
		dataKeys = true
	}
	if dataKeys {
		t.nodes[self].flags |= flagDataKeys
	}
	t.close(self, mark, n)
	return i + 1
}

// close moves the children of container self from the parse stack to kids.
func (t *tree) close(self, mark, n int) {
	t.nodes[self].off = uint32(len(t.kids))
	t.nodes[self].n = uint32(n)
	t.kids = append(t.kids, t.stack[mark:]...)
	t.stack = t.stack[:mark]
}
