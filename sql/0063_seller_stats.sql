-- Seller reputation (projection "seller_stats"), folded from tasks:Task.RunFinished in log order with event
-- times only, so a rebuild reproduces it. cooling_down_until is compared with now() at read time.
CREATE TABLE IF NOT EXISTS seller_stats (
    machine_id           uuid PRIMARY KEY,
    account_id           uuid        NOT NULL,
    runs                 bigint      NOT NULL,
    successes            bigint      NOT NULL,
    consecutive_failures integer     NOT NULL,
    cooling_down_until   timestamptz,
    -- The latest latencies, oldest first, at most MM_SELLER_LATENCY_WINDOW of them; p50 is their lower median.
    recent_latencies_ms  integer[]   NOT NULL,
    p50_latency_ms       integer,
    last_run_at          timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL
);
