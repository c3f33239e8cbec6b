package diff

import (
	"bytes"
	"compress/flate"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// defaultMaxDecodedBytes is Options.MaxDecodedBytes when it is zero.
const defaultMaxDecodedBytes = 16 << 20

// ErrBodyTooLarge is the error of Compare for a body that decodes to more
// than Options.MaxDecodedBytes: it is not compared, and never inflated
// past the cap.
var ErrBodyTooLarge = errors.New("decoded body exceeds the cap")

// side is the per-answer scratch of one Compare: its parse tree and the
// buffers its body is decoded into.
type side struct {
	tree tree
	bufs [2]bytes.Buffer // decoding alternates between them, one step reading the other's output
	in   bytes.Reader
	lim  io.LimitedReader
}

// release drops references into the caller's bodies before the side is pooled.
func (s *side) release() {
	s.tree.src = nil
	s.in.Reset(nil)
	s.lim.R = nil
}

// Decode undoes the Content-Encoding of body as Compare does, for a caller
// that shows the bodies it compared. What it returns is the caller's.
func (c *Comparer) Decode(h http.Header, body []byte) ([]byte, error) {
	st := c.getState()
	defer c.putState(st)
	out, err := c.decodeBody(&st.sides[0], h, body)
	if err != nil {
		return nil, err
	}
	return bytes.Clone(out), nil // out may be the state's buffer
}

// decodeBody undoes the Content-Encoding of body. An empty body is left
// as is whatever the header says: HEAD answers and 204s carry the header
// of the representation without its bytes.
func (c *Comparer) decodeBody(s *side, h http.Header, body []byte) ([]byte, error) {
	values := h["Content-Encoding"]
	if len(body) == 0 || len(values) == 0 {
		return body, nil
	}
	// Codings are listed in the order they were applied (RFC 9110 §8.4), so
	// they are undone from the last.
	step := 0
	for v := len(values) - 1; v >= 0; v-- {
		list := values[v]
		for list != "" {
			coding := list
			if i := strings.LastIndexByte(list, ','); i >= 0 {
				coding, list = list[i+1:], list[:i]
			} else {
				list = ""
			}
			coding = strings.TrimSpace(coding)
			if coding == "" || strings.EqualFold(coding, "identity") {
				continue
			}
			out, err := c.undo(s, &s.bufs[step%2], coding, body)
			if err != nil {
				return nil, fmt.Errorf("content-encoding %s: %w", coding, err)
			}
			if int64(len(out)) > c.maxDecoded {
				return nil, fmt.Errorf("content-encoding %s: %w", coding, ErrBodyTooLarge)
			}
			body = out
			step++
		}
	}
	return body, nil
}

// undo undoes one coding of body, writing into buf when the package does it.
func (c *Comparer) undo(s *side, buf *bytes.Buffer, coding string, body []byte) ([]byte, error) {
	s.in.Reset(body)
	var r io.ReadCloser
	var err error
	switch {
	case strings.EqualFold(coding, "gzip") || strings.EqualFold(coding, "x-gzip"):
		zr, _ := c.gzip.Get().(*gzip.Reader)
		if zr == nil {
			zr, err = gzip.NewReader(&s.in)
		} else {
			err = zr.Reset(&s.in)
		}
		if zr != nil {
			defer c.gzip.Put(zr)
		}
		r = zr
	case strings.EqualFold(coding, "deflate") && isZlib(body):
		zr, _ := c.zlib.Get().(io.ReadCloser)
		if zr == nil {
			zr, err = zlib.NewReader(&s.in)
		} else {
			err = zr.(zlib.Resetter).Reset(&s.in, nil)
		}
		if zr != nil {
			defer c.zlib.Put(zr)
		}
		r = zr
	case strings.EqualFold(coding, "deflate"):
		// RFC 9110 says deflate is zlib-wrapped, but enough servers send the
		// raw DEFLATE stream that browsers accept both.
		fr, _ := c.flate.Get().(io.ReadCloser)
		if fr == nil {
			fr = flate.NewReader(&s.in)
		} else {
			err = fr.(flate.Resetter).Reset(&s.in, nil)
		}
		defer c.flate.Put(fr)
		r = fr
	default:
		if c.decode == nil {
			return nil, errors.New("unsupported")
		}
		return c.decode(strings.ToLower(coding), body)
	}
	if err != nil {
		return nil, err
	}
	buf.Reset()
	s.lim = io.LimitedReader{R: r, N: c.maxDecoded + 1}
	_, err = buf.ReadFrom(&s.lim)
	s.lim.R = nil
	if err != nil {
		return nil, err
	}
	if int64(buf.Len()) > c.maxDecoded {
		return nil, ErrBodyTooLarge
	}
	return buf.Bytes(), nil
}

// isZlib reports whether body starts with a zlib header (RFC 1950 §2.2):
// method 8 (deflate), a window of at most 32 KiB, and a header checksum.
func isZlib(body []byte) bool {
	return len(body) >= 2 && body[0]&0x0F == 8 && body[0]>>4 <= 7 &&
		(uint16(body[0])<<8|uint16(body[1]))%31 == 0
}
