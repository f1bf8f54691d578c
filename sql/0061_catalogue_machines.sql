-- The catalogue's own copy of machine state (projection "catalogue"): whether each machine is operational
-- (identity verified and active) and its display name. Read models never read one another while folding.
CREATE TABLE IF NOT EXISTS catalogue_machines (
    id                uuid PRIMARY KEY,
    account_id        uuid        NOT NULL,
    name              text        NOT NULL,
    identity_verified boolean     NOT NULL,
    status            text        NOT NULL,
    operational       boolean     GENERATED ALWAYS AS (identity_verified AND status = 'active') STORED,
    version           bigint      NOT NULL,
    updated_at        timestamptz NOT NULL
);
