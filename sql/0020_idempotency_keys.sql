-- Stored responses for POST requests carrying an Idempotency-Key (per account, expiring).
CREATE TABLE IF NOT EXISTS idempotency_keys (
    account_id    uuid        NOT NULL,
    key           text        NOT NULL,
    method        text        NOT NULL,
    path          text        NOT NULL,
    request_hash  text        NOT NULL,
    status_code   integer,
    response_body bytea,
    response_headers jsonb,
    locked_until  timestamptz NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, key)
);

CREATE INDEX IF NOT EXISTS idempotency_keys_created_idx ON idempotency_keys (created_at);
