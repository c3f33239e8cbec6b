package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"strings"
)

// bodyLine is one line of a body as the sample page shows it: Mark says
// it lies at or under one of the sample's differing paths.
type bodyLine struct {
	Text string
	Mark bool
}

// bodyLines lays out a sample's body for the side-by-side view: a JSON
// body pretty-printed, one value per line, each line marked when its path
// (/body/…, RFC 6901, as the differences name them) is one of marks or
// lies under one; any other body line by line, all marked when /body
// itself differs. The text is escaped by the page's template, never here.
func bodyLines(body string, marks []string) []bodyLine {
	if lines, ok := jsonLines(body, marks); ok {
		return lines
	}
	mark := marked("/body", marks)
	var out []bodyLine
	for line := range strings.SplitSeq(body, "\n") {
		out = append(out, bodyLine{Text: line, Mark: mark})
	}
	return out
}

// marked reports whether path is one of marks or lies under one.
func marked(path string, marks []string) bool {
	for _, m := range marks {
		if path == m || strings.HasPrefix(path, m+"/") {
			return true
		}
	}
	return false
}

// jsonPrinter pretty-prints a JSON document token by token, keeping the
// order of its keys, which decoding into maps would lose.
type jsonPrinter struct {
	dec   *json.Decoder
	marks []string
	lines []bodyLine
}

func jsonLines(body string, marks []string) ([]bodyLine, bool) {
	if strings.TrimSpace(body) == "" {
		return nil, false
	}
	p := &jsonPrinter{dec: json.NewDecoder(strings.NewReader(body)), marks: marks}
	p.dec.UseNumber()
	if err := p.value("/body", 0, ""); err != nil {
		return nil, false
	}
	if _, err := p.dec.Token(); !errors.Is(err, io.EOF) {
		return nil, false // more than one document, or trailing bytes
	}
	return p.lines, true
}

func (p *jsonPrinter) emit(depth int, text, path string) {
	p.lines = append(p.lines, bodyLine{Text: strings.Repeat("  ", depth) + text, Mark: marked(path, p.marks)})
}

// value prints the next value, at path, indented depth levels, its first
// line starting with prefix (its key). A comma after it is its parent's.
func (p *jsonPrinter) value(path string, depth int, prefix string) error {
	tok, err := p.dec.Token()
	if err != nil {
		return err
	}
	delim, ok := tok.(json.Delim)
	if !ok {
		p.emit(depth, prefix+literal(tok), path)
		return nil
	}
	open, closing := string(delim), "}"
	if delim == '[' {
		closing = "]"
	}
	if !p.dec.More() {
		if _, err := p.dec.Token(); err != nil {
			return err
		}
		p.emit(depth, prefix+open+closing, path)
		return nil
	}
	p.emit(depth, prefix+open, path)
	for i := 0; p.dec.More(); i++ {
		child, childPrefix := path+"/"+strconv.Itoa(i), ""
		if delim == '{' {
			keyTok, err := p.dec.Token()
			if err != nil {
				return err
			}
			key, _ := keyTok.(string)
			child, childPrefix = path+"/"+escapePointer(key), literal(key)+": "
		}
		if err := p.value(child, depth+1, childPrefix); err != nil {
			return err
		}
		if p.dec.More() {
			p.lines[len(p.lines)-1].Text += ","
		}
	}
	if _, err := p.dec.Token(); err != nil {
		return err
	}
	p.emit(depth, closing, path)
	return nil
}

// literal writes a scalar token as JSON, strings without HTML escapes
// (the template does those).
func literal(tok json.Token) string {
	if n, ok := tok.(json.Number); ok {
		return n.String()
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(tok)
	return strings.TrimSuffix(buf.String(), "\n")
}

// pointerEscaper escapes a key as an RFC 6901 reference token.
var pointerEscaper = strings.NewReplacer("~", "~0", "/", "~1")

func escapePointer(key string) string { return pointerEscaper.Replace(key) }
