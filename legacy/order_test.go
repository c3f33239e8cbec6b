package legacy

import (
	"encoding/json"
	"testing"
	"time"
)

func TestOrderJSONRoundTrip(t *testing.T) {
	at := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	o := Order{ID: "ord_3", UserID: 2, ItemID: "sku-3", Quantity: 1, UnitPriceCents: 399, TotalCents: 399, Status: StatusPaid, PaymentID: "pay_3", CreatedAt: at, UpdatedAt: at.Add(1500 * time.Microsecond)}
	b, err := json.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	// Fixed width: ".000" is kept, sub-millisecond digits are dropped.
	want := `{"id":"ord_3","user_id":2,"item_id":"sku-3","quantity":1,"unit_price_cents":399,"total_cents":399,"status":"paid","payment_id":"pay_3","created_at":"2025-03-04T05:06:07.000Z","updated_at":"2025-03-04T05:06:07.001Z"}`
	if string(b) != want {
		t.Errorf("Marshal = %s; want %s", b, want)
	}
	var back Order
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	o.UpdatedAt = wireTime(o.UpdatedAt)
	if !back.CreatedAt.Equal(o.CreatedAt) || !back.UpdatedAt.Equal(o.UpdatedAt) || back.ID != o.ID || back.TotalCents != o.TotalCents {
		t.Errorf("round trip = %+v; want %+v", back, o)
	}
	if err := json.Unmarshal([]byte(`{"created_at":"yesterday"}`), &back); err == nil {
		t.Error("Unmarshal of a bad timestamp succeeded; want an error")
	}
}

func TestFaultsJSON(t *testing.T) {
	f := Faults{Payments: ServiceFaults{Latency: 2 * time.Second, ErrorRate: 0.25}, Warehouse: ServiceFaults{Down: true}}
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	var back Faults
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back != f {
		t.Errorf("round trip of %s = %+v; want %+v", b, back, f)
	}
}
