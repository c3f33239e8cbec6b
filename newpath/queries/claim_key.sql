-- Claims an idempotency key in the order's transaction. A concurrent
-- transaction inserting the same key waits here until this one ends, then
-- gets no row (committed: read the stored answer) or claims it (rolled back).
INSERT INTO idempotency_keys (key, fingerprint, respond_by)
VALUES ($1, $2, $3)
ON CONFLICT (key) DO NOTHING
RETURNING key
