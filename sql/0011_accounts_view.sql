-- Read model of accounts (projection "accounts").
CREATE TABLE IF NOT EXISTS accounts_view (
    id         uuid PRIMARY KEY,
    name       text        NOT NULL,
    is_admin   boolean     NOT NULL,
    created_at timestamptz NOT NULL
);
