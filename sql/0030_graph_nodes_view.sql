-- Read model of machine graph nodes (projection "graph"). Rebuilt by replay; never written by the API.
CREATE TABLE IF NOT EXISTS graph_nodes_view (
    id         uuid PRIMARY KEY,
    machine_id uuid        NOT NULL,
    account_id uuid        NOT NULL,
    type       text        NOT NULL,
    label      text        NOT NULL,
    status     text        NOT NULL,
    data       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    version    bigint      NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);

CREATE INDEX IF NOT EXISTS graph_nodes_view_machine_idx ON graph_nodes_view (machine_id, created_at, id);
-- For the catalogue, which lists active capability nodes across machines.
CREATE INDEX IF NOT EXISTS graph_nodes_view_type_status_idx ON graph_nodes_view (type, status);
