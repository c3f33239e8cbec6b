package newpath

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.opentelemetry.io/otel/trace"
)

// PostgresStore is the Store on Postgres (pgx/v5). Its schema is created by
// Migrate; the users and orders tables are the ones legacy reads and writes
// too, and "ord_<n>" ids come from one sequence both services draw from.
type PostgresStore struct {
	pool *pgxpool.Pool
	q    postgresQueries
}

var _ Store = (*PostgresStore)(nil)

// DefaultMaxConns is the pool size OpenPool sets when the URL does not say
// (pool_max_conns): larger than pgx's default of max(4, CPUs), so that
// bursts of short statements do not queue. No request holds a connection
// across a downstream call (see Server), so the pool does not bound how
// many orders wait on a slow payment service.
const DefaultMaxConns = 32

// PoolOptions configures OpenPoolWith. Zero values mean the documented
// defaults.
type PoolOptions struct {
	// TracerProvider makes a client span for each SQL statement and batch
	// run inside a trace, named after its file in queries/ (or its first
	// keyword), with db.system=postgresql and never the SQL text or its
	// arguments. Nil means no spans.
	TracerProvider trace.TracerProvider
}

// OpenPool connects to databaseURL, with DefaultMaxConns unless the URL
// sets pool_max_conns, and checks the connection. It makes no spans; see
// OpenPoolWith.
func OpenPool(ctx context.Context, databaseURL string) (*pgxpool.Pool, error) {
	return OpenPoolWith(ctx, databaseURL, PoolOptions{})
}

// OpenPoolWith is OpenPool with options.
func OpenPoolWith(ctx context.Context, databaseURL string, opts PoolOptions) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(databaseURL)
	if err != nil {
		// The URL may hold a password: do not echo it.
		return nil, errors.New("open postgres: invalid database URL")
	}
	if !strings.Contains(databaseURL, "pool_max_conns=") {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.ConnConfig.RuntimeParams["application_name"] == "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = "strangler"
	}
	if opts.TracerProvider != nil {
		cfg.ConnConfig.Tracer = newSQLTracer(opts.TracerProvider)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	return pool, nil
}

// NewPostgresStore returns a store on pool, whose schema Migrate created.
func NewPostgresStore(pool *pgxpool.Pool) *PostgresStore {
	return &PostgresStore{pool: pool, q: loadQueries()}
}

// Seed inserts the users and orders of seed that are not there yet, so it
// is safe to run at every start and from several processes: a restart
// keeps what the previous run changed (a cancelled ord_7 stays cancelled).
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
		if _, err := tx.Exec(ctx, s.q.insertOrder, orderArgs(o)...); err != nil {
			return fmt.Errorf("seed order %s: %w", o.ID, err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	return nil
}

func orderArgs(o Order) []any {
	return []any{o.ID, o.UserID, o.ItemID, o.Quantity, o.UnitPriceCents, o.TotalCents, string(o.Status), o.PaymentID, wireTime(o.CreatedAt), wireTime(o.UpdatedAt)}
}

// GetUser implements Store.
func (s *PostgresStore) GetUser(ctx context.Context, id int64) (User, error) {
	var u User
	err := s.pool.QueryRow(ctx, s.q.getUser, id).Scan(&u.ID, &u.Name, &u.Email)
	if err != nil {
		return User{}, fmt.Errorf("get user %d: %w", id, translate(err))
	}
	return u, nil
}

// GetOrder implements Store.
func (s *PostgresStore) GetOrder(ctx context.Context, id string) (Order, error) {
	o, err := scanOrder(s.pool.QueryRow(ctx, s.q.getOrder, id))
	if err != nil {
		return Order{}, fmt.Errorf("get order %q: %w", id, translate(err))
	}
	return o, nil
}

// ListOrdersByUser implements Store.
func (s *PostgresStore) ListOrdersByUser(ctx context.Context, userID int64) ([]Order, error) {
	rows, err := s.pool.Query(ctx, s.q.listOrdersByUser, userID)
	if err != nil {
		return nil, fmt.Errorf("list orders of user %d: %w", userID, translate(err))
	}
	orders, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Order, error) { return scanOrder(row) })
	if err != nil {
		return nil, fmt.Errorf("list orders of user %d: %w", userID, translate(err))
	}
	return orders, nil
}

