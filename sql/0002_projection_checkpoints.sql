-- Where each projection has read up to in the (tx_id, position) order; updated in the same
-- transaction as the projection's rows, which is what makes application exactly-once.
CREATE TABLE IF NOT EXISTS projection_checkpoints (
    name        text        PRIMARY KEY,
    tx_id       xid8        NOT NULL DEFAULT '0',
    position    bigint      NOT NULL DEFAULT 0,
    events_applied bigint   NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    last_event_at timestamptz
);
