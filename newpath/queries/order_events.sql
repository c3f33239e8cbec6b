SELECT id, kind, order_id, payload, trace_parent, status, attempts,
       created_at, available_at, claimed_by, claimed_until, last_error, delivered_at
FROM outbox_events
WHERE order_id = $1
ORDER BY seq
