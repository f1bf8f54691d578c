-- Read model of tasks (projection "tasks"): one row per task, the buyer machine's stream. Rebuilt by replay;
-- never written by the API. candidates/dropped are discovery's last record, so the row explains itself.
CREATE TABLE IF NOT EXISTS tasks_view (
    id               uuid PRIMARY KEY,
    account_id       uuid        NOT NULL,
    machine_id       uuid        NOT NULL,
    capability       text        NOT NULL,
    input            jsonb,
    constraints      jsonb       NOT NULL,
    auto             boolean     NOT NULL,
    status           text        NOT NULL,
    candidates_count integer     NOT NULL DEFAULT 0,
    candidates       jsonb       NOT NULL DEFAULT '[]'::jsonb,
    dropped          jsonb       NOT NULL DEFAULT '[]'::jsonb,
    route_id         uuid,
    runs_count       integer     NOT NULL DEFAULT 0,
    outcome_code     text,
    version          bigint      NOT NULL,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
);

-- GET /v1/machines/{id}/tasks pages by (created_at, id) within a machine; status and capability filter it.
CREATE INDEX IF NOT EXISTS tasks_view_machine_idx ON tasks_view (machine_id, created_at, id);
