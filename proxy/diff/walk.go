package diff

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// walker walks the legacy and newpath trees side by side. It is scratch
// space, pooled with the compareState that holds it; every slice is a stack
// that a step pushes on and truncates back when done.
type walker struct {
	c    *Comparer
	a, b *tree // legacy, newpath

	active  []int32   // pattern trie nodes reached, one range per path depth (see step)
	path    []segment // the path of the values being compared; strings are built from it only to report
	scratch []uint32  // indexes of the elements that differ, of the arrays being compared
	keyed   []keyed   // members of the objects being paired
	hashes  []hashed  // element hashes of the arrays being compared as multisets

	diffs     []Difference
	stopAt    int  // stop once this many differences are found
	stopped   bool // stopAt reached, or the budget spent: every loop unwinds
	sorted    bool // visit object members in key order, which is report order
	budget    int  // node visits left (see workBudget)
	exhausted bool // the budget is spent: the comparison is abandoned

	text    []byte // rendering buffer for values
	pathBuf []byte // rendering buffer for paths
}

func (w *walker) init(c *Comparer, st *compareState) {
	w.c = c
	w.a = &st.sides[0].tree
	w.b = &st.sides[1].tree
	w.diffs = nil
	w.stopped, w.sorted, w.exhausted = false, false, false
}

// release drops references into the compared bodies before pooling.
func (w *walker) release() {
	w.c, w.a, w.b = nil, nil, nil
	clear(w.path[:cap(w.path)])
	w.path = w.path[:0]
	w.active = w.active[:0]
	w.scratch = w.scratch[:0]
	clear(w.keyed[:cap(w.keyed)])
	w.keyed = w.keyed[:0]
	w.hashes = w.hashes[:0]
	w.diffs = nil
}

// root starts matching patterns at the root of the response tree.
func (w *walker) root() match {
	w.active = w.active[:0]
	if len(w.c.patterns) == 1 && len(w.c.patterns[0].literals) == 0 && w.c.patterns[0].star < 0 {
		return match{} // no patterns: every step is free
	}
	w.active = append(w.active, 0)
	return match{lo: 0, hi: 1}
}

// bodyMode is how the two bodies are compared.
type bodyMode int

const (
	bodySkip  bodyMode = iota // ignored, or byte for byte equal
	bodyBytes                 // as one leaf: either side is not JSON
	bodyTree                  // as two JSON documents, parsed into the sides' trees
)

// preparedBody is the two bodies, decoded and parsed once for both walks.
type preparedBody struct {
	mode            bodyMode
	legacy, newpath []byte
}

// prepareBody decodes and parses the bodies, unless /body is ignored.
func (c *Comparer) prepareBody(st *compareState, legacy, newpath Response) (preparedBody, error) {
	w := &st.w
	root := w.root()
	m := w.step(root, &segment{key: c.segBody, index: -1}, false)
	if m.ignore {
		return preparedBody{}, nil
	}
	lb, err := c.decodeBody(&st.sides[0], legacy.Header, legacy.Body)
	if err != nil {
		return preparedBody{}, fmt.Errorf("legacy body: %w", err)
	}
	nb, err := c.decodeBody(&st.sides[1], newpath.Header, newpath.Body)
	if err != nil {
		return preparedBody{}, fmt.Errorf("newpath body: %w", err)
	}
	switch {
	case bytes.Equal(lb, nb):
		// Equal JSON has no difference, nor have equal bytes: skip the parse.
		return preparedBody{}, nil
	case len(lb) > 0 && len(nb) > 0 && st.sides[0].tree.parse(lb) && st.sides[1].tree.parse(nb):
		return preparedBody{mode: bodyTree}, nil
	}
	return preparedBody{mode: bodyBytes, legacy: lb, newpath: nb}, nil
}

