-- Read model of machine graph edges (projection "graph"). Rebuilt by replay; never written by the API.
CREATE TABLE IF NOT EXISTS graph_edges_view (
    id           uuid PRIMARY KEY,
    machine_id   uuid        NOT NULL,
    account_id   uuid        NOT NULL,
    from_node_id uuid        NOT NULL,
    to_node_id   uuid        NOT NULL,
    type         text        NOT NULL,
    data         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    version      bigint      NOT NULL,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL
);

CREATE INDEX IF NOT EXISTS graph_edges_view_machine_idx ON graph_edges_view (machine_id, created_at, id);
