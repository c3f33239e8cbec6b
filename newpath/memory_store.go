package newpath

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"
)

// MemoryStore is an in-memory Store with the semantics of PostgresStore,
// checked by the same suite. It is what neworders runs on without a
// database, and what strangler demo shares between legacy and newpath.
type MemoryStore struct {
	mu     sync.Mutex
	users  map[int64]User
	orders map[string]Order
	// byUser keeps each user's order ids, so that a listing does not scan
	// every order.
	byUser map[int64][]string
	// nextSeq is the next candidate of the "ord_<n>" sequence. Like a
	// database sequence, a number drawn by a transaction that rolls back is
	// not reused.
	nextSeq int64
	keys    map[string]*IdempotencyRecord
	events  map[string]*Event
	// pending holds the events not delivered nor dead, so that a claim does
	// not walk the delivered history.
	pending map[string]*Event
	// byOrder keeps each order's event ids in insertion order.
	byOrder map[string][]string
	dead    int
}

var _ Store = (*MemoryStore)(nil)

// NewMemoryStore returns a store holding seed. It fails when the seed
// repeats a user or an order id.
func NewMemoryStore(seed Seed) (*MemoryStore, error) {
	s := &MemoryStore{
		users:   make(map[int64]User, len(seed.Users)),
		orders:  make(map[string]Order, len(seed.Orders)),
		byUser:  make(map[int64][]string),
		nextSeq: 1,
		keys:    make(map[string]*IdempotencyRecord),
		events:  make(map[string]*Event),
		pending: make(map[string]*Event),
		byOrder: make(map[string][]string),
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
	s.mu.Lock()
	defer s.mu.Unlock()
	u, ok := s.users[id]
	if !ok {
		return User{}, fmt.Errorf("get user %d: %w", id, ErrNotFound)
	}
	return u, nil
}

// GetOrder implements Store.
func (s *MemoryStore) GetOrder(_ context.Context, id string) (Order, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.orders[id]
	if !ok {
		return Order{}, fmt.Errorf("get order %q: %w", id, ErrNotFound)
	}
	return o, nil
}

// ListOrdersByUser implements Store.
func (s *MemoryStore) ListOrdersByUser(_ context.Context, userID int64) ([]Order, error) {
	s.mu.Lock()
	ids := s.byUser[userID]
	out := make([]Order, 0, len(ids))
	for _, id := range ids {
		out = append(out, s.orders[id])
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b Order) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	return out, nil
}

// CreateOrder implements Store.
func (s *MemoryStore) CreateOrder(_ context.Context, o Order) (Order, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if o.ID == "" {
		o.ID = s.nextOrderIDLocked()
	}
	return s.insertOrderLocked(o)
}

func (s *MemoryStore) insertOrderLocked(o Order) (Order, error) {
	if _, ok := s.orders[o.ID]; ok {
		return Order{}, fmt.Errorf("create order %q: %w", o.ID, ErrDuplicate)
	}
	o.CreatedAt = wireTime(o.CreatedAt)
	o.UpdatedAt = wireTime(o.UpdatedAt)
	s.orders[o.ID] = o
	s.byUser[o.UserID] = append(s.byUser[o.UserID], o.ID)
	return o, nil
}

// nextOrderIDLocked draws the next free id of the sequence, skipping ids
// taken by explicit inserts. s.mu must be held.
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
	return s.transitionLocked(id, from, to, at)
}

