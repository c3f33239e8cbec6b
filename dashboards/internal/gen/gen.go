// Package gen defines the Grafana dashboards of dashboards/ in Go, with the
// Grafana Foundation SDK, and renders them as the JSON files Grafana
// provisions. `make dashboards` writes them; a test in dashboards/ fails
// when a committed file differs from what this package renders.
//
// Every PromQL expression is written as it reads on the dashboard, minus
// the scope: scoped adds job=~"$job",namespace=~"$namespace" to each of its
// selectors, so that one Prometheus can hold several migrations (or
// several environments of one) and every panel shows only the selected
// ones.
package gen

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// SchemaVersion is the dashboard model version the files are written in:
// the classic model as Grafana 11.0 to 11.2 save it, which later Grafana
// versions migrate forward on load. The SDK's default is newer.
const SchemaVersion = 39

// Board is one dashboard file.
type Board struct {
	File  string // file name in dashboards/
	Build func() (dashboard.Dashboard, error)
}

// Boards lists the dashboards, in the order of dashboards/README.md.
func Boards() []Board {
	return []Board{
		{"strangler-overview.json", overview},
		{"strangler-divergence.json", divergence},
		{"neworders-outbox.json", outbox},
	}
}

// Render builds b and formats it the one way the committed files are
// formatted: two-space indented JSON, map keys sorted, a final newline.
func Render(b Board) ([]byte, error) {
	d, err := b.Build()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.File, err)
	}
	d.SchemaVersion = SchemaVersion
	numberPanels(d.Panels)
	tidy(&d)
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // keep → and & readable in the files
	enc.SetIndent("", "  ")
	if err := enc.Encode(d); err != nil {
		return nil, fmt.Errorf("%s: %w", b.File, err)
	}
	return buf.Bytes(), nil
}

// Write renders every board into dir.
func Write(dir string) error {
	for _, b := range Boards() {
		data, err := Render(b)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, b.File), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// numberPanels gives every panel and row its id, in order: the builders
// leave ids to the caller, and Grafana wants them unique per dashboard.
func numberPanels(panels []dashboard.PanelOrRowPanel) {
	for i, p := range panels {
		id := uint32(i + 1)
		switch {
		case p.Panel != nil:
			p.Panel.Id = &id
		case p.RowPanel != nil:
			p.RowPanel.Id = id
		}
	}
}

// tidy drops what the SDK sets by default for newer schema versions than
// 39 and that Grafana 11 has no use for: the placement of links and
// annotation toggles (Grafana 12 would move them into a menu) and the
// auto-interval fields of variables that are not interval variables.
func tidy(d *dashboard.Dashboard) {
	for i := range d.Links {
		d.Links[i].Placement = nil
	}
	for i := range d.Annotations.List {
		d.Annotations.List[i].Placement = nil
	}
	for i := range d.Templating.List {
		v := &d.Templating.List[i]
		v.Auto, v.AutoMin, v.AutoCount = nil, nil, nil
	}
	for _, p := range d.Panels {
		if p.Panel == nil || p.Panel.FieldConfig == nil {
			continue
		}
		links := p.Panel.FieldConfig.Defaults.Links
		for i := range links {
			links[i].Placement = nil
		}
	}
}
