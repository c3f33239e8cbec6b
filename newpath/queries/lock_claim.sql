-- The first statement of an order's transaction under a key: it holds the
-- claim's row until the commit, so that no request takes the key over
-- meanwhile. No row: the claim was lost and nothing may be written.
SELECT key FROM idempotency_keys
WHERE key = $1 AND owner = $2 AND order_id IS NULL
FOR UPDATE