// CreateOrder implements Store.
func (s *PostgresStore) CreateOrder(ctx context.Context, o Order) (Order, error) {
	o.CreatedAt, o.UpdatedAt = wireTime(o.CreatedAt), wireTime(o.UpdatedAt)
	if o.ID == "" {
		id, err := insertNextOrder(ctx, s.pool, s.q, o, nil)
		if err != nil {
			return Order{}, fmt.Errorf("create order: %w", err)
		}
		o.ID = id
		return o, nil
	}
	var id string
	err := s.pool.QueryRow(ctx, s.q.insertOrder, orderArgs(o)...).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return Order{}, fmt.Errorf("create order %q: %w", o.ID, ErrDuplicate)
	}
	if err != nil {
		return Order{}, fmt.Errorf("create order %q: %w", o.ID, translate(err))
	}
	return o, nil
}

// querier is a pool or a transaction.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// insertNextOrder inserts o under the next free id of the shared sequence
// and returns the id; key, when not nil, records the order.
func insertNextOrder(ctx context.Context, db querier, q postgresQueries, o Order, key *string) (string, error) {
	// Each draw that hits an id taken by an explicit insert moves the
	// sequence past it, so the loop ends; the bound only guards a bug.
	for range 1000 {
		var id string
		err := db.QueryRow(ctx, q.insertOrderNextID, o.UserID, o.ItemID, o.Quantity, o.UnitPriceCents, o.TotalCents,
			string(o.Status), o.PaymentID, o.CreatedAt, o.UpdatedAt, key).Scan(&id)
		if errors.Is(err, pgx.ErrNoRows) {
			continue
		}
		if err != nil {
			return "", translate(err)
		}
		return id, nil
	}
	return "", errors.New("no free order id after 1000 draws of order_id_seq")
}

// TransitionOrder implements Store.
func (s *PostgresStore) TransitionOrder(ctx context.Context, id string, from, to Status, at time.Time) (Order, error) {
	o, err := scanOrder(s.pool.QueryRow(ctx, s.q.transitionOrder, id, string(from), string(to), wireTime(at)))
	if errors.Is(err, pgx.ErrNoRows) {
		// Nothing moved: either there is no such order or it is in
		// another status. Reading it tells which.
		cur, getErr := s.GetOrder(ctx, id)
		if getErr != nil {
			return Order{}, fmt.Errorf("transition order %q: %w", id, getErr)
		}
		return Order{}, fmt.Errorf("transition order %q from %s to %s: status is %s: %w", id, from, to, cur.Status, ErrStatusConflict)
	}
	if err != nil {
		return Order{}, fmt.Errorf("transition order %q: %w", id, translate(err))
	}
	return o, nil
}

// ClaimIdempotencyKey implements Store.
func (s *PostgresStore) ClaimIdempotencyKey(ctx context.Context, claim KeyClaim, now time.Time) (IdempotencyRecord, bool, error) {
	var created time.Time
	err := s.pool.QueryRow(ctx, s.q.claimKey, claim.Key, claim.Fingerprint, claim.Owner,
		wireTime(claim.ClaimedUntil), wireTime(claim.RespondBy), wireTime(now)).Scan(&created)
	if err == nil {
		return IdempotencyRecord{Key: claim.Key, Fingerprint: claim.Fingerprint, Owner: claim.Owner,
			ClaimedUntil: wireTime(claim.ClaimedUntil), RespondBy: wireTime(claim.RespondBy), CreatedAt: wireTime(created)}, true, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return IdempotencyRecord{}, false, fmt.Errorf("claim idempotency key %q: %w", claim.Key, translate(err))
	}
	// Held by another request, or answered: a new statement sees what it
	// committed. Released in between, it is not found, and the caller
	// claims again.
	rec, err := s.IdempotencyKey(ctx, claim.Key)
	if err != nil {
		return IdempotencyRecord{}, false, fmt.Errorf("claim idempotency key: %w", err)
	}
	return rec, false, nil
}

