//go:build unix

package proxy

import (
	"crypto/tls"
	"errors"
	"net"
	"syscall"
)

// peerClosed reports whether the far end of c has closed it, without
// reading from it: a peek at the socket that does not wait. Bytes waiting
// to be read (a pipelined request) are not a close. A connection that is
// not a socket is never reported closed.
func peerClosed(c net.Conn) bool {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	closed := false
	var buf [1]byte
	// Control, not Read: Read answers a passed read deadline without
	// calling the peek, and fasthttp leaves its ReadTimeout armed while a
	// handler runs, so a client gone after it would go unnoticed.
	_ = raw.Control(func(fd uintptr) {
		n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch {
		case n == 0 && err == nil:
			closed = true // orderly shutdown: EOF
		case errors.Is(err, syscall.ECONNRESET):
			closed = true
		}
	})
	return closed
}
