package diff

import (
	"fmt"
	"strings"
)

// Ignore and unordered patterns are compiled into one trie of segments,
// walked alongside the response tree: the walker carries the set of trie
// nodes its path has reached, so matching costs nothing below the depth
// where no pattern is left, which for most fields is right under /body.

// keySegment is the schema segment of every key of a data-like object.
const keySegment = "{key}"

// patternNode is one trie node: the patterns that reached it continue with
// one of its literal segments or with "*".
type patternNode struct {
	literals  []patternEdge
	star      int32 // the child for "*"; -1: none
	ignore    bool  // an ignore pattern ends here
	unordered bool  // an unordered pattern ends here
	rule      int32 // 1 + the index of the rule whose path ends here; 0: none
}

type patternEdge struct {
	segment string // unescaped
	to      int32
}

// PatternError is an ignore or unordered pattern New could not compile.
type PatternError struct {
	// List is "ignore" or "unordered"; Index is the pattern's place in it.
	List    string
	Index   int
	Pattern string
	Err     error
}

func (e *PatternError) Error() string {
	return fmt.Sprintf("%s pattern %q: %v", e.List, e.Pattern, e.Err)
}

func (e *PatternError) Unwrap() error { return e.Err }

// compilePatterns builds the trie of the ignore and unordered patterns and
// of the rules' paths. A pattern that does not compile is a *PatternError.
func compilePatterns(ignore, unordered []string, rules []Rule) ([]patternNode, error) {
	trie := []patternNode{{star: -1}}
	add := func(list []string, what string) error {
		for i, p := range list {
			segs, err := splitPattern(p)
			if err != nil {
				return &PatternError{List: what, Index: i, Pattern: p, Err: err}
			}
			at := int32(0)
			for _, s := range segs {
				at = trieChild(&trie, at, s)
			}
			switch what {
			case "ignore":
				trie[at].ignore = true
			case "unordered":
				trie[at].unordered = true
			default: // the rules', in order: the first of a path is kept
				if trie[at].rule == 0 {
					trie[at].rule = int32(i + 1)
				}
			}
		}
		return nil
	}
	if err := add(ignore, "ignore"); err != nil {
		return nil, err
	}
	if err := add(unordered, "unordered"); err != nil {
		return nil, err
	}
	paths := make([]string, len(rules))
	for i, r := range rules {
		paths[i] = r.Path
	}
	if err := add(paths, "rule"); err != nil {
		return nil, err
	}
	return trie, nil
}

func trieChild(trie *[]patternNode, at int32, seg string) int32 {
	n := &(*trie)[at]
	if seg == "*" {
		if n.star < 0 {
			n.star = int32(len(*trie))
			*trie = append(*trie, patternNode{star: -1})
		}
		return (*trie)[at].star
	}
	for _, e := range n.literals {
		if e.segment == seg {
			return e.to
		}
	}
	to := int32(len(*trie))
	n.literals = append(n.literals, patternEdge{segment: seg, to: to})
	*trie = append(*trie, patternNode{star: -1})
	return to
}

// splitPattern returns the unescaped segments of pattern p.
func splitPattern(p string) ([]string, error) {
	if !strings.HasPrefix(p, "/") {
		return nil, fmt.Errorf("does not start with /")
	}
	segs := strings.Split(p[1:], "/")
	for i, s := range segs {
		if s == "" {
			return nil, fmt.Errorf("segment %d is empty", i+1)
		}
		u, ok := unescapeSegment(s)
		if !ok {
			return nil, fmt.Errorf("segment %q: ~ must be followed by 0 or 1 (RFC 6901)", s)
		}
		segs[i] = u
	}
	switch segs[0] {
	case "status", "headers", "body", "*":
	default:
		return nil, fmt.Errorf("does not start with /status, /headers, /body or /*")
	}
	return segs, nil
}

// unescapeSegment undoes RFC 6901 escaping: ~1 is "/", ~0 is "~".
func unescapeSegment(s string) (string, bool) {
	if !strings.Contains(s, "~") {
		return s, true
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '~' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 == len(s) {
			return "", false
		}
		switch s[i+1] {
		case '0':
			b.WriteByte('~')
		case '1':
			b.WriteByte('/')
		default:
			return "", false
		}
		i++
	}
	return b.String(), true
}

// match is the outcome of one step down the response tree: the trie nodes
// reached, as w.active[lo:hi], and whether a pattern ended there.
type match struct {
	lo, hi    int
	ignore    bool
	unordered bool
	rule      int32 // as patternNode's: the most specific of the rules reached
}

// segment is one step of a path: an array index (index >= 0), or an object
// key (index < 0), shown as {key} in schema paths when data is set.
type segment struct {
	key   []byte
	index int
	data  bool
}

// step matches the patterns in from one segment further, pushing the nodes
// reached on w.active; the caller truncates w.active to the returned lo when
// done with the child. With either set, the key matches both as itself and
// as {key}: hashing uses that to stay coarser than equality (see hash).
func (w *walker) step(from match, s *segment, either bool) match {
	m := match{lo: len(w.active), hi: len(w.active)}
	if from.lo == from.hi {
		return m
	}
	trie := w.c.patterns
	for k := from.lo; k < from.hi; k++ {
		n := &trie[w.active[k]]
		if n.star >= 0 {
			w.active = append(w.active, n.star)
		}
		if s.index >= 0 {
			continue // an index is "*" and only "*" matches it
		}
		for _, e := range n.literals {
			var hit bool
			switch {
			case either:
				hit = e.segment == keySegment || e.segment == string(s.key)
			case s.data:
				hit = e.segment == keySegment
			default:
				hit = e.segment == string(s.key)
			}
			if hit {
				w.active = append(w.active, e.to)
			}
		}
	}
	m.hi = len(w.active)
	for _, id := range w.active[m.lo:m.hi] {
		m.ignore = m.ignore || trie[id].ignore
		m.unordered = m.unordered || trie[id].unordered
		if r := trie[id].rule; r != 0 && (m.rule == 0 || w.c.moreSpecific(r, m.rule)) {
			m.rule = r
		}
	}
	return m
}
