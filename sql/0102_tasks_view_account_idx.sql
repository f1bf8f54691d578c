-- Rate limits count an account's task creations in a trailing window (policies enforcement).
CREATE INDEX IF NOT EXISTS tasks_view_account_created_idx ON tasks_view (account_id, created_at);
