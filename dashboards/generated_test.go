package dashboards_test

import (
	"bytes"
	"os"
	"slices"
	"testing"

	"github.com/strangler-proxy/strangler/dashboards/internal/gen"
)

// TestDashboardsAreGenerated requires every committed dashboard to be
// byte for byte what its Go definition renders (dashboards/internal/gen):
// the JSON is an output, edited through the generator only.
func TestDashboardsAreGenerated(t *testing.T) {
	var files []string
	for _, b := range gen.Boards() {
		files = append(files, b.File)
		want, err := gen.Render(b)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(b.File)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("dashboards/%s is stale: run make dashboards", b.File)
		}
	}
	if !slices.Equal(files, dashboardFiles) {
		t.Errorf("the generator writes %v; the tests read %v", files, dashboardFiles)
	}
}

// TestRenderIsStable renders every dashboard twice: map keys and panel
// order must not depend on the run.
func TestRenderIsStable(t *testing.T) {
	for _, b := range gen.Boards() {
		first, err := gen.Render(b)
		if err != nil {
			t.Fatal(err)
		}
		for range 3 {
			again, err := gen.Render(b)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(first, again) {
				t.Fatalf("%s renders differently on a second run", b.File)
			}
		}
	}
}
