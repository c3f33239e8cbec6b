package newpath

import (
	"context"
	"errors"
	"time"
)

// Sentinel errors every Store returns (wrapped), whatever the storage
// behind it, so that callers decide with errors.Is.
var (
	// ErrNotFound means the user, order, event or idempotency key does not
	// exist.
	ErrNotFound = errors.New("not found")
	// ErrDuplicate means an order with the same id already exists.
	ErrDuplicate = errors.New("duplicate order id")
	// ErrStatusConflict means the order was not in the status a transition
	// requires, typically because another request changed it first.
	ErrStatusConflict = errors.New("order status conflict")
	// ErrClaimLost means an order transaction's idempotency key is no
	// longer held by its claim: the lease ended and another request took
	// the key over, or an order was already written under it. Nothing was
	// written; answer from the key (Store.IdempotencyKey) as a request that
	// waits for it does.
	ErrClaimLost = errors.New("idempotency key claim lost")
	// ErrIdempotencyMismatch means an idempotency key was reused with a
	// different request; the API answers 422.
	ErrIdempotencyMismatch = errors.New("idempotency key reused with a different request")
)

// Store is the persistence of the order service: the orders and users it
// shares with legacy, the idempotency keys, and the outbox. Every method is
// safe for concurrent use and honours ctx where it can block.
//
// The first five methods are legacy's own store contract, with the same
// semantics, so that one store can serve both services (an adapter only
// converts the types).
type Store interface {
	// GetUser returns the user or an error wrapping ErrNotFound.
	GetUser(ctx context.Context, id int64) (User, error)
	// GetOrder returns the order or an error wrapping ErrNotFound.
	GetOrder(ctx context.Context, id string) (Order, error)
	// ListOrdersByUser returns the user's orders by CreatedAt, then ID
	// byte-wise, oldest first; an unknown user has none (not an error).
	ListOrdersByUser(ctx context.Context, userID int64) ([]Order, error)
	// CreateOrder stores o outside any order transaction, as legacy does.
	// An empty o.ID takes the next "ord_<n>" of the sequence shared with
	// OrderTx.CreateOrder, skipping ids already taken; an explicit id that
	// exists is an error wrapping ErrDuplicate.
	CreateOrder(ctx context.Context, o Order) (Order, error)
	// TransitionOrder moves order id from status from to status to, setting
	// UpdatedAt to at, atomically; otherwise it changes nothing and returns
	// an error wrapping ErrStatusConflict or ErrNotFound.
	TransitionOrder(ctx context.Context, id string, from, to Status, at time.Time) (Order, error)

	// ClaimIdempotencyKey claims claim.Key for claim.Owner in one short,
	// committed statement, and reports whether it did. It claims a key
	// nobody has, and takes over a claim with the same fingerprint whose
	// lease (ClaimedUntil) ended at or before now with no order written
	// under it: its request died, or hangs, between its claim and its
	// order. Otherwise it changes nothing and returns the key's record as
	// it is, for the caller to answer from: another request's fingerprint,
	// a stored response, an order not answered yet, or a live claim to
	// wait for. A new key records now as its creation time.
	ClaimIdempotencyKey(ctx context.Context, claim KeyClaim, now time.Time) (IdempotencyRecord, bool, error)
	// ReleaseIdempotencyKey deletes key if owner still holds its claim and
	// no order was written under it, so that the next request with the key
	// runs again; otherwise it does nothing, which is not an error.
	ReleaseIdempotencyKey(ctx context.Context, key, owner string) error
	// BeginOrder opens the transaction that places one order. It holds no
	// connection until its first write, so it can be opened after the
	// downstream calls. With a non-nil claim (taken by
	// ClaimIdempotencyKey), the key records the order in the same
	// transaction, provided claim.Owner still holds it and no order was
	// written under it; otherwise CreateOrder, or at the latest Commit,
	// fails with an error wrapping ErrClaimLost and nothing is written.
	BeginOrder(ctx context.Context, claim *KeyClaim) (OrderTx, error)
	// IdempotencyKey returns the record of key, claimed, ordered or
	// answered, or an error wrapping ErrNotFound.
	IdempotencyKey(ctx context.Context, key string) (IdempotencyRecord, error)
	// CompleteIdempotencyKey stores resp as the final response of key,
	// completed at at, unless one is stored already, and returns the one
	// stored: the first writer wins, so every request with the key answers
	// the same bytes.
	CompleteIdempotencyKey(ctx context.Context, key string, resp StoredResponse, at time.Time) (StoredResponse, error)
	// PruneIdempotencyKeys deletes at most limit keys completed before
	// before, or never completed and created before before unless their
	// lease still runs then, and returns how many it deleted. Each call is
	// one short statement: call it again until it deletes fewer than
	// limit.
	PruneIdempotencyKeys(ctx context.Context, before time.Time, limit int) (int, error)

	// ClaimEvents leases up to limit due events (pending, available at or
	// before now) to owner until now+lease, counting an attempt for each,
	// and returns them. Events leased to another owner are skipped, not
	// waited for; a lease that ends makes its events due again, so the
	// events of a relay that died are claimed by another.
	ClaimEvents(ctx context.Context, owner string, limit int, now time.Time, lease time.Duration) ([]Event, error)
	// MarkDelivered records a successful delivery at now. Delivering an
	// order_paid event also moves its order from paid to fulfilled in the
	// same transaction. An event no longer pending is left as it is.
	MarkDelivered(ctx context.Context, eventID string, now time.Time) error
	// MarkFailed ends owner's lease of a failed event: it is due again at
	// retryAt, or parked as dead when dead is true. An event no longer
	// leased to owner (its lease ended and another relay claimed it) is left
	// as it is.
	MarkFailed(ctx context.Context, eventID, owner string, retryAt time.Time, lastError string, dead bool) error
	// OrderEvents returns the outbox events of an order, oldest first.
	OrderEvents(ctx context.Context, orderID string) ([]Event, error)
	// OutboxStats counts pending and dead events.
	OutboxStats(ctx context.Context) (OutboxStats, error)
	// PruneOutboxEvents deletes at most limit events delivered before
	// before, and returns how many it deleted; pending and dead events are
	// never deleted. Each call is one short statement: call it again until
	// it deletes fewer than limit.
	PruneOutboxEvents(ctx context.Context, before time.Time, limit int) (int, error)
}

