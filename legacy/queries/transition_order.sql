-- A compare-and-set: of two concurrent transitions from one status, one
-- finds the row changed and returns nothing.
UPDATE orders SET status = $3, updated_at = $4
WHERE id = $1 AND status = $2
RETURNING id, user_id, item_id, quantity, unit_price_cents, total_cents, status, payment_id, created_at, updated_at
