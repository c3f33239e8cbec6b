package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strangler-proxy/strangler/config"
)

// captureSink appends captured comparisons to a JSON Lines file, one
// Sample a line, off the request path: the shadow worker that judged a
// comparison hands it over and never waits. A full queue drops the
// capture; a failed write drops it too. Both are counted.
type captureSink struct {
	cfg     config.Capture
	queue   chan Sample
	records *prometheus.CounterVec // by result: written, dropped, failed
	logger  *slog.Logger

	// Owned by run.
	file    *os.File
	out     *bufio.Writer
	size    int64
	flushed int64 // the file's size at the last good flush
	pending int   // lines in out not yet flushed: counted written once they are
	lastErr time.Time
}

// captureFlush is how often buffered captures are written out.
const captureFlush = time.Second

// newCaptureSink opens cfg.File for appending, so that a path that cannot
// be written fails the start rather than every capture.
func newCaptureSink(cfg config.Capture, records *prometheus.CounterVec, logger *slog.Logger) (*captureSink, error) {
	c := &captureSink{cfg: cfg, queue: make(chan Sample, cfg.Queue), records: records, logger: logger}
	if err := c.open(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *captureSink) open() error {
	f, err := os.OpenFile(c.cfg.File, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return fmt.Errorf("capture.file: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("capture.file: %w", err)
	}
	c.file, c.size, c.flushed = f, fi.Size(), fi.Size()
	if c.out == nil {
		c.out = bufio.NewWriterSize(f, 64<<10)
	} else {
		c.out.Reset(f)
	}
	return nil
}

// add queues s, or drops it when the queue is full.
func (c *captureSink) add(s Sample) {
	select {
	case c.queue <- s:
	default:
		c.records.WithLabelValues("dropped").Inc()
	}
}

// run writes queued captures until ctx is done, then what is still
// queued, and closes the file.
func (c *captureSink) run(ctx context.Context) {
	tick := time.NewTicker(captureFlush)
	defer tick.Stop()
	defer c.close()
	for {
		select {
		case s := <-c.queue:
			c.write(s)
		case <-tick.C:
			c.flush()
		case <-ctx.Done():
			for {
				select {
				case s := <-c.queue:
					c.write(s)
				default:
					return
				}
			}
		}
	}
}

func (c *captureSink) write(s Sample) {
	line, err := json.Marshal(s)
	if err != nil {
		c.fail(err)
		return
	}
	line = append(line, '\n')
	switch {
	case c.file == nil:
		// A rotation whose reopen failed: try the open again, and only
		// that, so that a stuck open does not rotate the old files away.
		if err := c.open(); err != nil {
			c.fail(err)
			return
		}
	case c.size > 0 && c.size+int64(len(line)) > c.cfg.MaxFileBytes:
		if err := c.rotate(); err != nil {
			c.fail(err)
			return
		}
	}
	// Whole lines only: a line is written to the buffer or not at all,
	// and the buffer goes out between lines (see writeAccessLine).
	if len(line) > c.out.Available() && c.out.Buffered() > 0 {
		c.flush()
	}
	if _, err := c.out.Write(line); err != nil {
		c.fail(err)
		return
	}
	c.size += int64(len(line))
	c.pending++
	if c.out.Buffered() == 0 { // larger than the buffer: written through
		c.records.WithLabelValues("written").Add(float64(c.pending))
		c.pending, c.flushed = 0, c.size
	}
}

// rotate shifts File.N to File.N+1 (dropping what is past Keep), File to
// File.1, and opens a new File.
func (c *captureSink) rotate() error {
	c.close()
	c.size = 0
	name := c.cfg.File
	if c.cfg.Keep == 0 {
		if err := os.Remove(name); err != nil && !os.IsNotExist(err) {
			return err
		}
	} else {
		_ = os.Remove(name + "." + strconv.Itoa(c.cfg.Keep))
		for i := c.cfg.Keep - 1; i >= 1; i-- {
			if err := os.Rename(name+"."+strconv.Itoa(i), name+"."+strconv.Itoa(i+1)); err != nil && !os.IsNotExist(err) {
				return err
			}
		}
		if err := os.Rename(name, name+".1"); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	return c.open()
}

// flush writes the buffered lines out. bufio keeps a write error for
// good, so after one the lines it held are counted lost and the writer
// starts over on the file (a disk that was full may have room again).
func (c *captureSink) flush() {
	if c.file == nil || c.pending == 0 {
		return
	}
	n := c.pending
	c.pending = 0
	if err := c.out.Flush(); err != nil {
		// What reached the file may end mid-line: cut it back to the
		// last whole line, so that the next one starts a line of its own.
		_ = c.file.Truncate(c.flushed)
		c.size = c.flushed
		c.records.WithLabelValues("failed").Add(float64(n - 1))
		c.fail(err)
		c.out.Reset(c.file)
		return
	}
	c.flushed = c.size
	c.records.WithLabelValues("written").Add(float64(n))
}

func (c *captureSink) close() {
	if c.file == nil {
		return
	}
	c.flush()
	_ = c.file.Close()
	c.file = nil
}

// fail counts a capture lost to an error; the log says so at most once a
// minute.
func (c *captureSink) fail(err error) {
	c.records.WithLabelValues("failed").Inc()
	if now := time.Now(); now.Sub(c.lastErr) > time.Minute {
		c.lastErr = now
		c.logger.Warn("capture: a record was lost", "file", c.cfg.File, "error", err.Error())
	}
}
