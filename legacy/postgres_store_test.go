package legacy_test

import (
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/strangler-proxy/strangler/legacy"
	// The schema PostgresStore runs on belongs to the newpath, whose
	// migrations create it; only this test imports it, to set one up.
	"github.com/strangler-proxy/strangler/newpath"
	"github.com/strangler-proxy/strangler/newpath/pgtest"
)

func newLegacyPostgresStore(t *testing.T) legacy.Store {
	t.Helper()
	pool := pgtest.Pool(t)
	if _, err := newpath.Migrate(t.Context(), pool); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	s, err := legacy.NewPostgresStore(pool)
	if err != nil {
		t.Fatal(err)
	}
	// Twice: seeding is idempotent, as every start of legacyorders does it.
	for range 2 {
		if err := s.Seed(t.Context(), legacy.DefaultSeed()); err != nil {
			t.Fatalf("Seed: %v", err)
		}
	}
	return s
}

func newLegacyMemoryStore(t *testing.T) legacy.Store {
	t.Helper()
	s, err := legacy.NewMemoryStore(legacy.DefaultSeed())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestStoreImplementations checks the Postgres store against the contract
// the memory store already meets, with the same cases on both.
func TestStoreImplementations(t *testing.T) {
	for _, impl := range []struct {
		name string
		new  func(t *testing.T) legacy.Store
	}{
		{"memory", newLegacyMemoryStore},
		{"postgres", newLegacyPostgresStore},
	} {
		t.Run(impl.name, func(t *testing.T) {
			t.Parallel()
			t.Run("seed", func(t *testing.T) {
				s := impl.new(t)
				ctx := t.Context()
				if u, err := s.GetUser(ctx, legacy.SeedUserCount); err != nil || u.Email != "user-1000@example.com" {
					t.Errorf("GetUser(1000) = %+v, %v", u, err)
				}
				if _, err := s.GetUser(ctx, legacy.SeedUserCount+1); !errors.Is(err, legacy.ErrNotFound) {
					t.Errorf("GetUser(1001) error = %v; want ErrNotFound", err)
				}
				for _, want := range legacy.DefaultSeed().Orders {
					if got, err := s.GetOrder(ctx, want.ID); err != nil || got != want {
						t.Errorf("GetOrder(%s) = %+v, %v; want %+v", want.ID, got, err, want)
					}
				}
				list, err := s.ListOrdersByUser(ctx, 1)
				if err != nil || len(list) != 2 || list[0].ID != "ord_1" || list[1].ID != "ord_2" {
					t.Errorf("ListOrdersByUser(1) = %v, %v; want ord_1, ord_2", list, err)
				}
				if list, err := s.ListOrdersByUser(ctx, 999); err != nil || len(list) != 0 {
					t.Errorf("ListOrdersByUser(999) = %v, %v; want empty", list, err)
				}
			})
			t.Run("create", func(t *testing.T) {
				s := impl.new(t)
				ctx := t.Context()
				at := time.Date(2025, 1, 2, 3, 4, 5, 678_901_234, time.UTC)
				o, err := s.CreateOrder(ctx, legacy.Order{UserID: 9, ItemID: "sku-1", Quantity: 1, Status: legacy.StatusPaid, CreatedAt: at, UpdatedAt: at})
				if err != nil || o.ID != "ord_11" || !o.CreatedAt.Equal(at.Truncate(time.Millisecond)) {
					t.Fatalf("CreateOrder = %+v, %v; want ord_11 at whole milliseconds", o, err)
				}
				if got, _ := s.GetOrder(ctx, o.ID); got != o {
					t.Errorf("GetOrder = %+v; want %+v", got, o)
				}
				if _, err := s.CreateOrder(ctx, legacy.Order{ID: "ord_12", UserID: 9, Status: legacy.StatusPaid, CreatedAt: at, UpdatedAt: at}); err != nil {
					t.Fatal(err)
				}
				if next, _ := s.CreateOrder(ctx, legacy.Order{UserID: 9, Status: legacy.StatusPaid, CreatedAt: at, UpdatedAt: at}); next.ID != "ord_13" {
					t.Errorf("id after an explicit ord_12 = %s; want ord_13", next.ID)
				}
				if _, err := s.CreateOrder(ctx, legacy.Order{ID: "ord_1", Status: legacy.StatusPaid, CreatedAt: at, UpdatedAt: at}); !errors.Is(err, legacy.ErrDuplicate) {
					t.Errorf("CreateOrder(ord_1) error = %v; want ErrDuplicate", err)
				}
				// Same created_at: ties broken by id, byte-wise.
				list, _ := s.ListOrdersByUser(ctx, 9)
				var ids []string
				for _, o := range list {
					ids = append(ids, o.ID)
				}
				if want := []string{"ord_11", "ord_12", "ord_13"}; !slices.Equal(ids, want) {
					t.Errorf("list = %v; want %v", ids, want)
				}
			})
			t.Run("transition", func(t *testing.T) {
				s := impl.new(t)
				ctx := t.Context()
				at := time.Date(2025, 5, 5, 5, 5, 5, 0, time.UTC)
				if o, err := s.TransitionOrder(ctx, "ord_7", legacy.StatusPaid, legacy.StatusCancelled, at); err != nil || o.Status != legacy.StatusCancelled || !o.UpdatedAt.Equal(at) {
					t.Errorf("cancel ord_7 = %+v, %v", o, err)
				}
				if _, err := s.TransitionOrder(ctx, "ord_1", legacy.StatusPaid, legacy.StatusCancelled, at); !errors.Is(err, legacy.ErrStatusConflict) {
					t.Errorf("cancel fulfilled ord_1 error = %v; want ErrStatusConflict", err)
				}
				if _, err := s.TransitionOrder(ctx, "ord_0", legacy.StatusPaid, legacy.StatusCancelled, at); !errors.Is(err, legacy.ErrNotFound) {
					t.Errorf("cancel ord_0 error = %v; want ErrNotFound", err)
				}
				var wg sync.WaitGroup
				var mu sync.Mutex
				won := 0
				for range 20 {
					wg.Go(func() {
						if _, err := s.TransitionOrder(ctx, "ord_8", legacy.StatusPaid, legacy.StatusCancelled, at); err == nil {
							mu.Lock()
							won++
							mu.Unlock()
						}
					})
				}
				wg.Wait()
				if won != 1 {
					t.Errorf("%d concurrent cancels of ord_8 won; want 1", won)
				}
			})
		})
	}
}
