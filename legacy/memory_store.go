package legacy

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"
)

// MemoryStore is an in-memory Store, safe for concurrent use. It is what
// legacyorders runs on without --database-url (PostgresStore with it).
type MemoryStore struct {
	mu     sync.RWMutex
	users  map[int64]User
	orders map[string]Order
	// byUser keeps each user's order ids so that a listing does not scan
	// every order of the store.
	byUser map[int64][]string
	// nextSeq is the next candidate of the "ord_<n>" sequence.
	nextSeq int64
}

var _ Store = (*MemoryStore)(nil)

// NewMemoryStore returns a store holding seed. It fails when the seed
// repeats a user or order id.
func NewMemoryStore(seed Seed) (*MemoryStore, error) {
	s := &MemoryStore{
		users:   make(map[int64]User, len(seed.Users)),
		orders:  make(map[string]Order, len(seed.Orders)),
		byUser:  make(map[int64][]string),
		nextSeq: 1,
	}
	for _, u := range seed.Users {
		if _, ok := s.users[u.ID]; ok {
			return nil, fmt.Errorf("seed memory store: user %d: %w", u.ID, ErrDuplicate)
		}
		s.users[u.ID] = u
	}
	for _, o := range seed.Orders {
		if _, err := s.CreateOrder(context.Background(), o); err != nil {
			return nil, fmt.Errorf("seed memory store: %w", err)
		}
	}
	return s, nil
}

// GetUser implements Store.
func (s *MemoryStore) GetUser(_ context.Context, id int64) (User, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	u, ok := s.users[id]
	if !ok {
		return User{}, fmt.Errorf("get user %d: %w", id, ErrNotFound)
	}
	return u, nil
}

// GetOrder implements Store.
func (s *MemoryStore) GetOrder(_ context.Context, id string) (Order, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	o, ok := s.orders[id]
	if !ok {
		return Order{}, fmt.Errorf("get order %q: %w", id, ErrNotFound)
	}
	return o, nil
}

// ListOrdersByUser implements Store.
func (s *MemoryStore) ListOrdersByUser(_ context.Context, userID int64) ([]Order, error) {
	s.mu.RLock()
	ids := s.byUser[userID]
	out := make([]Order, 0, len(ids))
	for _, id := range ids {
		out = append(out, s.orders[id])
	}
	s.mu.RUnlock()
	// Sorting rather than trusting insertion order keeps the documented order
	// even when an injected clock or an explicit seed is not monotonic.
	slices.SortFunc(out, compareOrders)
	return out, nil
}

// compareOrders is the listing order of docs/order-api.md: oldest first,
// ties broken by id.
func compareOrders(a, b Order) int {
	if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
		return c
	}
	return cmp.Compare(a.ID, b.ID)
}

// CreateOrder implements Store.
func (s *MemoryStore) CreateOrder(_ context.Context, o Order) (Order, error) {
	o.CreatedAt = wireTime(o.CreatedAt)
	o.UpdatedAt = wireTime(o.UpdatedAt)
	s.mu.Lock()
	defer s.mu.Unlock()
	if o.ID == "" {
		o.ID = s.nextOrderIDLocked()
	} else if _, ok := s.orders[o.ID]; ok {
		return Order{}, fmt.Errorf("create order %q: %w", o.ID, ErrDuplicate)
	}
	s.orders[o.ID] = o
	s.byUser[o.UserID] = append(s.byUser[o.UserID], o.ID)
	return o, nil
}

// nextOrderIDLocked draws the next free id of the sequence; ids taken by
// explicit inserts (the seed, or another writer choosing its own ids) are
// skipped rather than reported, as a sequence behind a unique key would
// eventually do. s.mu must be held for writing.
func (s *MemoryStore) nextOrderIDLocked() string {
	for {
		id := "ord_" + strconv.FormatInt(s.nextSeq, 10)
		s.nextSeq++
		if _, taken := s.orders[id]; !taken {
			return id
		}
	}
}

// TransitionOrder implements Store.
func (s *MemoryStore) TransitionOrder(_ context.Context, id string, from, to Status, at time.Time) (Order, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.orders[id]
	if !ok {
		return Order{}, fmt.Errorf("transition order %q: %w", id, ErrNotFound)
	}
	if o.Status != from {
		return Order{}, fmt.Errorf("transition order %q from %s to %s: status is %s: %w", id, from, to, o.Status, ErrStatusConflict)
	}
	o.Status = to
	o.UpdatedAt = wireTime(at)
	s.orders[id] = o
	return o, nil
}
