SELECT key, fingerprint, owner, claimed_until, coalesce(order_id, ''), respond_by, response_status, response_body,
       created_at, completed_at
FROM idempotency_keys
WHERE key = $1
