package legacy

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// queryFiles are the statements of PostgresStore, one per file.
//
//go:embed queries/*.sql
var queryFiles embed.FS

// PostgresStore is a Store on Postgres: the users and orders tables and the
// order id sequence that the newpath service reads and writes too (SPEC.md
// §11, shared data). The schema belongs to the newpath, whose migrations
// create it; legacyorders applies them before using this store.
type PostgresStore struct {
	pool *pgxpool.Pool
	q    struct {
		getUser, getOrder, listOrdersByUser, insertOrder, insertOrderNextID, transitionOrder, seedUsers string
	}
}

var _ Store = (*PostgresStore)(nil)

// NewPostgresStore returns a store on pool. It fails when an embedded
// statement is missing, which is a bug of this package.
func NewPostgresStore(pool *pgxpool.Pool) (*PostgresStore, error) {
	s := &PostgresStore{pool: pool}
	for name, dst := range map[string]*string{
		"get_user":             &s.q.getUser,
		"get_order":            &s.q.getOrder,
		"list_orders_by_user":  &s.q.listOrdersByUser,
		"insert_order":         &s.q.insertOrder,
		"insert_order_next_id": &s.q.insertOrderNextID,
		"transition_order":     &s.q.transitionOrder,
		"seed_users":           &s.q.seedUsers,
	} {
		b, err := queryFiles.ReadFile("queries/" + name + ".sql")
		if err != nil {
			return nil, fmt.Errorf("new postgres store: %w", err)
		}
		*dst = strings.TrimSpace(string(b))
	}
	return s, nil
}

// Seed inserts the users and orders of seed that are not there yet, in one
// transaction, so that it is safe at every start and from two processes:
// a restart keeps what the previous run changed (a cancelled ord_7 stays
// cancelled).
func (s *PostgresStore) Seed(ctx context.Context, seed Seed) error {
	ids := make([]int64, len(seed.Users))
	names := make([]string, len(seed.Users))
	emails := make([]string, len(seed.Users))
	for i, u := range seed.Users {
		ids[i], names[i], emails[i] = u.ID, u.Name, u.Email
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, s.q.seedUsers, ids, names, emails); err != nil {
		return fmt.Errorf("seed users: %w", err)
	}
	for _, o := range seed.Orders {
		if _, err := tx.Exec(ctx, s.q.insertOrder, o.ID, o.UserID, o.ItemID, o.Quantity, o.UnitPriceCents, o.TotalCents,
			string(o.Status), o.PaymentID, wireTime(o.CreatedAt), wireTime(o.UpdatedAt)); err != nil {
			return fmt.Errorf("seed order %s: %w", o.ID, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	return nil
}

// GetUser implements Store.
func (s *PostgresStore) GetUser(ctx context.Context, id int64) (User, error) {
	var u User
	if err := s.pool.QueryRow(ctx, s.q.getUser, id).Scan(&u.ID, &u.Name, &u.Email); err != nil {
		return User{}, fmt.Errorf("get user %d: %w", id, translatePG(err))
	}
	return u, nil
}

// GetOrder implements Store.
func (s *PostgresStore) GetOrder(ctx context.Context, id string) (Order, error) {
	o, err := scanOrder(s.pool.QueryRow(ctx, s.q.getOrder, id))
	if err != nil {
		return Order{}, fmt.Errorf("get order %q: %w", id, translatePG(err))
	}
	return o, nil
}

// ListOrdersByUser implements Store.
func (s *PostgresStore) ListOrdersByUser(ctx context.Context, userID int64) ([]Order, error) {
	rows, err := s.pool.Query(ctx, s.q.listOrdersByUser, userID)
	if err != nil {
		return nil, fmt.Errorf("list orders of user %d: %w", userID, translatePG(err))
	}
	orders, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Order, error) { return scanOrder(row) })
	if err != nil {
		return nil, fmt.Errorf("list orders of user %d: %w", userID, translatePG(err))
	}
	return orders, nil
}

// CreateOrder implements Store.
func (s *PostgresStore) CreateOrder(ctx context.Context, o Order) (Order, error) {
	o.CreatedAt, o.UpdatedAt = wireTime(o.CreatedAt), wireTime(o.UpdatedAt)
	if o.ID != "" {
		var id string
		err := s.pool.QueryRow(ctx, s.q.insertOrder, o.ID, o.UserID, o.ItemID, o.Quantity, o.UnitPriceCents, o.TotalCents,
			string(o.Status), o.PaymentID, o.CreatedAt, o.UpdatedAt).Scan(&id)
		if errors.Is(err, pgx.ErrNoRows) {
			return Order{}, fmt.Errorf("create order %q: %w", o.ID, ErrDuplicate)
		}
		if err != nil {
			return Order{}, fmt.Errorf("create order %q: %w", o.ID, translatePG(err))
		}
		return o, nil
	}
	// Each draw that hits an id taken by an explicit insert moves the
	// sequence past it, so the loop ends; the bound only guards a bug.
	for range 1000 {
		err := s.pool.QueryRow(ctx, s.q.insertOrderNextID, o.UserID, o.ItemID, o.Quantity, o.UnitPriceCents, o.TotalCents,
			string(o.Status), o.PaymentID, o.CreatedAt, o.UpdatedAt).Scan(&o.ID)
		if errors.Is(err, pgx.ErrNoRows) {
			continue
		}
		if err != nil {
			return Order{}, fmt.Errorf("create order: %w", translatePG(err))
		}
		return o, nil
	}
	return Order{}, errors.New("create order: no free order id after 1000 draws of order_id_seq")
}

// TransitionOrder implements Store.
func (s *PostgresStore) TransitionOrder(ctx context.Context, id string, from, to Status, at time.Time) (Order, error) {
	o, err := scanOrder(s.pool.QueryRow(ctx, s.q.transitionOrder, id, string(from), string(to), wireTime(at)))
	if errors.Is(err, pgx.ErrNoRows) {
		// Nothing moved: no such order, or another status. Reading it tells.
		cur, getErr := s.GetOrder(ctx, id)
		if getErr != nil {
			return Order{}, fmt.Errorf("transition order %q: %w", id, getErr)
		}
		return Order{}, fmt.Errorf("transition order %q from %s to %s: status is %s: %w", id, from, to, cur.Status, ErrStatusConflict)
	}
	if err != nil {
		return Order{}, fmt.Errorf("transition order %q: %w", id, translatePG(err))
	}
	return o, nil
}

// scanOrder reads the columns of get_order.sql.
func scanOrder(row pgx.Row) (Order, error) {
	var (
		o      Order
		status string
	)
	if err := row.Scan(&o.ID, &o.UserID, &o.ItemID, &o.Quantity, &o.UnitPriceCents, &o.TotalCents, &status, &o.PaymentID, &o.CreatedAt, &o.UpdatedAt); err != nil {
		return Order{}, err
	}
	o.Status = Status(status)
	o.CreatedAt, o.UpdatedAt = wireTime(o.CreatedAt), wireTime(o.UpdatedAt)
	return o, nil
}

// translatePG turns pgx's errors into the package's sentinels.
func translatePG(err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	return err
}
