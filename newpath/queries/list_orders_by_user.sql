SELECT id, user_id, item_id, quantity, unit_price_cents, total_cents, status, payment_id, created_at, updated_at
FROM orders
WHERE user_id = $1
ORDER BY created_at, id
