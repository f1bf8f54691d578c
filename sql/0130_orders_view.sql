-- Read model of market orders (projection "orders"): one row per order, listed by its buyer or its seller.
CREATE TABLE IF NOT EXISTS orders_view (
    id                uuid PRIMARY KEY,
    buyer_account_id  uuid        NOT NULL,
    buyer_machine_id  uuid        NOT NULL,
    seller_account_id uuid        NOT NULL,
    seller_machine_id uuid        NOT NULL,
    listing_id        uuid        NOT NULL,
    task_id           uuid        NOT NULL,
    capability        text        NOT NULL,
    amount            bigint      NOT NULL,
    fee               bigint      NOT NULL,
    currency          text        NOT NULL,
    status            text        NOT NULL,
    payment_status    text        NOT NULL,
    escrow_status     text        NOT NULL,
    version           bigint      NOT NULL,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL
);

CREATE INDEX IF NOT EXISTS orders_view_buyer_idx ON orders_view (buyer_account_id, created_at, id);
CREATE INDEX IF NOT EXISTS orders_view_seller_idx ON orders_view (seller_account_id, created_at, id);
CREATE INDEX IF NOT EXISTS orders_view_task_idx ON orders_view (task_id);
