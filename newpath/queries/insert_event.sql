INSERT INTO outbox_events (id, kind, order_id, payload, trace_parent, attempts, created_at, available_at, claimed_by, claimed_until)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (id) DO NOTHING
