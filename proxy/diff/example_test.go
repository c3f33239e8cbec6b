package diff_test

import (
	"fmt"
	"net/http"

	"github.com/strangler-proxy/strangler/proxy/diff"
)

func ExampleComparer_Compare() {
	c, err := diff.New(diff.Options{
		Headers: []string{"content-type"},
		Ignore:  []string{"/body/updated_at"},
	})
	if err != nil {
		panic(err)
	}
	legacy := diff.Response{
		Status: 200,
		Header: http.Header{"Content-Type": {"application/json"}},
		Body:   []byte(`{"id":"ord_1","items":[{"sku":"A","price_cents":1299}],"updated_at":"10:00:00"}`),
	}
	newpath := diff.Response{
		Status: 200,
		Header: http.Header{"Content-Type": {"application/json; charset=utf-8"}},
		Body:   []byte(`{"items":[{"price_cents":1399,"sku":"A"}],"id":"ord_1","updated_at":"10:00:01"}`),
	}
	diffs, err := c.Compare(legacy, newpath)
	if err != nil {
		panic(err)
	}
	for _, d := range diffs {
		fmt.Printf("%s %s (%s): %s -> %s\n", d.Kind, d.At, d.Path, d.Legacy, d.Newpath)
	}
	// Output:
	// value /body/items/0/price_cents (/body/items/*/price_cents): 1299 -> 1399
	// value /headers/content-type (/headers/content-type): "application/json" -> "application/json; charset=utf-8"
}
