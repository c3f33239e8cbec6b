package diff

import (
	"unicode/utf8"
)

// maxValueBytes bounds each value a Difference shows (SPEC §6: samples keep
// values cut to 256 bytes); ellipsis marks a cut one and counts within it.
const (
	maxValueBytes = 256
	ellipsis      = "…"
)

// render returns node n of t as compact JSON, cut to maxValueBytes.
// Rendering stops soon after the cut, so a huge value costs no more than a
// small one.
func (w *walker) render(t *tree, n uint32) string {
	w.text = appendCompact(w.text[:0], t, n)
	return cut(w.text)
}

// quote returns b as a JSON string, cut to maxValueBytes.
func (w *walker) quote(b []byte) string {
	w.text = appendQuoted(w.text[:0], b)
	return cut(w.text)
}

// cut returns buf as a string of at most maxValueBytes, ending in ellipsis
// if it had to be cut, without splitting a UTF-8 sequence.
func cut(buf []byte) string {
	if len(buf) <= maxValueBytes {
		return string(buf)
	}
	k := maxValueBytes - len(ellipsis)
	for k > 0 && !utf8.RuneStart(buf[k]) {
		k--
	}
	return string(append(buf[:k], ellipsis...))
}

func appendCompact(buf []byte, t *tree, n uint32) []byte {
	if len(buf) > maxValueBytes {
		return buf
	}
	switch nd := t.nodes[n]; nd.kind {
	case kindNull:
		return append(buf, "null"...)
	case kindFalse:
		return append(buf, "false"...)
	case kindTrue:
		return append(buf, "true"...)
	case kindNumber:
		return append(buf, t.text(n)...) // as sent: 1.0 stays 1.0
	case kindString:
		return appendQuoted(buf, t.str(n))
	case kindArray:
		buf = append(buf, '[')
		for i, e := range t.elements(n) {
			if len(buf) > maxValueBytes {
				return buf
			}
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = appendCompact(buf, t, e)
		}
		return append(buf, ']')
	default: // kindObject
		buf = append(buf, '{')
		ms := t.members(n)
		for i := 0; i < len(ms); i += 2 {
			if len(buf) > maxValueBytes {
				return buf
			}
			if i > 0 {
				buf = append(buf, ',')
			}
			buf = append(appendQuoted(buf, t.str(ms[i])), ':')
			buf = appendCompact(buf, t, ms[i+1])
		}
		return append(buf, '}')
	}
}

const hexDigits = "0123456789abcdef"

// appendQuoted appends s as a JSON string, stopping soon after
// maxValueBytes. Invalid UTF-8 is shown as U+FFFD, a lone surrogate (kept
// by the parser, see appendWTF8) as its \u escape.
func appendQuoted(buf, s []byte) []byte {
	buf = append(buf, '"')
	for i := 0; i < len(s) && len(buf) <= maxValueBytes; {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				buf = append(buf, '\\', c)
			case c >= 0x20:
				buf = append(buf, c)
			case c == '\n':
				buf = append(buf, '\\', 'n')
			case c == '\r':
				buf = append(buf, '\\', 'r')
			case c == '\t':
				buf = append(buf, '\\', 't')
			default:
				buf = append(buf, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		switch {
		case size == 1 && c == 0xED && len(s)-i >= 3 && s[i+1]&0xE0 == 0xA0 && s[i+2]&0xC0 == 0x80:
			r = rune(c&0x0F)<<12 | rune(s[i+1]&0x3F)<<6 | rune(s[i+2]&0x3F)
			buf = append(buf, '\\', 'u', hexDigits[r>>12], hexDigits[r>>8&0xF], hexDigits[r>>4&0xF], hexDigits[r&0xF])
			size = 3
		case r == utf8.RuneError && size == 1:
			buf = append(buf, `\ufffd`...)
		default:
			buf = append(buf, s[i:i+size]...)
		}
		i += size
	}
	return append(buf, '"')
}
