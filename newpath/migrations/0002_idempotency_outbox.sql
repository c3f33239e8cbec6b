-- Newpath's own tables: idempotency keys and the transactional outbox.

CREATE TABLE idempotency_keys (
    key             text PRIMARY KEY,
    -- The canonical request the key was first used with.
    fingerprint     text        NOT NULL,
    -- The order placed under the key, set in the order's transaction.
    order_id        text,
    -- The answer every request with the key gets; NULL until the request
    -- holding the key has answered.
    response_status integer,
    response_body   bytea,
    -- After this a waiting request answers from the order's state itself,
    -- in case the request holding the key died after committing.
    respond_by      timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE outbox_events (
    -- Sent as X-Event-Id; the receivers deduplicate on it.
    id            text PRIMARY KEY,
    -- Insertion order, for listings.
    seq           bigint GENERATED ALWAYS AS IDENTITY,
    kind          text        NOT NULL CHECK (kind IN ('order_paid', 'order_confirmed')),
    order_id      text        NOT NULL,
    -- json, not jsonb: the receiver gets the very bytes written.
    payload       json        NOT NULL,
    -- W3C traceparent of the request that wrote the event.
    trace_parent  text        NOT NULL DEFAULT '',
    status        text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts      integer     NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL,
    -- Due for its next attempt at or after this. A claim moves it to the
    -- end of the lease, so a leased event is not due until the lease ends.
    available_at  timestamptz NOT NULL,
    claimed_by    text        NOT NULL DEFAULT '',
    claimed_until timestamptz,
    last_error    text        NOT NULL DEFAULT '',
    delivered_at  timestamptz
);

-- The relay's claim walks this index; delivered events drop out of it.
CREATE INDEX outbox_events_due ON outbox_events (available_at, id) WHERE status = 'pending';
CREATE INDEX outbox_events_dead ON outbox_events (id) WHERE status = 'dead';
CREATE INDEX outbox_events_order ON outbox_events (order_id);
