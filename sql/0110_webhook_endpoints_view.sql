-- Read model of webhook endpoints (projection "webhooks"): current definition, never the secret. Rebuilt by replay.
CREATE TABLE IF NOT EXISTS webhook_endpoints_view (
    id                         uuid PRIMARY KEY,
    account_id                 uuid        NOT NULL,
    url                        text        NOT NULL,
    types                      text[]      NOT NULL,
    description                text        NOT NULL,
    enabled                    boolean     NOT NULL,
    version                    bigint      NOT NULL,
    created_at                 timestamptz NOT NULL,
    updated_at                 timestamptz NOT NULL,
    previous_secret_expires_at timestamptz
);

CREATE INDEX IF NOT EXISTS webhook_endpoints_view_account_idx ON webhook_endpoints_view (account_id, created_at, id);
