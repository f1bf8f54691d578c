-- Latest snapshot per stream: a cache that bounds the cost of loading a long stream. Never a source of
-- truth; deleting every row only makes loads replay whole streams again.
CREATE TABLE IF NOT EXISTS snapshots (
    stream_id      uuid        PRIMARY KEY,
    stream_type    text        NOT NULL,
    version        bigint      NOT NULL,
    -- The aggregate's SNAPSHOT_VERSION when taken: a snapshot of another shape is ignored, not misread.
    schema_version integer     NOT NULL,
    state          jsonb       NOT NULL,
    taken_at       timestamptz NOT NULL DEFAULT now()
);