// ReleaseIdempotencyKey implements Store.
func (s *PostgresStore) ReleaseIdempotencyKey(ctx context.Context, key, owner string) error {
	if _, err := s.pool.Exec(ctx, s.q.releaseKey, key, owner); err != nil {
		return fmt.Errorf("release idempotency key %q: %w", key, translate(err))
	}
	return nil
}

// BeginOrder implements Store. The transaction begins at its first write,
// so that no connection is held before the order is ready to be written.
func (s *PostgresStore) BeginOrder(_ context.Context, claim *KeyClaim) (OrderTx, error) {
	tx := &pgOrderTx{s: s}
	if claim != nil {
		c := *claim
		tx.claim = &c
	}
	return tx, nil
}

// IdempotencyKey implements Store.
func (s *PostgresStore) IdempotencyKey(ctx context.Context, key string) (IdempotencyRecord, error) {
	var (
		rec    IdempotencyRecord
		status *int32
		body   []byte
	)
	var claimedUntil, completedAt *time.Time
	err := s.pool.QueryRow(ctx, s.q.getKey, key).Scan(&rec.Key, &rec.Fingerprint, &rec.Owner, &claimedUntil, &rec.OrderID, &rec.RespondBy,
		&status, &body, &rec.CreatedAt, &completedAt)
	if err != nil {
		return IdempotencyRecord{}, fmt.Errorf("idempotency key %q: %w", key, translate(err))
	}
	rec.RespondBy, rec.CreatedAt = wireTime(rec.RespondBy), wireTime(rec.CreatedAt)
	if claimedUntil != nil {
		rec.ClaimedUntil = wireTime(*claimedUntil)
	}
	if completedAt != nil {
		rec.CompletedAt = wireTime(*completedAt)
	}
	if status != nil {
		rec.Response = &StoredResponse{Status: int(*status), Body: body}
	}
	return rec, nil
}

// CompleteIdempotencyKey implements Store.
func (s *PostgresStore) CompleteIdempotencyKey(ctx context.Context, key string, resp StoredResponse, at time.Time) (StoredResponse, error) {
	var (
		status int32
		body   []byte
	)
	err := s.pool.QueryRow(ctx, s.q.completeKey, key, int32(resp.Status), resp.Body, wireTime(at)).Scan(&status, &body)
	if err == nil {
		return StoredResponse{Status: int(status), Body: body}, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return StoredResponse{}, fmt.Errorf("complete idempotency key %q: %w", key, translate(err))
	}
	// Another request stored its answer first (or the key is unknown): a
	// new statement sees what it committed.
	rec, err := s.IdempotencyKey(ctx, key)
	if err != nil {
		return StoredResponse{}, fmt.Errorf("complete idempotency key: %w", err)
	}
	if rec.Response == nil {
		return StoredResponse{}, fmt.Errorf("complete idempotency key %q: no answer stored after a lost race", key)
	}
	return *rec.Response, nil
}

// ClaimEvents implements Store.
func (s *PostgresStore) ClaimEvents(ctx context.Context, owner string, limit int, now time.Time, lease time.Duration) ([]Event, error) {
	now = wireTime(now)
	rows, err := s.pool.Query(ctx, s.q.claimEvents, now, owner, limit, wireTime(now.Add(lease)))
	if err != nil {
		return nil, fmt.Errorf("claim events: %w", translate(err))
	}
	events, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Event, error) { return scanEvent(row) })
	if err != nil {
		return nil, fmt.Errorf("claim events: %w", translate(err))
	}
	return events, nil
}

