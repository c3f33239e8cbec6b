package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"
	"unicode/utf8"
)

// report is the markdown the harness prints: the header line, the table,
// the verdicts and the notes.
func report(header string, rows []*rowResult, soak *slowShadowSoak, opt options) string {
	byKey := map[string]*rowResult{}
	for _, r := range rows {
		byKey[r.row.key] = r
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "\n%s\n\n", header)
	sb.WriteString(table(rows, byKey[rowNginxSplit], byKey[rowNginxMirror], opt.rounds > 1))

	sb.WriteString("\nTargets (issue 11; the median over the rounds of the ratio within each round):\n\n")
	for _, t := range targets(byKey, soak, opt) {
		fmt.Fprintf(&sb, "- %s\n", t.line())
	}

	var notes []string
	for _, r := range rows {
		for _, p := range r.problems {
			notes = append(notes, fmt.Sprintf("%s: CHECK FAILED: %s", r.row.name, p))
		}
		for _, n := range r.notes {
			notes = append(notes, fmt.Sprintf("%s: %s", r.row.name, n))
		}
	}
	if soak != nil {
		w := soak.wrk
		notes = append(notes, fmt.Sprintf("soak of %gs: %.0f req/s, p50 %.2f ms, p99 %.2f ms, %d non-2xx, %d socket errors; strangler /metrics: %s",
			soak.duration.Seconds(), w.rps, p50ms(w), p99ms(w), w.non2xx, w.socketErrors, soak.counts.summary()))
		for _, p := range soak.problems {
			notes = append(notes, "soak: CHECK FAILED: "+p)
		}
	}
	if len(notes) > 0 {
		sb.WriteString("\nNotes:\n\n")
		for _, n := range notes {
			fmt.Fprintf(&sb, "- %s\n", n)
		}
	}
	return sb.String()
}

// table renders the rows with their ratios against the two nginx rows
// (either may be nil: not measured). With ranges, each cell shows the
// median and, in parentheses, the lowest and highest round.
func table(rows []*rowResult, split, mirror *rowResult, ranges bool) string {
	cells := [][]string{{"row", "req/s", "p50 ms", "p99 ms", "req/s ÷ nginx split", "p99 ÷ nginx split", "req/s ÷ nginx mirror", "p99 ÷ nginx mirror"}}
	cell := func(s spread, format string) string {
		if !ranges {
			return fmt.Sprintf(format, s.median)
		}
		return fmt.Sprintf(format+" ("+format+"–"+format+")", s.median, s.min, s.max)
	}
	versus := func(s spread, base *rowResult, f func(wrkResult) float64) string {
		if base == nil {
			return "–"
		}
		if q, ok := ratio(s.median, base.measure(f).median); ok {
			return fmt.Sprintf("%.2f", q)
		}
		return "–"
	}
	for _, r := range rows {
		q, p50, p99 := r.measure(rps), r.measure(p50ms), r.measure(p99ms)
		name := r.row.name
		if len(r.problems) > 0 {
			name += " (check failed)"
		}
		cells = append(cells, []string{name, cell(q, "%.0f"), cell(p50, "%.2f"), cell(p99, "%.2f"),
			versus(q, split, rps), versus(p99, split, p99ms), versus(q, mirror, rps), versus(p99, mirror, p99ms)})
	}
	return markdownTable(cells)
}

// markdownTable pads cells into aligned columns: the first left-aligned,
// the numbers right-aligned.
func markdownTable(cells [][]string) string {
	widths := make([]int, len(cells[0]))
	for _, row := range cells {
		for i, c := range row {
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	var sb strings.Builder
	line := func(row []string, pad func(i int, c string) string) {
		sb.WriteString("|")
		for i, c := range row {
			sb.WriteString(" " + pad(i, c) + " |")
		}
		sb.WriteString("\n")
	}
	align := func(i int, c string) string {
		fill := strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c))
		if i == 0 {
			return c + fill
		}
		return fill + c
	}
	line(cells[0], align)
	line(cells[0], func(i int, _ string) string {
		if i == 0 {
			return strings.Repeat("-", widths[i])
		}
		return strings.Repeat("-", widths[i]-1) + ":"
	})
	for _, row := range cells[1:] {
		line(row, align)
	}
	return sb.String()
}

