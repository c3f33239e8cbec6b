package legacy

import (
	"strconv"
	"time"
)

// Seed is the data a fresh store starts with.
type Seed struct {
	Users  []User
	Orders []Order
}

// Seed sizes and well-known ids, documented in docs/order-api.md; tests and
// benchmarks rely on them.
const (
	// SeedUserCount is the number of seeded users; ids 1..SeedUserCount exist.
	SeedUserCount = 1000
	// SeedItemCount is the number of regular catalogue items sku-1..sku-N.
	SeedItemCount = 50
	// SeedItemStock is the starting stock of every regular item; large enough
	// that a benchmark does not sell the catalogue out.
	SeedItemStock = 1_000_000
	// OutOfStockItemID is the catalogue item that never has stock.
	OutOfStockItemID = "sku-oos"
	// FirstPaymentNumber is where the fake payment service starts numbering
	// payments ("pay_1001"), past the seeded orders' payment ids.
	FirstPaymentNumber = 1001
)

// DefaultSeed returns the users and orders legacyorders starts with: users
// 1..SeedUserCount and the ten orders ord_1..ord_10 of docs/order-api.md.
// Every call returns fresh slices, so callers may modify them.
func DefaultSeed() Seed {
	users := make([]User, 0, SeedUserCount)
	for id := int64(1); id <= SeedUserCount; id++ {
		name := "user-" + strconv.FormatInt(id, 10)
		users = append(users, User{ID: id, Name: name, Email: name + "@example.com"})
	}
	type seedOrder struct {
		user     int64
		item     int
		quantity int
		status   Status
	}
	// A mix of statuses, so that a cancel (only paid orders), a 409 (the
	// others) and a listing with several orders all work right after start.
	table := []seedOrder{
		{user: 1, item: 1, quantity: 1, status: StatusFulfilled},
		{user: 1, item: 2, quantity: 2, status: StatusFulfilled},
		{user: 2, item: 3, quantity: 1, status: StatusFulfilled},
		{user: 2, item: 10, quantity: 3, status: StatusFulfilled},
		{user: 3, item: 5, quantity: 1, status: StatusFulfilled},
		{user: 3, item: 6, quantity: 2, status: StatusFulfilled},
		{user: 4, item: 7, quantity: 1, status: StatusPaid},
		{user: 4, item: 8, quantity: 1, status: StatusPaid},
		{user: 5, item: 9, quantity: 1, status: StatusCancelled},
		{user: 5, item: 20, quantity: 5, status: StatusCancelled},
	}
	// Fixed, not "now", so that a seeded order reads back identically on
	// every run.
	seedEpoch := time.Date(2024, time.January, 1, 9, 0, 0, 0, time.UTC)
	orders := make([]Order, 0, len(table))
	for i, row := range table {
		n := strconv.Itoa(i + 1)
		created := seedEpoch.Add(time.Duration(i) * time.Hour)
		updated := created
		if row.status == StatusCancelled {
			updated = created.Add(24 * time.Hour)
		}
		price := itemPriceCents(row.item)
		orders = append(orders, Order{
			ID:             "ord_" + n,
			UserID:         row.user,
			ItemID:         itemID(row.item),
			Quantity:       row.quantity,
			UnitPriceCents: price,
			TotalCents:     price * int64(row.quantity),
			Status:         row.status,
			PaymentID:      "pay_" + n,
			CreatedAt:      created,
			UpdatedAt:      updated,
		})
	}
	return Seed{Users: users, Orders: orders}
}

// DefaultCatalogue returns the fake inventory's items: sku-1..sku-50 priced
// n*100+99 cents with SeedItemStock units each, and OutOfStockItemID with
// none. Every call returns a fresh slice.
func DefaultCatalogue() []Item {
	items := make([]Item, 0, SeedItemCount+1)
	for n := 1; n <= SeedItemCount; n++ {
		items = append(items, Item{ID: itemID(n), PriceCents: itemPriceCents(n), Available: SeedItemStock})
	}
	return append(items, Item{ID: OutOfStockItemID, PriceCents: 999, Available: 0})
}

func itemID(n int) string { return "sku-" + strconv.Itoa(n) }

func itemPriceCents(n int) int64 { return int64(n)*100 + 99 }
