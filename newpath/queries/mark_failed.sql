-- Only the relay holding the lease records the failure: after a lease
-- ended and another relay claimed the event, the late one changes nothing.
UPDATE outbox_events
SET available_at = $3, claimed_until = NULL, last_error = $4,
    status = CASE WHEN $5 THEN 'dead' ELSE 'pending' END
WHERE id = $1 AND claimed_by = $2 AND status = 'pending'