// run walks the response tree in report order at the top (body, headers,
// status), collecting at most stopAt differences.
func (w *walker) run(body preparedBody, legacy, newpath Response, sorted bool, stopAt int) {
	c := w.c
	w.diffs = w.diffs[:0]
	w.sorted, w.stopAt, w.stopped = sorted, stopAt, false
	w.budget = workBudget(w.a, w.b, body.mode)
	root := w.root()

	w.path = append(w.path[:0], segment{key: c.segBody, index: -1})
	if m := w.step(root, &w.path[0], false); !m.ignore {
		switch body.mode {
		case bodyBytes:
			w.emitText(KindValue, w.quote(body.legacy), w.quote(body.newpath))
		case bodyTree:
			w.walk(0, 0, m, false)
		}
	}
	w.active = w.active[:root.hi]

	if len(c.headers) > 0 && !w.stopped {
		w.path = append(w.path[:0], segment{key: c.segHeaders, index: -1})
		if hm := w.step(root, &w.path[0], false); !hm.ignore {
			for _, h := range c.headers {
				w.path = append(w.path[:1], segment{key: h.name, index: -1})
				if m := w.step(hm, &w.path[1], false); !m.ignore {
					w.header(h, legacy.Header, newpath.Header)
				}
				w.active = w.active[:hm.hi]
				if w.stopped {
					break
				}
			}
		}
		w.active = w.active[:root.hi]
	}

	if !w.stopped {
		w.path = append(w.path[:0], segment{key: c.segStatus, index: -1})
		if m := w.step(root, &w.path[0], false); !m.ignore && legacy.Status != newpath.Status {
			w.emitText(KindValue, strconv.Itoa(legacy.Status), strconv.Itoa(newpath.Status))
		}
	}
	w.path = w.path[:0]
}

// header compares one header field. Its value is its field lines joined
// with ", " (RFC 9110 §5.3), which is how net/http also reads them.
func (w *walker) header(h headerField, legacy, newpath http.Header) {
	lv, nv := legacy[h.canonical], newpath[h.canonical]
	switch {
	case len(lv) == 0 && len(nv) == 0:
	case len(nv) == 0:
		w.emitText(KindMissing, w.quote([]byte(strings.Join(lv, ", "))), "")
	case len(lv) == 0:
		w.emitText(KindExtra, "", w.quote([]byte(strings.Join(nv, ", "))))
	case len(lv) == 1 && len(nv) == 1:
		if lv[0] != nv[0] {
			w.emitText(KindValue, w.quote([]byte(lv[0])), w.quote([]byte(nv[0])))
		}
	default:
		if l, n := strings.Join(lv, ", "), strings.Join(nv, ", "); l != n {
			w.emitText(KindValue, w.quote([]byte(l)), w.quote([]byte(n)))
		}
	}
}

// workBudget is how many node visits (walk and hash calls) one walk may
// make, reports counting as several (see reportCost). Equal documents take one visit per node; finding differences
// takes a few more, as arrays are probed and hashed to tell an order
// difference from others, and each level of nested arrays that differ in
// more than one element hashes what is below it again. So the budget is a
// generous multiple of the nodes: only a pathological answer (thousands of
// levels of arrays differing at every level) spends it, and then the
// comparison is an error rather than seconds of work.
func workBudget(a, b *tree, mode bodyMode) int {
	if mode != bodyTree {
		return 1 << 20
	}
	return 1<<20 + 32*(len(a.nodes)+len(b.nodes))
}

// reportCost is what reporting a difference spends of the budget: its
// path is built segment by segment, and a deep one is long.
func (w *walker) reportCost() int { return 64 + len(w.path) }

// errTooComplex is the error of a comparison that spent its work budget.
var errTooComplex = errors.New("responses too complex to compare")

// spend counts n node visits, and abandons the walk when the budget is spent.
func (w *walker) spend(n int) bool {
	if w.budget -= n; w.budget < 0 {
		w.exhausted, w.stopped = true, true
		return false
	}
	return true
}

// walk compares legacy node a with newpath node b, at w.path, where the
// patterns are at m. It reports whether they are equal; in probe mode it
// reports no difference and stops at the first one.
func (w *walker) walk(a, b uint32, m match, probe bool) bool {
	if !w.spend(1) {
		return false
	}
	ka, kb := w.a.nodes[a].kind, w.b.nodes[b].kind
	// A rule only makes more values equal: what it does not call equal
	// is compared as without it.
	if m.rule != 0 && w.c.rules[m.rule-1].equal(w.a, a, w.b, b) {
		return true
	}
	if jsonType(ka) != jsonType(kb) {
		if !probe {
			w.emit(KindType, a, b)
		}
		return false
	}
	var equal bool
	switch ka {
	case kindNull:
		equal = true
	case kindFalse, kindTrue:
		equal = ka == kb
	case kindNumber:
		equal = numbersEqual(w.a.text(a), w.b.text(b))
	case kindString:
		equal = bytes.Equal(w.a.str(a), w.b.str(b))
	case kindObject:
		return w.object(a, b, m, probe)
	case kindArray:
		return w.array(a, b, m, probe)
	}
	if !equal && !probe {
		w.emit(KindValue, a, b)
	}
	return equal
}

