-- One row per (endpoint, event): written by the fan-out projection in its checkpoint's transaction (exactly
-- once), then advanced by the delivery actor. The unique key is what makes a redelivered message harmless.
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id              uuid PRIMARY KEY,
    endpoint_id     uuid        NOT NULL,
    event_id        uuid        NOT NULL,
    account_id      uuid        NOT NULL,
    type            text        NOT NULL,
    tx_id           bigint      NOT NULL,
    position        bigint      NOT NULL,
    status          text        NOT NULL DEFAULT 'pending',  -- pending | delivered | failed (gave up)
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    first_failed_at timestamptz,
    last_status     integer,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    UNIQUE (endpoint_id, event_id)
);

-- Log order per endpoint: the drain takes the oldest pending one first.
CREATE INDEX IF NOT EXISTS webhook_deliveries_order_idx ON webhook_deliveries (endpoint_id, tx_id, position);
CREATE INDEX IF NOT EXISTS webhook_deliveries_pending_idx ON webhook_deliveries (endpoint_id, tx_id, position)
    WHERE status = 'pending';
