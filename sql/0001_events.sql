-- The event log: one row per domain event. Append-only; nothing updates or deletes rows.
CREATE TABLE IF NOT EXISTS events (
    position    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Writer's transaction id: readers only take rows below the oldest running transaction
    -- (pg_snapshot_xmin), ordered by (tx_id, position), so a late commit is never skipped.
    tx_id       xid8        NOT NULL DEFAULT pg_current_xact_id(),
    event_id    uuid        NOT NULL,
    stream_id   uuid        NOT NULL,
    stream_type text        NOT NULL,
    version     bigint      NOT NULL CHECK (version > 0),
    type        text        NOT NULL,
    data        jsonb       NOT NULL,
    metadata    jsonb       NOT NULL DEFAULT '{}'::jsonb,
    recorded_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_stream_version_key UNIQUE (stream_id, version)
);

CREATE INDEX IF NOT EXISTS events_tx_position_idx ON events (tx_id, position);
