-- The delivery and its effect on the order in one statement: delivering
-- order_paid fulfils a paid order (a cancelled one stays cancelled).
WITH delivered AS (
    UPDATE outbox_events
    SET status = 'delivered', delivered_at = $2, claimed_until = NULL
    WHERE id = $1 AND status = 'pending'
    RETURNING kind, order_id
)
UPDATE orders SET status = 'fulfilled', updated_at = $2
FROM delivered
WHERE orders.id = delivered.order_id AND delivered.kind = 'order_paid' AND orders.status = 'paid'
