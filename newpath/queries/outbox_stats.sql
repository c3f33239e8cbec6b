-- Both counts walk partial indexes, not the delivered history.
SELECT
    (SELECT count(*) FROM outbox_events WHERE status = 'pending'),
    (SELECT min(created_at) FROM outbox_events WHERE status = 'pending'),
    (SELECT count(*) FROM outbox_events WHERE status = 'dead')
