-- One batch of retention: at most $2 keys answered before $1, or never
-- answered and created before $1 (abandoned claims, and orders whose
-- request died before storing the answer), but never a claim whose lease
-- still runs (one taken over just now). By ctid, so that each batch is one
-- short statement. The conditions are checked again on the row deleted: a
-- row another request changed after the batch picked it (a takeover of an
-- abandoned claim) may be followed to its new version, which must stay.
DELETE FROM idempotency_keys
WHERE ctid = ANY (ARRAY(
    SELECT ctid FROM (
        (SELECT ctid FROM idempotency_keys WHERE completed_at < $1)
        UNION ALL
        (SELECT ctid FROM idempotency_keys
         WHERE completed_at IS NULL AND created_at < $1 AND (claimed_until IS NULL OR claimed_until < $1))
    ) AS expired
    LIMIT $2
))
AND (completed_at < $1
     OR (completed_at IS NULL AND created_at < $1 AND (claimed_until IS NULL OR claimed_until < $1)))
