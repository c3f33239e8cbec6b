package newpath

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// migrationFiles are the schema's migrations, NNNN_name.sql, applied in
// version order.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// TxStarter is what Migrate needs of a database handle; *pgxpool.Pool and
// *pgx.Conn both have it.
type TxStarter interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// migration is one embedded migration file.
type migration struct {
	version int
	name    string
	sql     string
}

// migrations returns the embedded migrations in version order.
func migrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, err
	}
	var out []migration
	for _, e := range entries {
		prefix, _, ok := strings.Cut(e.Name(), "_")
		version, err := strconv.Atoi(prefix)
		if !ok || err != nil {
			return nil, fmt.Errorf("migration %q: name must start with a version number and '_'", e.Name())
		}
		b, err := migrationFiles.ReadFile(path.Join("migrations", e.Name()))
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: version, name: strings.TrimSuffix(e.Name(), ".sql"), sql: string(b)})
	}
	slices.SortFunc(out, func(a, b migration) int { return a.version - b.version })
	return out, nil
}

// Migrate brings the schema of db's current schema (the first of its
// search_path) up to date: the tables both services share (users, orders
// and the order id sequence) and newpath's own (idempotency keys, outbox).
// Each migration is recorded in schema_migrations.
//
// All of it runs in one transaction under a transaction-scoped advisory
// lock, so it is safe to run twice and from several processes at once: a
// second process waits for the first, then finds nothing left to apply.
// It returns the versions it applied.
func Migrate(ctx context.Context, db TxStarter) ([]int, error) {
	all, err := migrations()
	if err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	tx, err := db.Begin(ctx)
	if err != nil {
		return nil, fmt.Errorf("migrate: begin: %w", err)
	}
	defer tx.Rollback(ctx)
	q := loadQueries()
	if _, err := tx.Exec(ctx, q.migrateLock); err != nil {
		return nil, fmt.Errorf("migrate: lock: %w", err)
	}
	if _, err := tx.Exec(ctx, q.migrateVersionTable); err != nil {
		return nil, fmt.Errorf("migrate: version table: %w", err)
	}
	rows, err := tx.Query(ctx, q.migrateApplied)
	if err != nil {
		return nil, fmt.Errorf("migrate: read versions: %w", err)
	}
	applied, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		return nil, fmt.Errorf("migrate: read versions: %w", err)
	}
	var done []int
	for _, m := range all {
		if slices.Contains(applied, m.version) {
			continue
		}
		if _, err := tx.Exec(ctx, m.sql); err != nil {
			return nil, fmt.Errorf("migrate: apply %s: %w", m.name, err)
		}
		if _, err := tx.Exec(ctx, q.migrateRecord, m.version, m.name); err != nil {
			return nil, fmt.Errorf("migrate: record %s: %w", m.name, err)
		}
		done = append(done, m.version)
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, fmt.Errorf("migrate: commit: %w", err)
	}
	return done, nil
}
