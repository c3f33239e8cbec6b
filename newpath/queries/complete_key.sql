-- The first answer stored wins; a later writer reads it back instead.
UPDATE idempotency_keys SET response_status = $2, response_body = $3, completed_at = $4
WHERE key = $1 AND response_status IS NULL
RETURNING response_status, response_body