// targets are issue 11's goals for make bench, judged on the rows in byKey
// (a missing row gives n/a), round by round, and on the soak (nil: not run).
func targets(byKey map[string]*rowResult, soak *slowShadowSoak, opt options) []target {
	// versus is the median of the paired ratios of f of rows a and b.
	versus := func(label, a, b string, f func(wrkResult) float64, op string, limit float64) condition {
		c := condition{label: label, op: op, limit: limit, unit: "×"}
		ra, rb := byKey[a], byKey[b]
		if ra == nil || rb == nil {
			return c
		}
		if q, ok := pairedRatios(ra.values(f), rb.values(f)); ok {
			c.value, c.measured = q.median, true
			c.rounds, c.lowest, c.highest = len(ra.samples), q.min, q.max
		}
		return c
	}
	// caveat names the rows whose own check failed.
	caveat := func(keys ...string) string {
		var failed []string
		for _, k := range keys {
			if r := byKey[k]; r != nil && len(r.problems) > 0 {
				failed = append(failed, r.row.name)
			}
		}
		if len(failed) == 0 {
			return ""
		}
		return "but the check of " + strings.Join(failed, ", ") + " failed (see notes)"
	}

	rss := condition{label: "VmRSS", op: "<", limit: 150, unit: " MB"}
	soakName := fmt.Sprintf("strangler VmRSS after %gs of shadow 100%% to the %s newpath", opt.soak.Seconds(), opt.slowLatency)
	soakCaveat := ""
	if soak != nil {
		rss.value, rss.measured = soak.rssMB, true
		if len(soak.problems) > 0 {
			soakCaveat = "but the soak's check failed (see notes)"
		}
	}
	return []target{
		{
			name: "strangler split 10% vs nginx split_clients 10%",
			conditions: []condition{
				versus("req/s", rowStranglerSplit, rowNginxSplit, rps, "≥", 0.8),
				versus("p99", rowStranglerSplit, rowNginxSplit, p99ms, "≤", 1.5),
			},
			caveat: caveat(rowStranglerSplit, rowNginxSplit),
		},
		{
			name:       "strangler shadow 100% + compare vs nginx mirror 100%",
			conditions: []condition{versus("req/s", rowStranglerShadow, rowNginxMirror, rps, "≥", 2.0)},
			caveat:     caveat(rowStranglerShadow, rowNginxMirror),
		},
		{
			name:       fmt.Sprintf("client p99 with a %s newpath, shadow 100%% vs shadow off", opt.slowLatency),
			conditions: []condition{versus("p99", rowSlowShadow, rowSlowOff, p99ms, "≤", 1.1)},
			caveat:     caveat(rowSlowShadow, rowSlowOff),
		},
		{name: soakName, conditions: []condition{rss}, caveat: soakCaveat},
	}
}

// cpuBusy is how busy all cores were during one second, in percent, from
// /proc/stat: before the bench starts anything and after it stopped
// everything, that is someone else's load on the cores the rows share.
// Negative: unknown.
func cpuBusy(ctx context.Context) float64 {
	read := func() (busy, idle float64, ok bool) {
		b, err := os.ReadFile("/proc/stat")
		if err != nil {
			return 0, 0, false
		}
		// cpu user nice system idle iowait irq softirq steal ...
		f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])
		if len(f) < 9 || f[0] != "cpu" {
			return 0, 0, false
		}
		var v [8]float64
		for i := range v {
			fmt.Sscan(f[i+1], &v[i])
		}
		return v[0] + v[1] + v[2] + v[5] + v[6] + v[7], v[3] + v[4], true
	}
	b0, i0, ok0 := read()
	select {
	case <-ctx.Done():
		return -1
	case <-time.After(time.Second):
	}
	b1, i1, ok1 := read()
	if !ok0 || !ok1 || b1+i1-b0-i0 <= 0 {
		return -1
	}
	return 100 * (b1 - b0) / (b1 + i1 - b0 - i0)
}

// percent formats a cpuBusy reading.
func percent(v float64) string {
	if v < 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.0f%%", v)
}

// busyLimit is the load of others, in percent of all cores, above which
// the report warns that its numbers are noisy.
const busyLimit = 10

// busyWarning is the report's warning when the CPU was busy without the
// bench (before it started or after it stopped everything), else "".
func busyWarning(before, after float64) string {
	if before <= busyLimit && after <= busyLimit {
		return ""
	}
	return fmt.Sprintf("**Warning**: the CPU was %.0f%% busy before and %.0f%% after the bench, with none of its processes running: "+
		"someone else's load shared the cores during the rounds, so these numbers are noisy; rerun on an idle machine.", before, after)
}
