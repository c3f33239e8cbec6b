package main

import (
	"io"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseOptions(t *testing.T) {
	noEnv := func(string) string { return "" }
	tests := []struct {
		name  string
		args  []string
		env   map[string]string
		check func(t *testing.T, o options)
	}{
		{"defaults run every row", nil, nil, func(t *testing.T, o options) {
			if !reflect.DeepEqual(o.rows, allRows()) || o.rounds != 4 || o.threads != 1 || o.connections != 32 || o.soak != time.Minute {
				t.Errorf("got rows %v, rounds %d, -t%d -c%d, soak %s; want every row, 4, -t1 -c32, 1m0s", o.rows, o.rounds, o.threads, o.connections, o.soak)
			}
		}},
		{"rows in table order, whatever the order given", []string{"-rows", "strangler-split,bare"}, nil, func(t *testing.T, o options) {
			if want := []string{"bare", "strangler-split"}; !reflect.DeepEqual(o.rows, want) {
				t.Errorf("got rows %v; want %v", o.rows, want)
			}
		}},
		{"the variables of the old run.sh", nil, map[string]string{
			"BENCH_REPEAT": "5", "BENCH_DURATION": "20s", "BENCH_TARGETS": "bare strangler-split", "BENCH_KEEP_TMP": "1",
		}, func(t *testing.T, o options) {
			if o.rounds != 5 || o.duration != 20*time.Second || !reflect.DeepEqual(o.rows, []string{"bare", "strangler-split"}) || !o.keep {
				t.Errorf("got rounds %d, duration %s, rows %v, keep %v; want 5, 20s, [bare strangler-split], true", o.rounds, o.duration, o.rows, o.keep)
			}
		}},
		{"a flag beats its variable", []string{"-rounds", "1"}, map[string]string{"BENCH_REPEAT": "5"}, func(t *testing.T, o options) {
			if o.rounds != 1 {
				t.Errorf("got rounds %d; want 1", o.rounds)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			getenv := noEnv
			if tt.env != nil {
				getenv = func(k string) string { return tt.env[k] }
			}
			o, err := parseOptions(tt.args, getenv, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, o)
		})
	}
}

func TestParseOptionsErrors(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		wantErr string
	}{
		{"unknown row", []string{"-rows", "bare,nginx"}, nil, `unknown row "nginx"`},
		{"no row", []string{"-rows", ","}, nil, "no row"},
		{"zero rounds", []string{"-rounds", "0"}, nil, "-rounds must be at least 1"},
		{"two problems named together", []string{"-rounds", "0", "-path", "orders"}, nil, "-rounds must be at least 1; -path must start with /"},
		{"bad variable", nil, map[string]string{"BENCH_REPEAT": "many"}, `BENCH_REPEAT="many"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseOptions(tt.args, func(k string) string { return tt.env[k] }, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("got error %v; want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestRowsCoverEveryKey(t *testing.T) {
	var keys []string
	for _, r := range (&bench{opt: options{slowLatency: 2 * time.Second}}).rows() {
		keys = append(keys, r.key)
	}
	if !reflect.DeepEqual(keys, allRows()) {
		t.Errorf("got rows %v; want allRows %v in the same order", keys, allRows())
	}
}

func TestRoundOrderAlternates(t *testing.T) {
	a, b, c := &rowResult{row: row{key: "a"}}, &rowResult{row: row{key: "b"}}, &rowResult{row: row{key: "c"}}
	rows := []*rowResult{a, b, c}
	for round, want := range map[int][]*rowResult{1: {a, b, c}, 2: {c, b, a}, 3: {a, b, c}, 4: {c, b, a}} {
		if got := roundOrder(rows, round); !slices.Equal(got, want) {
			t.Errorf("round %d runs %v; want %v", round, keys(got), keys(want))
		}
	}
	if rows[0] != a {
		t.Error("roundOrder reordered the table's rows")
	}
}

func keys(rows []*rowResult) []string {
	var k []string
	for _, r := range rows {
		k = append(k, r.row.key)
	}
	return k
}
