-- One row per posting (projection "ledger"): an account's statement, in log order, with the balance after it.
CREATE TABLE IF NOT EXISTS ledger_entries (
    tx_id         bigint      NOT NULL,
    position      bigint      NOT NULL,
    line          smallint    NOT NULL,  -- the posting's index within its event
    event_id      uuid        NOT NULL,
    type          text        NOT NULL,  -- the movement's public name, e.g. ledger.deposited
    ledger        text        NOT NULL,
    account_id    uuid        NOT NULL,
    currency      text        NOT NULL,
    amount        bigint      NOT NULL,  -- signed minor units: credit > 0, debit < 0
    balance_after bigint      NOT NULL,
    order_id      uuid,
    counterparty  uuid,                  -- the other platform account in a release (seller or buyer)
    recorded_at   timestamptz NOT NULL,
    PRIMARY KEY (tx_id, position, line)
);

CREATE INDEX IF NOT EXISTS ledger_entries_account_idx ON ledger_entries (account_id, tx_id, position, line);
CREATE INDEX IF NOT EXISTS ledger_entries_order_idx ON ledger_entries (order_id) WHERE order_id IS NOT NULL;
