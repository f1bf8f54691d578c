-- Read model of task outcomes (projection "tasks"): one row per finished task. output is the finishing run's
-- body. The projection NOTIFYs mm_task_outcomes with the task id when it writes a row (delivered at commit),
-- which wakes an execute request waiting for it.
CREATE TABLE IF NOT EXISTS task_outcomes_view (
    task_id     uuid PRIMARY KEY,
    account_id  uuid        NOT NULL,
    machine_id  uuid        NOT NULL,
    capability  text        NOT NULL,
    status      text        NOT NULL,
    code        text,
    detail      text,
    run_id      uuid,
    http_status integer,
    output      jsonb,
    finished_at timestamptz NOT NULL
);

CREATE INDEX IF NOT EXISTS task_outcomes_view_machine_idx ON task_outcomes_view (machine_id, finished_at, task_id);
