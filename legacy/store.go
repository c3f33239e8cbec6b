package legacy

import (
	"context"
	"errors"
	"time"
)

// Sentinel errors every Store returns (wrapped) so that callers can use
// errors.Is whatever the storage behind it.
var (
	// ErrNotFound means the user or order does not exist.
	ErrNotFound = errors.New("not found")
	// ErrDuplicate means an order with the same id already exists.
	ErrDuplicate = errors.New("duplicate order id")
	// ErrStatusConflict means the order was not in the status a transition
	// requires, typically because another request changed it first.
	ErrStatusConflict = errors.New("order status conflict")
)

// Store is the persistence the legacy backend needs. It is small on purpose
// so that a Postgres implementation can slot in beside MemoryStore; every
// method is safe for concurrent use and honours ctx where it can block.
type Store interface {
	// GetUser returns the user or an error wrapping ErrNotFound.
	GetUser(ctx context.Context, id int64) (User, error)
	// GetOrder returns the order or an error wrapping ErrNotFound.
	GetOrder(ctx context.Context, id string) (Order, error)
	// ListOrdersByUser returns the user's orders sorted by CreatedAt, then by
	// ID (byte-wise), oldest first. An unknown user has no orders: the
	// result is empty, not an error.
	ListOrdersByUser(ctx context.Context, userID int64) ([]Order, error)
	// CreateOrder stores o. When o.ID is empty the store assigns the next
	// "ord_<n>" id, as a database sequence would; an explicit id that
	// already exists is an error wrapping ErrDuplicate. It returns the order
	// as stored.
	CreateOrder(ctx context.Context, o Order) (Order, error)
	// TransitionOrder moves order id from status from to status to and sets
	// UpdatedAt to at, atomically: if the order is not in status from, it
	// changes nothing and returns an error wrapping ErrStatusConflict (or
	// ErrNotFound). It returns the updated order.
	TransitionOrder(ctx context.Context, id string, from, to Status, at time.Time) (Order, error)
}
