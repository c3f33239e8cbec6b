-- strangler_divergences keeps every mismatch sample the proxy records, for
-- the Grafana drill-down (dashboards/strangler-divergence.json). Created at
-- start when divergence_store.database_url is set; safe to run again.
CREATE TABLE IF NOT EXISTS strangler_divergences (
    id             bigserial   PRIMARY KEY,
    time           timestamptz NOT NULL,
    route          text        NOT NULL,
    method         text        NOT NULL,
    path           text        NOT NULL,
    request_id     text        NOT NULL,
    trace_id       text        NOT NULL DEFAULT '',
    legacy_status  integer     NOT NULL,
    newpath_status integer     NOT NULL,
    differences    jsonb       NOT NULL
);
CREATE INDEX IF NOT EXISTS strangler_divergences_route_time ON strangler_divergences (route, time DESC);
-- What replay needs of the request (strangler replay): added after the
-- first release, so an older table gains them here.
ALTER TABLE strangler_divergences
    ADD COLUMN IF NOT EXISTS query               text    NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS request_header      jsonb   NOT NULL DEFAULT '{}',
    ADD COLUMN IF NOT EXISTS request_body        text    NOT NULL DEFAULT '',
    ADD COLUMN IF NOT EXISTS request_body_base64 boolean NOT NULL DEFAULT false,
    ADD COLUMN IF NOT EXISTS dry_run             boolean NOT NULL DEFAULT false;
