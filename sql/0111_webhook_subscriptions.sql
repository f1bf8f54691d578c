-- The webhook fan-out projection's own copy of which endpoints want what (folded in log order alongside the
-- deliveries it decides, so which events an endpoint gets never depends on another projection's lag).
CREATE TABLE IF NOT EXISTS webhook_subscriptions (
    endpoint_id uuid PRIMARY KEY,
    account_id  uuid    NOT NULL,
    types       text[]  NOT NULL,
    enabled     boolean NOT NULL
);

CREATE INDEX IF NOT EXISTS webhook_subscriptions_account_idx ON webhook_subscriptions (account_id);
