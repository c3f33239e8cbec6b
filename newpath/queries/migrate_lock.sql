-- Serialises migrations of one schema across processes; released at commit.
-- Per schema, so that tests migrating their own schemas do not queue.
SELECT pg_advisory_xact_lock(hashtextextended('strangler.migrate:' || coalesce(current_schema(), ''), 0))
