-- The next id of the sequence newpath draws from too (its migrations own
-- the schema), so "ord_<n>" never collides between the two services. An id
-- already taken returns no row and the caller draws again.
INSERT INTO orders (id, user_id, item_id, quantity, unit_price_cents, total_cents, status, payment_id, created_at, updated_at)
VALUES ('ord_' || nextval('order_id_seq'), $1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (id) DO NOTHING
RETURNING id
