-- The audit feed (projection "audit"): every event under its public type name, in log order.
CREATE TABLE IF NOT EXISTS audit_events (
    id             uuid PRIMARY KEY,
    tx_id          bigint      NOT NULL,
    position       bigint      NOT NULL,
    type           text        NOT NULL,
    occurred_at    timestamptz NOT NULL,
    actor          text,
    account_id     uuid,
    machine_id     uuid,
    subject        text        NOT NULL,
    data           jsonb       NOT NULL,
    request_id     text,
    correlation_id text,
    causation_id   text,
    UNIQUE (tx_id, position)
);

CREATE INDEX IF NOT EXISTS audit_events_account_idx ON audit_events (account_id, tx_id, position);
CREATE INDEX IF NOT EXISTS audit_events_machine_idx ON audit_events (machine_id, tx_id, position);
CREATE INDEX IF NOT EXISTS audit_events_type_idx ON audit_events (type, tx_id, position);
CREATE INDEX IF NOT EXISTS audit_events_occurred_idx ON audit_events (occurred_at);
