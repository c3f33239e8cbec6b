-- One batch of retention: at most $2 events delivered before $1. Pending
-- and dead events are kept (an operator looks at the dead ones).
DELETE FROM outbox_events
WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM outbox_events
    WHERE status = 'delivered' AND delivered_at < $1
    LIMIT $2
))