// object compares two objects member by member, pairing members by key.
// A key that occurs more than once (RFC 8259 allows it) pairs its first
// occurrence on one side with its first on the other, and so on.
func (w *walker) object(a, b uint32, m match, probe bool) bool {
	ma, mb := w.a.members(a), w.b.members(b)
	data := (w.a.nodes[a].flags|w.b.nodes[b].flags)&flagDataKeys != 0
	equal := true
	i := 0
	if !w.sorted {
		// Both sides usually serialize the same struct the same way: pair
		// members by position for as long as the keys agree.
		for ; i < len(ma) && i < len(mb); i += 2 {
			key := w.a.str(ma[i])
			if !bytes.Equal(key, w.b.str(mb[i])) {
				break
			}
			if !w.member(key, data, ma[i+1], mb[i+1], m, probe) {
				equal = false
				if probe || w.stopped {
					return false
				}
			}
		}
		if i == len(ma) && i == len(mb) {
			return equal
		}
	}
	return w.mergeMembers(ma[i:], mb[i:], data, m, probe) && equal
}

// mergeMembers pairs members by key after sorting both sides by key. In
// report order if w.sorted; else bytewise, which is cheaper and pairs
// members just as well.
func (w *walker) mergeMembers(ma, mb []uint32, data bool, m match, probe bool) bool {
	base := len(w.keyed)
	for k := 0; k < len(ma); k += 2 {
		w.keyed = append(w.keyed, keyed{key: w.a.str(ma[k]), value: ma[k+1]})
	}
	mid := len(w.keyed)
	for k := 0; k < len(mb); k += 2 {
		w.keyed = append(w.keyed, keyed{key: w.b.str(mb[k]), value: mb[k+1]})
	}
	// Deeper calls push above these; if that moves w.keyed, these still
	// read the old array, which nothing writes any more.
	sa, sb := w.keyed[base:mid], w.keyed[mid:]
	compare := bytes.Compare
	if w.sorted {
		compare = compareKeys
	}
	sortKeyed(sa, compare)
	sortKeyed(sb, compare)
	equal := true
	for i, j := 0, 0; (i < len(sa) || j < len(sb)) && (probe || !w.stopped); {
		var order int
		switch {
		case i == len(sa):
			order = 1
		case j == len(sb):
			order = -1
		default:
			order = compare(sa[i].key, sb[j].key)
		}
		var eq bool
		switch {
		case order == 0:
			key := sa[i].key
			ni, nj := 1, 1
			for i+ni < len(sa) && bytes.Equal(sa[i+ni].key, key) {
				ni++
			}
			for j+nj < len(sb) && bytes.Equal(sb[j+nj].key, key) {
				nj++
			}
			eq = w.occurrences(key, data, sa[i:i+ni], sb[j:j+nj], m, probe)
			i += ni
			j += nj
		case order < 0:
			eq = w.unpaired(KindMissing, w.a, sa[i].key, data, sa[i].value, m, probe)
			i++
		default:
			eq = w.unpaired(KindExtra, w.b, sb[j].key, data, sb[j].value, m, probe)
			j++
		}
		if !eq {
			equal = false
			if probe {
				break
			}
		}
	}
	w.keyed = w.keyed[:base]
	return equal
}

// keyed is an object member being paired: its key and its value's node.
type keyed struct {
	key   []byte
	value uint32
}

