package proxy

import (
	"flag"
	"testing"
)

// allocBudget is how many allocations a proxied request may make beyond
// the bare forwarder's (issue 11): the paths pool their buffers and keep
// maps off the hot path, and this keeps them there.
const allocBudget = 10

// TestAllocationBudget runs the split, shadow and fallback benchmarks
// beside the bare forwarder and holds each to its allocations plus
// allocBudget. Counts, not times: it cannot fail on a slow machine. make
// test runs it in its pass without the race detector.
func TestAllocationBudget(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop items; make test runs this test without it")
	}
	if testing.Short() {
		t.Skip("runs four benchmarks")
	}
	// testing.Benchmark reads -test.benchtime, which make test sets to
	// 1x for its one pass over the benchmarks: one request would be all
	// warm-up. A fixed count spreads that over enough requests to vanish.
	bt := flag.Lookup("test.benchtime")
	old := bt.Value.String()
	if err := bt.Value.Set("2000x"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bt.Value.Set(old) })

	br := testing.Benchmark(BenchmarkBareForwarder)
	if br.N == 0 {
		t.Fatal("bare forwarder: the benchmark failed")
	}
	bare := br.AllocsPerOp()
	t.Logf("bare forwarder: %d allocs/op", bare)
	for _, c := range []struct {
		name  string
		bench func(*testing.B)
	}{
		{"split", benchSplit(true)},
		{"shadow", BenchmarkStranglerShadow},
		{"fallback", BenchmarkStranglerFallback},
	} {
		r := testing.Benchmark(c.bench)
		if r.N == 0 {
			t.Fatalf("%s: the benchmark failed", c.name)
		}
		got := r.AllocsPerOp()
		t.Logf("%s: %d allocs/op", c.name, got)
		if got > bare+allocBudget {
			t.Errorf("%s: %d allocs/op, over the bare forwarder's %d + %d", c.name, got, bare, allocBudget)
		}
	}
}
