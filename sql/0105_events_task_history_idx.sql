-- Backtests read the recorded task submissions and resolutions of a time window (policies).
CREATE INDEX IF NOT EXISTS events_task_history_idx ON events (recorded_at)
    WHERE type IN ('tasks:Task.Submitted', 'tasks:Task.Resolved');
