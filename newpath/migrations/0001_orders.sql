-- The order data legacy and newpath share (docs/order-api.md §2, §5).
-- One sequence numbers "ord_<n>" for both services, so their ids never
-- collide.
CREATE SEQUENCE order_id_seq;

CREATE TABLE users (
    id    bigint PRIMARY KEY,
    name  text   NOT NULL,
    email text   NOT NULL
);

CREATE TABLE orders (
    -- COLLATE "C": listings break created_at ties by id byte-wise, as the
    -- contract says ("ord_10" < "ord_2").
    id               text COLLATE "C" PRIMARY KEY,
    user_id          bigint      NOT NULL,
    item_id          text        NOT NULL,
    quantity         integer     NOT NULL,
    unit_price_cents bigint      NOT NULL,
    total_cents      bigint      NOT NULL,
    status           text        NOT NULL CHECK (status IN ('paid', 'fulfilled', 'cancelled')),
    payment_id       text        NOT NULL,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
);

CREATE INDEX orders_user_created ON orders (user_id, created_at, id);
