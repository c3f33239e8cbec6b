package service

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"
)

// memConn is a net.Conn that reads from a buffer.
type memConn struct {
	net.Conn
	r *bytes.Reader
}

func (c *memConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *memConn) SetReadDeadline(time.Time) error { return nil }

// BenchmarkFramingCheck is the cost per request of the framing check on a
// keep-alive connection: a typical GET's header block, then a POST with a
// small body, read through bufio-sized reads as net/http reads them.
func BenchmarkFramingCheck(b *testing.B) {
	req := "GET /orders/ord_1 HTTP/1.1\r\nHost: proxy.example\r\nUser-Agent: curl/8.5.0\r\nAccept: application/json\r\n" +
		"X-User-Id: 42\r\nX-Request-Id: 6f1c2e0d9a4b4c7e\r\ntraceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n" +
		"POST /orders HTTP/1.1\r\nHost: proxy.example\r\nContent-Type: application/json\r\nContent-Length: 45\r\n\r\n" +
		`{"user_id":42,"item_id":"sku-3","quantity":2}`
	const pairs = 100
	stream := []byte(strings.Repeat(req, pairs))
	buf := make([]byte, 4096)
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		c := &framingConn{Conn: &memConn{r: bytes.NewReader(stream)}, log: &refusalLog{logger: slog.New(slog.DiscardHandler)},
			maxHeader: maxHeldHeader, headerTimeout: ReadHeaderTimeout}
		for {
			if _, err := c.Read(buf); err == io.EOF {
				break
			} else if err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*2*pairs), "ns/request")
}
