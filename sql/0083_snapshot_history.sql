-- Every snapshot ever taken (the snapshots table keeps only the latest): time travel to version N starts from the
-- nearest one at or below N, so a past state of a long stream costs at most SNAPSHOT_EVERY events. A cache like
-- snapshots: deleting rows only makes time travel replay more.
CREATE TABLE IF NOT EXISTS snapshot_history (
    stream_id      uuid        NOT NULL,
    version        bigint      NOT NULL,
    stream_type    text        NOT NULL,
    schema_version integer     NOT NULL,
    state          jsonb       NOT NULL,
    taken_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_id, version)
);
