-- Read model of policies (projection "policies"): each policy's current version. Rebuilt by replay.
CREATE TABLE IF NOT EXISTS policies_view (
    id           uuid PRIMARY KEY,
    account_id   uuid        NOT NULL,
    platform     boolean     NOT NULL,
    name         text        NOT NULL,
    description  text        NOT NULL,
    scope        jsonb       NOT NULL,
    -- The scope unpacked, so "which policies govern this machine" is answered by indexes.
    scope_type   text        NOT NULL,
    machine_ids  uuid[]      NOT NULL DEFAULT '{}',
    scope_labels jsonb       NOT NULL DEFAULT '{}'::jsonb,
    mode         text        NOT NULL,
    rules        jsonb       NOT NULL,
    version      bigint      NOT NULL,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);

CREATE INDEX IF NOT EXISTS policies_view_account_idx ON policies_view (account_id, created_at, id);
CREATE INDEX IF NOT EXISTS policies_view_platform_idx ON policies_view (created_at, id) WHERE platform;
CREATE INDEX IF NOT EXISTS policies_view_machines_idx ON policies_view USING gin (machine_ids);
