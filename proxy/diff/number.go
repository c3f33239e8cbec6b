package diff

import (
	"bytes"
	"math/big"
)

// Numbers are equal by value (SPEC §6): 1, 1.0, 1e0 and 10e-1 are one
// number. They are compared as exact decimals, never through float64, which
// would make distinct ids above 2^53 equal.

// decimal is a JSON number in a canonical form: ±D × 10^exp, D the digits
// from the first to the last non-zero digit of the mantissa, so two numbers
// are equal exactly when their canonical forms are.
type decimal struct {
	zero        bool
	neg         bool
	mant        []byte   // the mantissa text: digits and at most one "."
	first, last int      // the first and last non-zero digit of D, as indexes in mant
	exp         int64    // the exponent, when it fits in an int64
	bigExp      *big.Int // the exponent, when it does not (then exp is 0)
}

// maxSmallExponentDigits is the most digits of an exponent that, plus the
// shift from the mantissa (below 2^32), surely fits in an int64.
const maxSmallExponentDigits = 18

// parseDecimal returns the canonical form of b, a valid JSON number.
func parseDecimal(b []byte) decimal {
	var d decimal
	if b[0] == '-' {
		d.neg = true
		b = b[1:]
	}
	end := len(b)
	expAt := bytes.IndexAny(b, "eE")
	if expAt >= 0 {
		end = expAt
	}
	d.mant = b[:end]
	dot := bytes.IndexByte(d.mant, '.')
	if dot < 0 {
		dot = len(d.mant)
	}
	d.first, d.last = -1, -1
	for i, c := range d.mant {
		if c != '0' && c != '.' {
			if d.first < 0 {
				d.first = i
			}
			d.last = i
		}
	}
	if d.first < 0 {
		d.zero = true
		return d
	}
	// shift is the power of ten of the last digit of D in the mantissa.
	var shift int64
	if d.last < dot {
		shift = int64(dot - d.last - 1)
	} else {
		shift = -int64(d.last - dot)
	}
	if expAt < 0 {
		d.exp = shift
		return d
	}
	e := b[expAt+1:]
	neg := false
	switch e[0] {
	case '-':
		neg = true
		e = e[1:]
	case '+':
		e = e[1:]
	}
	e = trimLeftZeros(e)
	if len(e) <= maxSmallExponentDigits {
		var v int64
		for _, c := range e {
			v = v*10 + int64(c-'0')
		}
		if neg {
			v = -v
		}
		d.exp = v + shift
		return d
	}
	v, _ := new(big.Int).SetString(string(e), 10)
	if neg {
		v.Neg(v)
	}
	v.Add(v, big.NewInt(shift))
	if v.IsInt64() { // keep the form canonical
		d.exp = v.Int64()
	} else {
		d.bigExp = v
	}
	return d
}

// numbersEqual reports whether JSON numbers a and b have the same value.
func numbersEqual(a, b []byte) bool {
	if bytes.Equal(a, b) {
		return true
	}
	da, db := parseDecimal(a), parseDecimal(b)
	if da.zero || db.zero {
		return da.zero && db.zero // -0 is 0
	}
	if da.neg != db.neg || da.exp != db.exp || (da.bigExp == nil) != (db.bigExp == nil) {
		return false
	}
	if da.bigExp != nil && da.bigExp.Cmp(db.bigExp) != 0 {
		return false
	}
	i, j := da.first, db.first
	for {
		if i <= da.last && da.mant[i] == '.' {
			i++
		}
		if j <= db.last && db.mant[j] == '.' {
			j++
		}
		if i > da.last || j > db.last {
			return i > da.last && j > db.last
		}
		if da.mant[i] != db.mant[j] {
			return false
		}
		i++
		j++
	}
}

// hashNumber hashes b, a JSON number, so that equal numbers hash alike.
func hashNumber(b []byte) uint64 {
	d := parseDecimal(b)
	h := uint64(fnvOffset)
	if d.zero {
		return fnvByte(h, '0')
	}
	if d.neg {
		h = fnvByte(h, '-')
	}
	for i := d.first; i <= d.last; i++ {
		if c := d.mant[i]; c != '.' {
			h = fnvByte(h, c)
		}
	}
	h = fnvByte(h, 'e')
	if d.bigExp != nil {
		return fnvBytes(h, []byte(d.bigExp.String()))
	}
	for i := 0; i < 8; i++ {
		h = fnvByte(h, byte(d.exp>>(8*i)))
	}
	return h
}
