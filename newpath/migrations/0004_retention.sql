-- Retention (Pruner): idempotency keys are deleted some time after their
-- answer was stored (completed_at), or after their creation when they
-- never got one; delivered outbox events some time after delivery. The
-- indexes let each batch find its rows without walking the live ones.
--
-- On a large outbox, building the index here holds a write lock on
-- outbox_events while it builds (migrations run in one transaction): an
-- operator can build it beforehand with
--   CREATE INDEX CONCURRENTLY outbox_events_delivered ON outbox_events (delivered_at) WHERE status = 'delivered';
-- and IF NOT EXISTS then skips it.
ALTER TABLE idempotency_keys ADD COLUMN completed_at timestamptz;

-- Keys answered before this migration keep completed_at NULL: the pruner
-- then goes by their creation, at most one request earlier than their
-- answer. (Backfilling it would rewrite the whole table inside the
-- migration's transaction, holding every keyed order meanwhile.)

CREATE INDEX IF NOT EXISTS idempotency_keys_completed ON idempotency_keys (completed_at) WHERE completed_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS idempotency_keys_never_completed ON idempotency_keys (created_at) WHERE completed_at IS NULL;
CREATE INDEX IF NOT EXISTS outbox_events_delivered ON outbox_events (delivered_at) WHERE status = 'delivered';
