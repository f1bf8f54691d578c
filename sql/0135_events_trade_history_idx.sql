-- Backtests read the recorded task submissions, resolutions and placed orders of a time window (policies).
CREATE INDEX IF NOT EXISTS events_trade_history_idx ON events (recorded_at)
    WHERE type IN ('tasks:Task.Submitted', 'tasks:Task.Resolved', 'market:Order.Placed');
