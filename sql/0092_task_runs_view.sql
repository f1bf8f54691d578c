-- Read model of runs, one call to a seller each (projection "tasks"). Readable by the buyer's and the seller's
-- account. Never holds an endpoint URL or token: only what the events recorded (status, latency, digest, body).
CREATE TABLE IF NOT EXISTS task_runs_view (
    id                 uuid PRIMARY KEY,
    task_id            uuid        NOT NULL,
    attempt            integer     NOT NULL,
    buyer_machine_id   uuid        NOT NULL,
    buyer_account_id   uuid        NOT NULL,
    seller_machine_id  uuid        NOT NULL,
    seller_account_id  uuid        NOT NULL,
    listing_id         uuid        NOT NULL,
    capability         text        NOT NULL,
    provider_key       text        NOT NULL,
    status             text        NOT NULL,
    http_status        integer,
    latency_ms         integer,
    error_class        text,
    retryable          boolean,
    response_digest    text,
    body               jsonb,
    started_at         timestamptz NOT NULL,
    finished_at        timestamptz
);

CREATE INDEX IF NOT EXISTS task_runs_view_buyer_idx ON task_runs_view (buyer_machine_id, started_at, id);
CREATE INDEX IF NOT EXISTS task_runs_view_seller_idx ON task_runs_view (seller_machine_id, started_at, id);
CREATE INDEX IF NOT EXISTS task_runs_view_task_idx ON task_runs_view (task_id, attempt);
