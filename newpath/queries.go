package newpath

import (
	"embed"
	"fmt"
	"strings"
)

// queryFiles hold every SQL statement of the Postgres store, one per file,
// named after what it does.
//
//go:embed queries/*.sql
var queryFiles embed.FS

// query returns the statement of queries/name.sql. A missing file is a bug
// of this package, caught by any test that runs the statement.
func query(name string) string {
	b, err := queryFiles.ReadFile("queries/" + name + ".sql")
	if err != nil {
		panic(fmt.Sprintf("newpath: no embedded query %q", name))
	}
	return strings.TrimSpace(string(b))
}

// postgresQueries are the statements, read once per store.
type postgresQueries struct {
	getUser, getOrder, listOrdersByUser                             string
	insertOrder, insertOrderNextID, transitionOrder                 string
	seedUsers                                                       string
	claimKey, releaseKey, lockClaim, getKey, completeKey            string
	insertEvent, claimEvents, markDelivered, markFailed             string
	orderEvents, outboxStats, pruneKeys, pruneEvents                string
	migrateLock, migrateVersionTable, migrateApplied, migrateRecord string
}

func loadQueries() postgresQueries {
	return postgresQueries{
		getUser:             query("get_user"),
		getOrder:            query("get_order"),
		listOrdersByUser:    query("list_orders_by_user"),
		insertOrder:         query("insert_order"),
		insertOrderNextID:   query("insert_order_next_id"),
		transitionOrder:     query("transition_order"),
		seedUsers:           query("seed_users"),
		claimKey:            query("claim_key"),
		releaseKey:          query("release_key"),
		lockClaim:           query("lock_claim"),
		getKey:              query("get_key"),
		completeKey:         query("complete_key"),
		insertEvent:         query("insert_event"),
		claimEvents:         query("claim_events"),
		markDelivered:       query("mark_delivered"),
		markFailed:          query("mark_failed"),
		orderEvents:         query("order_events"),
		outboxStats:         query("outbox_stats"),
		pruneKeys:           query("prune_keys"),
		pruneEvents:         query("prune_events"),
		migrateLock:         query("migrate_lock"),
		migrateVersionTable: query("migrate_version_table"),
		migrateApplied:      query("migrate_applied"),
		migrateRecord:       query("migrate_record"),
	}
}
