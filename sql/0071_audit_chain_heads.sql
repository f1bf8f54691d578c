-- The head of each account's audit chain (projection "audit"): where the next record links, and what is not
-- yet covered by a signed checkpoint. account_key is the account id, or the nil UUID for account-less events.
CREATE TABLE IF NOT EXISTS audit_chain_heads (
    account_key      uuid PRIMARY KEY,
    seq              bigint      NOT NULL,
    hash             bytea       NOT NULL,
    tx_id            bigint      NOT NULL,
    position         bigint      NOT NULL,
    checkpointed_seq bigint      NOT NULL DEFAULT 0,
    -- occurredAt of the oldest record not yet under a checkpoint (NULL: none pending)
    pending_since    timestamptz
);

CREATE INDEX IF NOT EXISTS audit_chain_heads_pending_idx ON audit_chain_heads (pending_since)
    WHERE pending_since IS NOT NULL;
