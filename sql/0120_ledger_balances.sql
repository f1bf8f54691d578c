-- Read model of the ledger (projection "ledger"): the balance of every ledger account per currency, the fold of
-- every posting. Platform ledger accounts (fees, external) have the nil account id. Rebuilt by replay.
CREATE TABLE IF NOT EXISTS ledger_balances (
    ledger     text        NOT NULL,  -- available | escrow | fees | external
    account_id uuid        NOT NULL,
    currency   text        NOT NULL,
    balance    bigint      NOT NULL,
    version    bigint      NOT NULL,  -- postings applied to this ledger account
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (account_id, currency, ledger)
);
