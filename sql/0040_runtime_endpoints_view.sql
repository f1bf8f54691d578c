-- Read model of runtime endpoints (projection "runtime"). A deleted endpoint keeps its row with
-- status 'deleted' (readers skip it) so a later upsert on the same stream finds its identity columns.
-- The auth token itself is never projected: only whether there is one.
CREATE TABLE IF NOT EXISTS runtime_endpoints_view (
    id               uuid PRIMARY KEY,
    account_id       uuid        NOT NULL,
    machine_id       uuid        NOT NULL,
    provider_key     text        NOT NULL,
    url              text        NOT NULL,
    has_auth_token   boolean     NOT NULL,
    metadata         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    source           text        NOT NULL,
    agent_id         uuid,
    status           text        NOT NULL,
    lease_expires_at timestamptz,
    version          bigint      NOT NULL,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    UNIQUE (machine_id, provider_key)
);
