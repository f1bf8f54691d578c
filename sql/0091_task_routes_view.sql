-- Read model of resolved routes (projection "tasks"): one row per Resolved event, with the whole explanation
-- (ranked candidates with score, reason, features and seller record; excluded ones; discovery's drops).
CREATE TABLE IF NOT EXISTS task_routes_view (
    id          uuid PRIMARY KEY,
    task_id     uuid        NOT NULL,
    account_id  uuid        NOT NULL,
    machine_id  uuid        NOT NULL,
    capability  text        NOT NULL,
    strategy    text        NOT NULL,
    chosen      jsonb       NOT NULL,
    steps       jsonb       NOT NULL,
    ranked      jsonb       NOT NULL,
    excluded    jsonb       NOT NULL,
    dropped     jsonb       NOT NULL,
    created_at  timestamptz NOT NULL
);

CREATE INDEX IF NOT EXISTS task_routes_view_machine_idx ON task_routes_view (machine_id, created_at, id);
CREATE INDEX IF NOT EXISTS task_routes_view_task_idx ON task_routes_view (task_id);
