-- An explicit id: ON CONFLICT tells a taken id (no row) from an insert.
INSERT INTO orders (id, user_id, item_id, quantity, unit_price_cents, total_cents, status, payment_id, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
ON CONFLICT (id) DO NOTHING
RETURNING id
