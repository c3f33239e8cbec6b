-- Gives a key up after a failure before its order was written, so that a
-- retry runs again; a key another request took over, or with an order, is
-- left alone.
DELETE FROM idempotency_keys
WHERE key = $1 AND owner = $2 AND order_id IS NULL
