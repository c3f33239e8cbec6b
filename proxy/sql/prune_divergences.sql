-- One batch of samples older than $1, at most $2 rows, oldest first. Rows
-- another replica is deleting are skipped, not waited for: each batch holds
-- its locks for one short statement.
DELETE FROM strangler_divergences
WHERE id IN (
    SELECT id FROM strangler_divergences
    WHERE time < $1
    ORDER BY time
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