func (s *MemoryStore) transitionLocked(id string, from, to Status, at time.Time) (Order, error) {
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

// ClaimIdempotencyKey implements Store.
func (s *MemoryStore) ClaimIdempotencyKey(_ context.Context, claim KeyClaim, now time.Time) (IdempotencyRecord, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.keys[claim.Key]
	if ok && (k.OrderID != "" || k.Fingerprint != claim.Fingerprint || k.ClaimedUntil.After(wireTime(now))) {
		return cloneRecord(*k), false, nil
	}
	if !ok {
		k = &IdempotencyRecord{Key: claim.Key, Fingerprint: claim.Fingerprint, CreatedAt: wireTime(now)}
		s.keys[claim.Key] = k
	}
	k.Owner, k.ClaimedUntil, k.RespondBy = claim.Owner, wireTime(claim.ClaimedUntil), wireTime(claim.RespondBy)
	return cloneRecord(*k), true, nil
}

// ReleaseIdempotencyKey implements Store.
func (s *MemoryStore) ReleaseIdempotencyKey(_ context.Context, key, owner string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k, ok := s.keys[key]; ok && k.Owner == owner && k.OrderID == "" {
		delete(s.keys, key)
	}
	return nil
}

// BeginOrder implements Store.
func (s *MemoryStore) BeginOrder(_ context.Context, claim *KeyClaim) (OrderTx, error) {
	tx := &memTx{s: s}
	if claim != nil {
		c := *claim
		tx.claim = &c
	}
	return tx, nil
}

// IdempotencyKey implements Store.
func (s *MemoryStore) IdempotencyKey(_ context.Context, key string) (IdempotencyRecord, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.keys[key]
	if !ok {
		return IdempotencyRecord{}, fmt.Errorf("idempotency key %q: %w", key, ErrNotFound)
	}
	return cloneRecord(*k), nil
}

// CompleteIdempotencyKey implements Store.
func (s *MemoryStore) CompleteIdempotencyKey(_ context.Context, key string, resp StoredResponse, at time.Time) (StoredResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.keys[key]
	if !ok {
		return StoredResponse{}, fmt.Errorf("complete idempotency key %q: %w", key, ErrNotFound)
	}
	if k.Response == nil {
		k.Response = &StoredResponse{Status: resp.Status, Body: slices.Clone(resp.Body)}
		k.CompletedAt = wireTime(at)
	}
	return StoredResponse{Status: k.Response.Status, Body: slices.Clone(k.Response.Body)}, nil
}

func cloneRecord(r IdempotencyRecord) IdempotencyRecord {
	if r.Response != nil {
		r.Response = &StoredResponse{Status: r.Response.Status, Body: slices.Clone(r.Response.Body)}
	}
	return r
}

// ClaimEvents implements Store.
func (s *MemoryStore) ClaimEvents(_ context.Context, owner string, limit int, now time.Time, lease time.Duration) ([]Event, error) {
	now = wireTime(now)
	until := wireTime(now.Add(lease))
	s.mu.Lock()
	defer s.mu.Unlock()
	var due []*Event
	for _, e := range s.pending {
		if !e.AvailableAt.After(now) {
			due = append(due, e)
		}
	}
	// Oldest due first, like the index the Postgres claim walks.
	slices.SortFunc(due, func(a, b *Event) int {
		if c := a.AvailableAt.Compare(b.AvailableAt); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	if len(due) > limit {
		due = due[:limit]
	}
	out := make([]Event, 0, len(due))
	for _, e := range due {
		e.ClaimedBy = owner
		e.ClaimedUntil = until
		e.AvailableAt = until
		e.Attempts++
		out = append(out, cloneEvent(*e))
	}
	return out, nil
}

// MarkDelivered implements Store.
func (s *MemoryStore) MarkDelivered(_ context.Context, eventID string, now time.Time) error {
	now = wireTime(now)
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.events[eventID]
	if !ok || e.Status != EventPending {
		return nil
	}
	e.Status = EventDelivered
	delete(s.pending, eventID)
	e.DeliveredAt = now
	e.ClaimedUntil = time.Time{}
	if e.Kind == EventOrderPaid {
		// Already cancelled or fulfilled: nothing to move.
		_, _ = s.transitionLocked(e.OrderID, StatusPaid, StatusFulfilled, now)
	}
	return nil
}

// MarkFailed implements Store.
func (s *MemoryStore) MarkFailed(_ context.Context, eventID, owner string, retryAt time.Time, lastError string, dead bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.events[eventID]
	if !ok || e.Status != EventPending || e.ClaimedBy != owner {
		return nil
	}
	e.AvailableAt = wireTime(retryAt)
	e.ClaimedUntil = time.Time{}
	e.LastError = lastError
	if dead {
		e.Status = EventDead
		delete(s.pending, eventID)
		s.dead++
	}
	return nil
}

// OrderEvents implements Store.
func (s *MemoryStore) OrderEvents(_ context.Context, orderID string) ([]Event, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Event
	for _, id := range s.byOrder[orderID] {
		out = append(out, cloneEvent(*s.events[id]))
	}
	return out, nil
}

// OutboxStats implements Store.
func (s *MemoryStore) OutboxStats(_ context.Context) (OutboxStats, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := OutboxStats{Pending: len(s.pending), Dead: s.dead}
	for _, e := range s.pending {
		if st.OldestPending.IsZero() || e.CreatedAt.Before(st.OldestPending) {
			st.OldestPending = e.CreatedAt
		}
	}
	return st, nil
}

// PruneIdempotencyKeys implements Store. Each call walks the keys once
// under the lock, which is what one batch costs here.
func (s *MemoryStore) PruneIdempotencyKeys(_ context.Context, before time.Time, limit int) (int, error) {
	before = wireTime(before)
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for key, k := range s.keys {
		if n == limit {
			break
		}
		expired := (!k.CompletedAt.IsZero() && k.CompletedAt.Before(before)) ||
			(k.CompletedAt.IsZero() && k.CreatedAt.Before(before) && k.ClaimedUntil.Before(before))
		if expired {
			delete(s.keys, key)
			n++
		}
	}
	return n, nil
}

// PruneOutboxEvents implements Store.
func (s *MemoryStore) PruneOutboxEvents(_ context.Context, before time.Time, limit int) (int, error) {
	before = wireTime(before)
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for id, e := range s.events {
		if n == limit {
			break
		}
		if e.Status != EventDelivered || !e.DeliveredAt.Before(before) {
			continue
		}
		delete(s.events, id)
		if ids := slices.DeleteFunc(s.byOrder[e.OrderID], func(x string) bool { return x == id }); len(ids) > 0 {
			s.byOrder[e.OrderID] = ids
		} else {
			delete(s.byOrder, e.OrderID)
		}
		n++
	}
	return n, nil
}

func cloneEvent(e Event) Event {
	e.Payload = slices.Clone(e.Payload)
	return e
}

// memTx buffers one order's writes until Commit applies them under the
// store's lock, so that readers never see half an order. Its claim is
// checked at Commit, under that lock, which is what Postgres's row lock
// on the key (lock_claim.sql) amounts to.
type memTx struct {
	s      *MemoryStore
	claim  *KeyClaim
	order  *Order
	events []Event
	done   bool
}

func (tx *memTx) CreateOrder(_ context.Context, o Order) (Order, error) {
	if tx.done {
		return Order{}, fmt.Errorf("create order: transaction already ended")
	}
	tx.s.mu.Lock()
	o.ID = tx.s.nextOrderIDLocked()
	tx.s.mu.Unlock()
	o.CreatedAt = wireTime(o.CreatedAt)
	o.UpdatedAt = wireTime(o.UpdatedAt)
	tx.order = &o
	return o, nil
}

func (tx *memTx) AddEvents(_ context.Context, events ...Event) error {
	if tx.done {
		return fmt.Errorf("add events: transaction already ended")
	}
	for _, e := range events {
		e = cloneEvent(e)
		if e.Status == "" {
			e.Status = EventPending
		}
		e.CreatedAt = wireTime(e.CreatedAt)
		e.AvailableAt = wireTime(e.AvailableAt)
		e.ClaimedUntil = wireTime(e.ClaimedUntil)
		tx.events = append(tx.events, e)
	}
	return nil
}

func (tx *memTx) Commit(_ context.Context) error {
	if tx.done {
		return fmt.Errorf("commit: transaction already ended")
	}
	tx.done = true
	s := tx.s
	s.mu.Lock()
	defer s.mu.Unlock()
	var key *IdempotencyRecord
	if tx.claim != nil {
		k, ok := s.keys[tx.claim.Key]
		if !ok || k.Owner != tx.claim.Owner || k.OrderID != "" {
			return fmt.Errorf("commit: idempotency key %q: %w", tx.claim.Key, ErrClaimLost)
		}
		key = k
	}
	if tx.order != nil {
		if _, err := s.insertOrderLocked(*tx.order); err != nil {
			return fmt.Errorf("commit: %w", err)
		}
	}
	for _, e := range tx.events {
		if _, ok := s.events[e.ID]; ok {
			continue
		}
		s.events[e.ID] = &e
		s.byOrder[e.OrderID] = append(s.byOrder[e.OrderID], e.ID)
		switch e.Status {
		case EventPending:
			s.pending[e.ID] = &e
		case EventDead:
			s.dead++
		}
	}
	if key != nil && tx.order != nil {
		key.OrderID = tx.order.ID
	}
	return nil
}

func (tx *memTx) Rollback(_ context.Context) error {
	tx.done = true
	return nil
}
