-- One drainer per endpoint at a time (in-order delivery): a lease, taken and renewed by UPDATE, never a
-- transaction held open across an HTTP call.
CREATE TABLE IF NOT EXISTS webhook_endpoint_leases (
    endpoint_id  uuid PRIMARY KEY,
    holder       uuid        NOT NULL,
    locked_until timestamptz NOT NULL
);