// MarkDelivered implements Store.
func (s *PostgresStore) MarkDelivered(ctx context.Context, eventID string, now time.Time) error {
	if _, err := s.pool.Exec(ctx, s.q.markDelivered, eventID, wireTime(now)); err != nil {
		return fmt.Errorf("mark event %s delivered: %w", eventID, translate(err))
	}
	return nil
}

// MarkFailed implements Store.
func (s *PostgresStore) MarkFailed(ctx context.Context, eventID, owner string, retryAt time.Time, lastError string, dead bool) error {
	if _, err := s.pool.Exec(ctx, s.q.markFailed, eventID, owner, wireTime(retryAt), lastError, dead); err != nil {
		return fmt.Errorf("mark event %s failed: %w", eventID, translate(err))
	}
	return nil
}

// OrderEvents implements Store.
func (s *PostgresStore) OrderEvents(ctx context.Context, orderID string) ([]Event, error) {
	rows, err := s.pool.Query(ctx, s.q.orderEvents, orderID)
	if err != nil {
		return nil, fmt.Errorf("events of order %q: %w", orderID, translate(err))
	}
	events, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Event, error) { return scanEvent(row) })
	if err != nil {
		return nil, fmt.Errorf("events of order %q: %w", orderID, translate(err))
	}
	return events, nil
}

// OutboxStats implements Store.
func (s *PostgresStore) OutboxStats(ctx context.Context) (OutboxStats, error) {
	var (
		st     OutboxStats
		oldest *time.Time
	)
	if err := s.pool.QueryRow(ctx, s.q.outboxStats).Scan(&st.Pending, &oldest, &st.Dead); err != nil {
		return OutboxStats{}, fmt.Errorf("outbox stats: %w", translate(err))
	}
	if oldest != nil {
		st.OldestPending = wireTime(*oldest)
	}
	return st, nil
}

// PruneIdempotencyKeys implements Store.
func (s *PostgresStore) PruneIdempotencyKeys(ctx context.Context, before time.Time, limit int) (int, error) {
	tag, err := s.pool.Exec(ctx, s.q.pruneKeys, wireTime(before), limit)
	if err != nil {
		return 0, fmt.Errorf("prune idempotency keys: %w", translate(err))
	}
	return int(tag.RowsAffected()), nil
}

// PruneOutboxEvents implements Store.
func (s *PostgresStore) PruneOutboxEvents(ctx context.Context, before time.Time, limit int) (int, error) {
	tag, err := s.pool.Exec(ctx, s.q.pruneEvents, wireTime(before), limit)
	if err != nil {
		return 0, fmt.Errorf("prune outbox events: %w", translate(err))
	}
	return int(tag.RowsAffected()), nil
}

// pgOrderTx is an OrderTx on a pgx transaction, begun at its first write.
type pgOrderTx struct {
	s     *PostgresStore
	tx    pgx.Tx
	claim *KeyClaim
	ended bool
}

// begin opens the transaction and, under a key, locks the key's row if the
// claim still holds it, so that no takeover happens before the commit.
func (t *pgOrderTx) begin(ctx context.Context) error {
	if t.ended {
		return errors.New("order transaction already ended")
	}
	if t.tx != nil {
		return nil
	}
	tx, err := t.s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin order transaction: %w", translate(err))
	}
	if t.claim != nil {
		var key string
		err := tx.QueryRow(ctx, t.s.q.lockClaim, t.claim.Key, t.claim.Owner).Scan(&key)
		if err != nil {
			t.ended = true
			_ = tx.Rollback(context.WithoutCancel(ctx))
			if errors.Is(err, pgx.ErrNoRows) {
				return fmt.Errorf("idempotency key %q: %w", t.claim.Key, ErrClaimLost)
			}
			return fmt.Errorf("lock idempotency key %q: %w", t.claim.Key, translate(err))
		}
	}
	t.tx = tx
	return nil
}

