-- Dramatiq message queue for workers/pg_broker.py: one row per message id, its state moves
-- queued -> consumed -> done | rejected (dead letter); retries and lease expiry move it back to queued.
CREATE TABLE IF NOT EXISTS worker_messages (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- Dedupe key: the relay derives it from the event id, so enqueueing twice stores the message once.
    message_id       uuid        NOT NULL UNIQUE,
    queue_name       text        NOT NULL,
    actor_name       text        NOT NULL,
    state            text        NOT NULL DEFAULT 'queued'
                     CHECK (state IN ('queued', 'consumed', 'done', 'rejected')),
    -- Not claimable before this instant: delayed messages and retry back-off live here, not in a .DQ queue.
    eta              timestamptz NOT NULL DEFAULT now(),
    -- options["retries"] of the stored message; a re-enqueue with a higher value is a retry, not a duplicate.
    retries          integer     NOT NULL DEFAULT 0,
    -- Claim counter; doubles as the fencing token so a consumer whose lease expired cannot ack a re-claim.
    attempts         integer     NOT NULL DEFAULT 0,
    -- dramatiq's encoded message (bytes from the configured encoder, JSON by default).
    message          bytea       NOT NULL,
    lease_expires_at timestamptz,
    consumed_at      timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT worker_messages_lease_iff_consumed CHECK ((state = 'consumed') = (lease_expires_at IS NOT NULL))
);

-- Claim path: the oldest ready messages of one queue.
CREATE INDEX IF NOT EXISTS worker_messages_ready_idx
    ON worker_messages (queue_name, eta, id) WHERE state = 'queued';

-- Reclaim path: leases of a queue that expired because their worker died.
CREATE INDEX IF NOT EXISTS worker_messages_lease_idx
    ON worker_messages (queue_name, lease_expires_at) WHERE state = 'consumed';

-- Cleanup path: finished rows past their retention.
CREATE INDEX IF NOT EXISTS worker_messages_done_idx
    ON worker_messages (queue_name, updated_at) WHERE state = 'done';
