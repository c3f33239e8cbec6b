package gen

import "testing"

func TestScopedAddsJobAndNamespaceToEverySelector(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`strangler_build_info`, `strangler_build_info{job=~"$job",namespace=~"$namespace"}`},
		{`max(neworders_outbox_dead_events)`, `max(neworders_outbox_dead_events{job=~"$job",namespace=~"$namespace"})`},
		{
			`sum by (route) (rate(strangler_requests_total{route=~"$route",backend="newpath"}[$__rate_interval])) / sum by (route) (rate(strangler_requests_total{route=~"$route"}[$__rate_interval]))`,
			`sum by (route) (rate(strangler_requests_total{job=~"$job",namespace=~"$namespace",route=~"$route",backend="newpath"}[$__rate_interval])) / sum by (route) (rate(strangler_requests_total{job=~"$job",namespace=~"$namespace",route=~"$route"}[$__rate_interval]))`,
		},
		{
			`route_field:strangler_noise_verdict:rate10m{route=~"$route"}`,
			`route_field:strangler_noise_verdict:rate10m{job=~"$job",namespace=~"$namespace",route=~"$route"}`,
		},
		{`time() - max(strangler_config_last_reload_success_timestamp_seconds)`, `time() - max(strangler_config_last_reload_success_timestamp_seconds{job=~"$job",namespace=~"$namespace"})`},
	} {
		if got := scoped(tc.in); got != tc.want {
			t.Errorf("scoped(%s)\n = %s\nwant %s", tc.in, got, tc.want)
		}
	}
}

func TestBoardsBuildWithUniqueTitles(t *testing.T) {
	for _, b := range Boards() {
		d, err := b.Build()
		if err != nil {
			t.Fatalf("%s: %v", b.File, err)
		}
		data, err := Render(b)
		if err != nil || len(data) == 0 || data[len(data)-1] != '\n' {
			t.Fatalf("%s: %d bytes, %v; want JSON ending in a newline", b.File, len(data), err)
		}
		titles := map[string]int{}
		for _, p := range d.Panels {
			if p.Panel != nil && p.Panel.Title != nil {
				titles[p.Panel.Type+" "+*p.Panel.Title]++
			}
		}
		for title, n := range titles {
			if n > 1 {
				t.Errorf("%s: %d panels %q", b.File, n, title)
			}
		}
	}
}
