-- The next id of the sequence both services share. An id already taken by
-- an explicit insert returns no row and the caller draws again, as the
-- in-memory stores skip it. With an idempotency key ($10), whose claim the
-- transaction holds (lock_claim.sql), the key records the order in the
-- same statement.
WITH inserted AS (
    INSERT INTO orders (id, user_id, item_id, quantity, unit_price_cents, total_cents, status, payment_id, created_at, updated_at)
    VALUES ('ord_' || nextval('order_id_seq'), $1, $2, $3, $4, $5, $6, $7, $8, $9)
    ON CONFLICT (id) DO NOTHING
    RETURNING id
), keyed AS (
    UPDATE idempotency_keys SET order_id = inserted.id
    FROM inserted
    WHERE idempotency_keys.key = $10
)
SELECT id FROM inserted
