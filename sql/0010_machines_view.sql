-- Read model of machines (projection "machines"). Rebuilt by replay; never written by the API.
CREATE TABLE IF NOT EXISTS machines_view (
    id                   uuid PRIMARY KEY,
    account_id           uuid        NOT NULL,
    name                 text        NOT NULL,
    description          text        NOT NULL,
    public_key           text        NOT NULL,
    labels               jsonb       NOT NULL DEFAULT '{}'::jsonb,
    status               text        NOT NULL,
    identity_verified_at timestamptz,
    version              bigint      NOT NULL,
    created_at           timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL
);

CREATE INDEX IF NOT EXISTS machines_view_account_idx ON machines_view (account_id, created_at, id);
CREATE INDEX IF NOT EXISTS machines_view_labels_idx ON machines_view USING gin (labels jsonb_path_ops);