// OrderTx is the transaction of one order: its row, its outbox events and
// the order's id under its idempotency key commit together or not at all.
type OrderTx interface {
	// CreateOrder inserts o with the next id of the sequence (o.ID is
	// ignored) and returns it as stored. With a claimed key, the key
	// records the order's id.
	CreateOrder(ctx context.Context, o Order) (Order, error)
	// AddEvents writes events to the outbox.
	AddEvents(ctx context.Context, events ...Event) error
	// Commit makes everything written visible at once.
	Commit(ctx context.Context) error
	// Rollback discards everything (the key's claim stays as it was); after
	// Commit it does nothing, so it can always be deferred.
	Rollback(ctx context.Context) error
}

// KeyClaim is one request's claim of an idempotency key.
type KeyClaim struct {
	// Key is the client's Idempotency-Key.
	Key string
	// Fingerprint identifies the request: the same key with another
	// fingerprint is a different request (422).
	Fingerprint string
	// Owner names the claiming request, unique per request: only the
	// owner may write the order under the key or release it.
	Owner string
	// ClaimedUntil ends the lease: until then, no other request takes the
	// key over while no order is written under it. At least as late as the
	// claiming request may still run.
	ClaimedUntil time.Time
	// RespondBy is when a request waiting for this one's response stops
	// waiting and answers from the order's state itself, in case the
	// request holding the key died after writing its order.
	RespondBy time.Time
}

// IdempotencyRecord is the stored state of an idempotency key.
type IdempotencyRecord struct {
	Key         string
	Fingerprint string
	// Owner is the request that holds (or held) the claim.
	Owner        string
	ClaimedUntil time.Time
	// OrderID is the order placed under the key; empty while the claim's
	// request has not written it.
	OrderID   string
	RespondBy time.Time
	// Response is the answer every request with the key gets; nil while the
	// request holding the key has not answered yet.
	Response *StoredResponse
	// CreatedAt is when the key was first claimed; CompletedAt when its
	// answer was stored, zero before. Retention counts from them.
	CreatedAt   time.Time
	CompletedAt time.Time
}

// StoredResponse is an HTTP answer kept for an idempotency key.
type StoredResponse struct {
	Status int
	// Body is the JSON body without its trailing newline.
	Body []byte
}

// EventKind names what happened, and so where the relay delivers it.
type EventKind string

// The outbox events of an order.
const (
	// EventOrderPaid goes to the warehouse (POST /warehouse/shipments); its
	// delivery fulfils the order.
	EventOrderPaid EventKind = "order_paid"
	// EventOrderConfirmed goes to the mail service (POST /mail/send).
	EventOrderConfirmed EventKind = "order_confirmed"
)

// EventStatus is where an event is in its delivery.
type EventStatus string

// The states of an outbox event.
const (
	// EventPending events wait for a (first or next) delivery attempt.
	EventPending EventStatus = "pending"
	// EventDelivered events were accepted by their receiver.
	EventDelivered EventStatus = "delivered"
	// EventDead events failed MaxAttempts times, or permanently; an
	// operator looks at them (neworders_outbox_dead_events).
	EventDead EventStatus = "dead"
)

// Event is one outbox row.
type Event struct {
	// ID is sent as X-Event-Id; receivers deduplicate on it.
	ID      string
	Kind    EventKind
	OrderID string
	// Payload is the JSON body delivered to the receiver, fixed when the
	// order commits.
	Payload []byte
	// TraceParent is the W3C traceparent of the request that wrote the
	// event, so that the asynchronous delivery can continue its trace.
	TraceParent string
	Status      EventStatus
	// Attempts counts claims, including one whose relay died mid-delivery:
	// an event that kills its relays still ends up dead.
	Attempts     int
	CreatedAt    time.Time
	AvailableAt  time.Time
	ClaimedBy    string
	ClaimedUntil time.Time
	LastError    string
	DeliveredAt  time.Time
}

// OutboxStats summarises the outbox for the metrics.
type OutboxStats struct {
	// Pending counts events not yet delivered (leased ones included).
	Pending int
	// OldestPending is the creation time of the oldest pending event; zero
	// when none is pending.
	OldestPending time.Time
	// Dead counts events parked as dead.
	Dead int
}