// key is the claimed key insert_order_next_id.sql records the order
// under, or nil.
func (t *pgOrderTx) key() *string {
	if t.claim == nil {
		return nil
	}
	return &t.claim.Key
}

func (t *pgOrderTx) CreateOrder(ctx context.Context, o Order) (Order, error) {
	if err := t.begin(ctx); err != nil {
		return Order{}, err
	}
	o.CreatedAt, o.UpdatedAt = wireTime(o.CreatedAt), wireTime(o.UpdatedAt)
	id, err := insertNextOrder(ctx, t.tx, t.s.q, o, t.key())
	if err != nil {
		return Order{}, fmt.Errorf("create order: %w", err)
	}
	o.ID = id
	return o, nil
}

func (t *pgOrderTx) AddEvents(ctx context.Context, events ...Event) error {
	if err := t.begin(ctx); err != nil {
		return err
	}
	// One round trip for all of them.
	var batch pgx.Batch
	for _, e := range events {
		var claimedUntil *time.Time
		if !e.ClaimedUntil.IsZero() {
			cu := wireTime(e.ClaimedUntil)
			claimedUntil = &cu
		}
		batch.Queue(t.s.q.insertEvent, e.ID, string(e.Kind), e.OrderID, string(e.Payload), e.TraceParent, e.Attempts,
			wireTime(e.CreatedAt), wireTime(e.AvailableAt), e.ClaimedBy, claimedUntil)
	}
	if err := t.tx.SendBatch(ctx, &batch).Close(); err != nil {
		return fmt.Errorf("add outbox events: %w", translate(err))
	}
	return nil
}

func (t *pgOrderTx) Commit(ctx context.Context) error {
	if t.ended {
		return errors.New("commit: order transaction already ended")
	}
	t.ended = true
	if t.tx == nil {
		return nil
	}
	if err := t.tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit order: %w", translate(err))
	}
	return nil
}

func (t *pgOrderTx) Rollback(ctx context.Context) error {
	if t.ended {
		return nil
	}
	t.ended = true
	if t.tx == nil {
		return nil
	}
	if err := t.tx.Rollback(ctx); err != nil && !errors.Is(err, pgx.ErrTxClosed) {
		return fmt.Errorf("roll back order: %w", err)
	}
	return nil
}

// scanOrder reads the order columns in the order of get_order.sql.
func scanOrder(row pgx.Row) (Order, error) {
	var (
		o      Order
		status string
	)
	err := row.Scan(&o.ID, &o.UserID, &o.ItemID, &o.Quantity, &o.UnitPriceCents, &o.TotalCents, &status, &o.PaymentID, &o.CreatedAt, &o.UpdatedAt)
	if err != nil {
		return Order{}, err
	}
	o.Status = Status(status)
	o.CreatedAt, o.UpdatedAt = wireTime(o.CreatedAt), wireTime(o.UpdatedAt)
	return o, nil
}

// scanEvent reads the event columns in the order of order_events.sql.
func scanEvent(row pgx.Row) (Event, error) {
	var (
		e                         Event
		kind, status              string
		claimedUntil, deliveredAt *time.Time
	)
	err := row.Scan(&e.ID, &kind, &e.OrderID, &e.Payload, &e.TraceParent, &status, &e.Attempts,
		&e.CreatedAt, &e.AvailableAt, &e.ClaimedBy, &claimedUntil, &e.LastError, &deliveredAt)
	if err != nil {
		return Event{}, err
	}
	e.Kind, e.Status = EventKind(kind), EventStatus(status)
	e.CreatedAt, e.AvailableAt = wireTime(e.CreatedAt), wireTime(e.AvailableAt)
	if claimedUntil != nil {
		e.ClaimedUntil = wireTime(*claimedUntil)
	}
	if deliveredAt != nil {
		e.DeliveredAt = wireTime(*deliveredAt)
	}
	return e, nil
}

// translate turns pgx's errors into the package's sentinels at the
// boundary; anything else is returned as it is, wrapped by the caller.
func translate(err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotFound
	}
	return err
}
