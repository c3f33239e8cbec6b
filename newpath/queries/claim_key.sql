-- Claims an idempotency key in one committed statement, holding no
-- transaction open: a new key is inserted; a claim of the same request
-- (fingerprint) whose lease ended with no order written under it is taken
-- over. Anything else returns no row and the caller reads the key. A
-- takeover racing an order's transaction waits for its row lock, then
-- finds the order and takes nothing.
INSERT INTO idempotency_keys (key, fingerprint, owner, claimed_until, respond_by, created_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (key) DO UPDATE
SET owner = EXCLUDED.owner, claimed_until = EXCLUDED.claimed_until, respond_by = EXCLUDED.respond_by
WHERE idempotency_keys.order_id IS NULL
  AND idempotency_keys.fingerprint = EXCLUDED.fingerprint
  AND idempotency_keys.claimed_until <= $6
RETURNING created_at
