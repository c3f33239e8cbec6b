-- The index retention deletes by. Built CONCURRENTLY, outside any
-- transaction, so that writes go on meanwhile: on a table that grew before
-- retention existed it may take a while.
CREATE INDEX CONCURRENTLY IF NOT EXISTS strangler_divergences_time ON strangler_divergences (time)
