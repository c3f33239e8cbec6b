-- An idempotency key is claimed in a short statement of its own, no longer
-- in a transaction held open across the payment call: the claim is a
-- committed row, named after the request that holds it, with a lease. The
-- order's transaction later records the order under the key only while
-- that request still holds it.
--
-- Rows written before this migration all have their order (the old claim
-- committed with it): their owner is '' and their lease NULL, and they are
-- never taken over.
ALTER TABLE idempotency_keys
    -- The request holding the claim; only it writes the order under the
    -- key or releases the key.
    ADD COLUMN owner         text NOT NULL DEFAULT '',
    -- While no order is written under the key, no other request takes it
    -- over before this; after it, the next request with the key does.
    ADD COLUMN claimed_until timestamptz;
