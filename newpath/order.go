package newpath

import (
	"encoding/json"
	"fmt"
	"time"
)

// Status is the lifecycle state of an order: the legacy statuses, since
// both services read and write the same orders.
type Status string

// The order statuses of docs/order-api.md §2.
const (
	// StatusPaid means the card was charged and the order committed; the
	// warehouse has not accepted the shipment yet. With newpath the outbox
	// relay keeps trying until it does.
	StatusPaid Status = "paid"
	// StatusFulfilled means the warehouse accepted the shipment.
	StatusFulfilled Status = "fulfilled"
	// StatusCancelled means the customer cancelled a paid order.
	StatusCancelled Status = "cancelled"
)

// TimestampLayout is the wire format of every timestamp of the order API:
// RFC 3339 in UTC with exactly three fractional digits, as legacy writes it.
const TimestampLayout = "2006-01-02T15:04:05.000Z07:00"

// Order is one customer order, as stored and as served by the order API.
// It has the fields of the legacy order, in the same order.
type Order struct {
	ID             string
	UserID         int64
	ItemID         string
	Quantity       int
	UnitPriceCents int64
	TotalCents     int64
	Status         Status
	PaymentID      string
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

// orderJSON fixes the field names and their order on the wire; the order of
// keys is part of the byte-for-byte contract.
type orderJSON struct {
	ID             string `json:"id"`
	UserID         int64  `json:"user_id"`
	ItemID         string `json:"item_id"`
	Quantity       int    `json:"quantity"`
	UnitPriceCents int64  `json:"unit_price_cents"`
	TotalCents     int64  `json:"total_cents"`
	Status         Status `json:"status"`
	PaymentID      string `json:"payment_id"`
	CreatedAt      string `json:"created_at"`
	UpdatedAt      string `json:"updated_at"`
}

// MarshalJSON encodes the order in the wire format of docs/order-api.md.
func (o Order) MarshalJSON() ([]byte, error) {
	return json.Marshal(orderJSON{
		ID:             o.ID,
		UserID:         o.UserID,
		ItemID:         o.ItemID,
		Quantity:       o.Quantity,
		UnitPriceCents: o.UnitPriceCents,
		TotalCents:     o.TotalCents,
		Status:         o.Status,
		PaymentID:      o.PaymentID,
		CreatedAt:      o.CreatedAt.UTC().Format(TimestampLayout),
		UpdatedAt:      o.UpdatedAt.UTC().Format(TimestampLayout),
	})
}

// UnmarshalJSON decodes the wire format.
func (o *Order) UnmarshalJSON(data []byte) error {
	var w orderJSON
	if err := json.Unmarshal(data, &w); err != nil {
		return err
	}
	created, err := time.Parse(time.RFC3339Nano, w.CreatedAt)
	if err != nil {
		return fmt.Errorf("decode order created_at: %w", err)
	}
	updated, err := time.Parse(time.RFC3339Nano, w.UpdatedAt)
	if err != nil {
		return fmt.Errorf("decode order updated_at: %w", err)
	}
	*o = Order{
		ID: w.ID, UserID: w.UserID, ItemID: w.ItemID, Quantity: w.Quantity,
		UnitPriceCents: w.UnitPriceCents, TotalCents: w.TotalCents, Status: w.Status,
		PaymentID: w.PaymentID, CreatedAt: created, UpdatedAt: updated,
	}
	return nil
}

// wireTime reduces t to what the wire carries (UTC, whole milliseconds), so
// that an order read back from any store equals the one written, and
// Postgres's microseconds never leak into a comparison.
func wireTime(t time.Time) time.Time {
	return t.UTC().Truncate(time.Millisecond)
}

// User is a customer: newpath needs to know that the user exists and where
// the confirmation mail goes.
type User struct {
	ID    int64
	Name  string
	Email string
}

// Seed is the data a fresh store starts with. The commands build it from
// the legacy simulator's seed (docs/order-api.md §5), which owns that data.
type Seed struct {
	Users  []User
	Orders []Order
}