// sortKeyed sorts members by key, stably so that repeated keys keep their
// order.
func sortKeyed(ks []keyed, compare func(a, b []byte) int) {
	if len(ks) <= 12 { // insertion sort: cheaper for the usual few keys
		for i := 1; i < len(ks); i++ {
			for j := i; j > 0 && compare(ks[j-1].key, ks[j].key) > 0; j-- {
				ks[j-1], ks[j] = ks[j], ks[j-1]
			}
		}
		return
	}
	slices.SortStableFunc(ks, func(x, y keyed) int { return compare(x.key, y.key) })
}

// occurrences compares the occurrences of one key, sa on the legacy side and
// sb on newpath's, the first with the first and so on. Occurrences one
// side has more of are reported first: their differences are at the key
// itself and of a kind (missing, extra) that sorts before any of the pairs'.
func (w *walker) occurrences(key []byte, data bool, sa, sb []keyed, m match, probe bool) bool {
	equal := true
	n := min(len(sa), len(sb))
	for _, k := range sa[n:] {
		if !w.unpaired(KindMissing, w.a, key, data, k.value, m, probe) {
			equal = false
			if probe {
				return false
			}
		}
	}
	for _, k := range sb[n:] {
		if !w.unpaired(KindExtra, w.b, key, data, k.value, m, probe) {
			equal = false
			if probe {
				return false
			}
		}
	}
	for k := 0; k < n && (probe || !w.stopped); k++ {
		if !w.member(key, data, sa[k].value, sb[k].value, m, probe) {
			equal = false
			if probe {
				return false
			}
		}
	}
	return equal
}

// member compares the values of a key both sides have.
func (w *walker) member(key []byte, data bool, a, b uint32, m match, probe bool) bool {
	top := len(w.path)
	w.path = append(w.path, segment{key: key, index: -1, data: data})
	if m.lo == m.hi { // no pattern left: the common case, kept cheap
		equal := w.walk(a, b, m, probe)
		w.path = w.path[:top]
		return equal
	}
	cm := w.step(m, &w.path[top], false)
	equal := cm.ignore || w.walk(a, b, cm, probe)
	w.active = w.active[:cm.lo]
	w.path = w.path[:top]
	return equal
}

// unpaired reports a key only one side has, unless it is ignored.
func (w *walker) unpaired(k Kind, t *tree, key []byte, data bool, v uint32, m match, probe bool) bool {
	top := len(w.path)
	w.path = append(w.path, segment{key: key, index: -1, data: data})
	cm := w.step(m, &w.path[top], false)
	if !cm.ignore && !probe && !w.stopped {
		value := w.render(t, v)
		if k == KindMissing {
			w.emitText(k, value, "")
		} else {
			w.emitText(k, "", value)
		}
	}
	w.active = w.active[:cm.lo]
	w.path = w.path[:top]
	return cm.ignore
}

// array compares two arrays: by index, or as multisets when an unordered
// pattern names them. A difference in length is reported once, at the
// array, as is one in order.
func (w *walker) array(a, b uint32, m match, probe bool) bool {
	ea, eb := w.a.elements(a), w.b.elements(b)
	if len(ea) != len(eb) {
		if !probe {
			w.emit(KindSize, a, b)
		}
		return false
	}
	if len(ea) == 0 {
		return true
	}
	top := len(w.path)
	w.path = append(w.path, segment{index: 0})
	em := w.step(m, &w.path[top], false)
	equal, order := true, false
	if !em.ignore {
		equal, order = w.elements(ea, eb, top, em, m.unordered, probe)
	}
	w.active = w.active[:em.lo]
	w.path = w.path[:top]
	if !probe {
		switch {
		case order:
			w.emit(KindOrder, a, b)
		case !equal && m.unordered:
			w.emit(KindValue, a, b)
		}
	}
	return equal
}

