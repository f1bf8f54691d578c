-- API keys by hash, for authentication (projection "accounts"). Only SHA-256 digests are stored.
CREATE TABLE IF NOT EXISTS api_keys_view (
    id         uuid PRIMARY KEY,
    account_id uuid        NOT NULL,
    key_hash   text        NOT NULL UNIQUE,
    prefix     text        NOT NULL,
    label      text        NOT NULL,
    revoked_at timestamptz,
    created_at timestamptz NOT NULL
);

CREATE INDEX IF NOT EXISTS api_keys_view_account_idx ON api_keys_view (account_id, created_at);
