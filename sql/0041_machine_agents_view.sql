-- Read model of machine agents (projection "runtime"). The token digest stays in the event store.
CREATE TABLE IF NOT EXISTS machine_agents_view (
    id                    uuid PRIMARY KEY,
    account_id            uuid        NOT NULL,
    machine_id            uuid        NOT NULL,
    name                  text        NOT NULL,
    allowed_provider_keys text[]      NOT NULL,
    lease_seconds         integer     NOT NULL,
    status                text        NOT NULL,
    last_seen_at          timestamptz,
    last_lease_expires_at timestamptz,
    version               bigint      NOT NULL,
    created_at            timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL
);

CREATE INDEX IF NOT EXISTS machine_agents_view_machine_idx ON machine_agents_view (machine_id, created_at, id);