// elements compares the elements of two arrays of one length: as
// multisets if unordered, else index by index. Of an ordered array that
// differs only in order it says so, and reports nothing else.
func (w *walker) elements(ea, eb []uint32, top int, em match, unordered, probe bool) (equal, order bool) {
	if probe || unordered {
		return w.probeElements(ea, eb, em, unordered)
	}
	// Elements are compared and reported in one pass; should the array turn
	// out to differ only in order, what they reported is taken back. Probing
	// them first instead would walk every differing subtree twice, and a
	// deep nest of arrays once per level.
	mark := len(w.diffs)
	base := len(w.scratch)
	for i := range ea {
		w.path[top].index = i
		// Once the cap is reached, the remaining elements are only probed:
		// whether this is an order difference must still be known.
		if !w.walk(ea[i], eb[i], em, w.stopped) {
			w.scratch = append(w.scratch, uint32(i))
		}
	}
	differ := w.scratch[base:] // as in mergeMembers, valid while deeper calls push
	equal = len(differ) == 0
	if len(differ) > 1 && w.sameMultiset(ea, eb, differ, em) {
		w.diffs = w.diffs[:mark]
		w.stopped = w.exhausted || len(w.diffs) >= w.stopAt
		order = true
	}
	w.scratch = w.scratch[:base]
	return equal, order
}

// probeElements is elements when nothing is reported below the array.
func (w *walker) probeElements(ea, eb []uint32, em match, unordered bool) (equal, order bool) {
	// Pairs equal at their index cancel out of both multisets, so only the
	// other indexes need a multiset comparison: none in the common case,
	// and one (which cannot be a permutation) when a single element changed.
	base := len(w.scratch)
	for i := range ea {
		if !w.walk(ea[i], eb[i], em, true) {
			if !unordered {
				w.scratch = w.scratch[:base]
				return false, false
			}
			w.scratch = append(w.scratch, uint32(i))
		}
	}
	differ := w.scratch[base:]
	equal = len(differ) == 0 || len(differ) > 1 && w.sameMultiset(ea, eb, differ, em)
	w.scratch = w.scratch[:base]
	return equal, false
}

// hashed is an array element's hash, for matching elements as multisets.
type hashed struct {
	hash  uint64
	index uint32
	used  bool
}

func compareHashed(x, y hashed) int {
	switch {
	case x.hash < y.hash:
		return -1
	case x.hash > y.hash:
		return 1
	}
	return int(x.index) - int(y.index)
}

// sameMultiset reports whether the elements of ea and eb at the indexes at
// are the same, as many times each. Elements are bucketed by a hash that
// equal elements share, and only elements in one bucket are compared, so
// this is O(n log n) unless many unequal elements collide.
func (w *walker) sameMultiset(ea, eb, at []uint32, em match) bool {
	base := len(w.hashes)
	for _, i := range at {
		w.hashes = append(w.hashes, hashed{hash: w.hash(w.a, ea[i], em), index: i})
	}
	mid := len(w.hashes)
	for _, i := range at {
		w.hashes = append(w.hashes, hashed{hash: w.hash(w.b, eb[i], em), index: i})
	}
	ha, hb := w.hashes[base:mid], w.hashes[mid:]
	slices.SortFunc(ha, compareHashed)
	slices.SortFunc(hb, compareHashed)
	same := true
	for i := 0; i < len(ha) && same; {
		h := ha[i].hash
		j := i
		for j < len(ha) && ha[j].hash == h {
			j++
		}
		if hb[i].hash != h || hb[j-1].hash != h || j < len(hb) && hb[j].hash == h {
			same = false
			break
		}
		same = w.matchBucket(ha[i:j], hb[i:j], ea, eb, em)
		i = j
	}
	w.hashes = w.hashes[:base]
	return same
}

// matchBucket pairs every element of ga with an equal one of gb. Equality
// is an equivalence, so taking the first equal element never spoils a
// later match.
func (w *walker) matchBucket(ga, gb []hashed, ea, eb []uint32, em match) bool {
	free := 0 // the first unused element of gb
	for _, x := range ga {
		found := false
		for k := free; k < len(gb); k++ {
			if !gb[k].used && w.walk(ea[x.index], eb[gb[k].index], em, true) {
				gb[k].used = true
				found = true
				break
			}
		}
		if !found {
			return false
		}
		for free < len(gb) && gb[free].used {
			free++
		}
	}
	return true
}

// Hash constants: FNV-1a over bytes, and a 64-bit finalizer (splitmix64's)
// to spread what is combined by addition or xor.
const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func fnvByte(h uint64, c byte) uint64 { return (h ^ uint64(c)) * fnvPrime }

func fnvBytes(h uint64, b []byte) uint64 {
	for _, c := range b {
		h = (h ^ uint64(c)) * fnvPrime
	}
	return h
}

