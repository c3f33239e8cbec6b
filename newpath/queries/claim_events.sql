-- One statement picks due events, skipping rows another relay has locked
-- (FOR UPDATE SKIP LOCKED), and leases them: available_at moves to the end
-- of the lease, so a leased event is not due again until its relay had
-- time to deliver it, and is due again if that relay died.
WITH due AS (
    SELECT id FROM outbox_events
    WHERE status = 'pending' AND available_at <= $1
    ORDER BY available_at, id
    LIMIT $3
    FOR UPDATE SKIP LOCKED
)
UPDATE outbox_events e
SET claimed_by = $2, claimed_until = $4, available_at = $4, attempts = e.attempts + 1
FROM due
WHERE e.id = due.id
RETURNING e.id, e.kind, e.order_id, e.payload, e.trace_parent, e.status, e.attempts,
          e.created_at, e.available_at, e.claimed_by, e.claimed_until, e.last_error, e.delivered_at
