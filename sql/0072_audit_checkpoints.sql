-- Signed audit checkpoints (projection "audit"): the account's chain had `seq` records, the last of them at
-- (tx_id, position) with `last_hash`, signed with the platform key at log time `at`.
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    account_key uuid        NOT NULL,
    seq         bigint      NOT NULL,
    tx_id       bigint      NOT NULL,
    position    bigint      NOT NULL,
    last_hash   bytea       NOT NULL,
    at          timestamptz NOT NULL,
    key_id      text        NOT NULL,
    signature   bytea       NOT NULL,
    PRIMARY KEY (account_key, seq),
    UNIQUE (tx_id, position)
);
