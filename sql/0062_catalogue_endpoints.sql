-- The catalogue's own copy of runtime-endpoint state (projection "catalogue"): status, lease and last report
-- per (machine, provider key). Never a URL or a token: the catalogue has no use for either.
CREATE TABLE IF NOT EXISTS catalogue_endpoints (
    id               uuid PRIMARY KEY,
    machine_id       uuid        NOT NULL,
    provider_key     text        NOT NULL,
    status           text        NOT NULL,
    source           text        NOT NULL,
    lease_expires_at timestamptz,
    last_seen_at     timestamptz NOT NULL,
    version          bigint      NOT NULL,
    UNIQUE (machine_id, provider_key)
);