func mix(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// hash hashes node n of t, at patterns m, so that nodes walk finds equal
// hash alike: ignored members are left out, unordered arrays are summed.
// It looks at one tree only, so it cannot know whether walk would see an
// object's keys as data ({key}) — that depends on the other side's object
// too — and so matches each key both ways: its ignores and unordered
// arrays are a superset of walk's, which keeps it coarser than equality.
func (w *walker) hash(t *tree, n uint32, m match) uint64 {
	if !w.spend(1) {
		return 0
	}
	nd := t.nodes[n]
	if m.rule != 0 && ruled(nd.kind) {
		// A rule makes values equal that differ: they must hash alike.
		if h, ok := w.c.rules[m.rule-1].hash(t, n); ok {
			return h
		}
	}
	switch nd.kind {
	case kindNull:
		return 0x6e756c6c
	case kindFalse:
		return 0x66616c7365
	case kindTrue:
		return 0x74727565
	case kindNumber:
		return mix(hashNumber(t.text(n)))
	case kindString:
		return mix(fnvBytes(fnvOffset^uint64(kindString), t.str(n)))
	case kindArray:
		es := t.elements(n)
		h := mix(uint64(len(es)) ^ 0x5b5d)
		top := len(w.path)
		w.path = append(w.path, segment{index: 0})
		em := w.step(m, &w.path[top], true)
		if !em.ignore {
			var sum uint64
			for _, e := range es {
				eh := w.hash(t, e, em)
				if m.unordered {
					sum += mix(eh)
				} else {
					h = mix(h ^ eh)
				}
			}
			h ^= sum
		}
		w.active = w.active[:em.lo]
		w.path = w.path[:top]
		return mix(h)
	default: // kindObject
		ms := t.members(n)
		var sum uint64
		top := len(w.path)
		for k := 0; k < len(ms); k += 2 {
			key := t.str(ms[k])
			w.path = append(w.path[:top], segment{key: key, index: -1})
			cm := w.step(m, &w.path[top], true)
			if !cm.ignore {
				sum += mix(fnvBytes(fnvOffset, key) ^ w.hash(t, ms[k+1], cm))
			}
			w.active = w.active[:cm.lo]
		}
		w.path = w.path[:top]
		return mix(sum ^ 0x7b7d)
	}
}

// emit reports a difference between legacy node a and newpath node b at w.path.
func (w *walker) emit(k Kind, a, b uint32) {
	if !w.stopped {
		w.emitText(k, w.render(w.a, a), w.render(w.b, b))
	}
}

// emitText reports a difference at w.path with the values as given.
func (w *walker) emitText(k Kind, legacy, newpath string) {
	if w.stopped || !w.spend(w.reportCost()) {
		return
	}
	path, at := w.paths()
	w.diffs = append(w.diffs, Difference{Path: path, At: at, Kind: k, Legacy: legacy, Newpath: newpath})
	if len(w.diffs) >= w.stopAt {
		w.stopped = true
	}
}

// paths renders w.path as a schema path and a concrete one.
func (w *walker) paths() (path, at string) {
	buf := w.pathBuf[:0]
	schema := false
	for _, s := range w.path {
		buf = append(buf, '/')
		if s.index >= 0 {
			buf = strconv.AppendInt(buf, int64(s.index), 10)
			schema = true
			continue
		}
		buf = appendEscapedKey(buf, s.key)
		schema = schema || s.data
	}
	at = string(buf)
	path = at
	if schema {
		buf = buf[:0]
		for _, s := range w.path {
			switch {
			case s.index >= 0:
				buf = append(buf, "/*"...)
			case s.data:
				buf = append(buf, "/"+keySegment...)
			default:
				buf = appendEscapedKey(append(buf, '/'), s.key)
			}
		}
		path = string(buf)
	}
	w.pathBuf = buf
	return path, at
}

// appendEscapedKey appends key escaped as an RFC 6901 reference token.
func appendEscapedKey(buf, key []byte) []byte {
	for _, c := range key {
		switch c {
		case '~':
			buf = append(buf, '~', '0')
		case '/':
			buf = append(buf, '~', '1')
		default:
			buf = append(buf, c)
		}
	}
	return buf
}
