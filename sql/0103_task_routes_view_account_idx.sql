-- Spend limits sum an account's routed prices since a period's start (policies enforcement).
CREATE INDEX IF NOT EXISTS task_routes_view_account_created_idx ON task_routes_view (account_id, created_at);
