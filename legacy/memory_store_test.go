package legacy

import (
	"errors"
	"sync"
	"testing"
	"time"
)

func newSeededStore(t *testing.T) *MemoryStore {
	t.Helper()
	s, err := NewMemoryStore(DefaultSeed())
	if err != nil {
		t.Fatalf("NewMemoryStore: %v", err)
	}
	return s
}

func TestMemoryStoreSeed(t *testing.T) {
	s := newSeededStore(t)
	ctx := t.Context()
	for _, id := range []int64{1, SeedUserCount} {
		if u, err := s.GetUser(ctx, id); err != nil || u.Email == "" {
			t.Errorf("GetUser(%d) = %+v, %v; want a seeded user", id, u, err)
		}
	}
	if _, err := s.GetUser(ctx, SeedUserCount+1); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetUser(%d) error = %v; want ErrNotFound", SeedUserCount+1, err)
	}
	wantStatus := map[string]Status{"ord_1": StatusFulfilled, "ord_6": StatusFulfilled, "ord_7": StatusPaid, "ord_8": StatusPaid, "ord_9": StatusCancelled, "ord_10": StatusCancelled}
	for id, want := range wantStatus {
		o, err := s.GetOrder(ctx, id)
		if err != nil || o.Status != want {
			t.Errorf("GetOrder(%s) = %s, %v; want status %s", id, o.Status, err, want)
		}
	}
	if _, err := NewMemoryStore(Seed{Users: []User{{ID: 1}, {ID: 1}}}); !errors.Is(err, ErrDuplicate) {
		t.Errorf("seed with a repeated user: error = %v; want ErrDuplicate", err)
	}
}

func TestMemoryStoreCreateOrder(t *testing.T) {
	s := newSeededStore(t)
	ctx := t.Context()
	at := time.Date(2025, 1, 2, 3, 4, 5, 678_901_234, time.FixedZone("x", 3600))

	o, err := s.CreateOrder(ctx, Order{UserID: 9, CreatedAt: at, UpdatedAt: at})
	if err != nil {
		t.Fatal(err)
	}
	if o.ID != "ord_11" {
		t.Errorf("first generated id = %s; want ord_11 (after the seeded ord_1..ord_10)", o.ID)
	}
	if want := time.Date(2025, 1, 2, 2, 4, 5, 678_000_000, time.UTC); !o.CreatedAt.Equal(want) || o.CreatedAt.Location() != time.UTC {
		t.Errorf("CreatedAt = %v; want %v: UTC, whole milliseconds, as the wire carries it", o.CreatedAt, want)
	}
	if got, _ := s.GetOrder(ctx, o.ID); got != o {
		t.Errorf("GetOrder = %+v; want %+v", got, o)
	}

	// An explicit id takes a slot of the sequence, which then skips it.
	if _, err := s.CreateOrder(ctx, Order{ID: "ord_12", UserID: 9}); err != nil {
		t.Fatal(err)
	}
	if next, _ := s.CreateOrder(ctx, Order{UserID: 9}); next.ID != "ord_13" {
		t.Errorf("id after an explicit ord_12 = %s; want ord_13", next.ID)
	}
	if _, err := s.CreateOrder(ctx, Order{ID: "ord_1"}); !errors.Is(err, ErrDuplicate) {
		t.Errorf("CreateOrder(ord_1) error = %v; want ErrDuplicate", err)
	}
}

func TestMemoryStoreListOrder(t *testing.T) {
	s, err := NewMemoryStore(Seed{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	// Inserted out of order, with a tie on created_at broken by id.
	for _, o := range []Order{
		{ID: "c", UserID: 1, CreatedAt: t0.Add(time.Hour)},
		{ID: "b", UserID: 1, CreatedAt: t0},
		{ID: "a", UserID: 1, CreatedAt: t0},
		{ID: "x", UserID: 2, CreatedAt: t0},
	} {
		if _, err := s.CreateOrder(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	list, err := s.ListOrdersByUser(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, o := range list {
		ids = append(ids, o.ID)
	}
	if got, want := ids, []string{"a", "b", "c"}; len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Errorf("list = %v; want %v", got, want)
	}
	if list, err := s.ListOrdersByUser(ctx, 99); err != nil || len(list) != 0 {
		t.Errorf("list of a user without orders = %v, %v; want empty, nil", list, err)
	}
}

func TestMemoryStoreTransition(t *testing.T) {
	tests := []struct {
		name    string
		id      string
		from    Status
		to      Status
		wantErr error
	}{
		{"paid to cancelled", "ord_7", StatusPaid, StatusCancelled, nil},
		{"paid to fulfilled", "ord_8", StatusPaid, StatusFulfilled, nil},
		{"not in the from status", "ord_1", StatusPaid, StatusCancelled, ErrStatusConflict},
		{"unknown order", "ord_0", StatusPaid, StatusCancelled, ErrNotFound},
	}
	at := time.Date(2025, 5, 5, 5, 5, 5, 0, time.UTC)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSeededStore(t)
			before, _ := s.GetOrder(t.Context(), tt.id)
			got, err := s.TransitionOrder(t.Context(), tt.id, tt.from, tt.to, at)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error = %v; want %v", err, tt.wantErr)
			}
			after, _ := s.GetOrder(t.Context(), tt.id)
			if tt.wantErr != nil {
				if after != before {
					t.Errorf("a failed transition changed the order from %+v to %+v", before, after)
				}
				return
			}
			if got.Status != tt.to || !got.UpdatedAt.Equal(at) || got != after {
				t.Errorf("transitioned order = %+v (stored %+v); want status %s updated at %v", got, after, tt.to, at)
			}
		})
	}
}

// TestMemoryStoreConcurrency runs writers against each other under -race:
// ids stay unique and exactly one of many concurrent cancels wins.
func TestMemoryStoreConcurrency(t *testing.T) {
	s := newSeededStore(t)
	ctx := t.Context()
	const writers = 50
	ids := make(chan string, writers)
	cancels := make(chan error, writers)
	var wg sync.WaitGroup
	for range writers {
		wg.Go(func() {
			o, err := s.CreateOrder(ctx, Order{UserID: 500})
			if err != nil {
				ids <- "error: " + err.Error()
				return
			}
			ids <- o.ID
		})
		wg.Go(func() {
			_, err := s.TransitionOrder(ctx, "ord_8", StatusPaid, StatusCancelled, time.Now())
			cancels <- err
		})
	}
	wg.Wait()
	close(ids)
	close(cancels)
	seen := map[string]bool{}
	for id := range ids {
		if seen[id] {
			t.Errorf("id %s handed out twice", id)
		}
		seen[id] = true
	}
	won := 0
	for err := range cancels {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, ErrStatusConflict):
			t.Errorf("cancel error = %v; want nil or ErrStatusConflict", err)
		}
	}
	if won != 1 {
		t.Errorf("%d concurrent cancels succeeded; want exactly 1", won)
	}
	if list, _ := s.ListOrdersByUser(ctx, 500); len(list) != writers {
		t.Errorf("listed %d orders; want %d", len(list), writers)
	}
}
