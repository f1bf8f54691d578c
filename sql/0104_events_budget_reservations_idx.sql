-- Which spend budgets a task reserved, so a failed or cancelled task releases exactly those (policies).
CREATE INDEX IF NOT EXISTS events_budget_reservations_idx ON events ((data->>'task_id'))
    WHERE type = 'policies:SpendBudget.Reserved';
