-- Every version of every policy (projection "policies"): one row per Defined or Revised event.
CREATE TABLE IF NOT EXISTS policy_versions_view (
    policy_id   uuid        NOT NULL,
    version     bigint      NOT NULL,
    account_id  uuid        NOT NULL,
    platform    boolean     NOT NULL,
    name        text        NOT NULL,
    description text        NOT NULL,
    scope       jsonb       NOT NULL,
    mode        text        NOT NULL,
    rules       jsonb       NOT NULL,
    changed     text[]      NOT NULL,
    actor       text,
    recorded_at timestamptz NOT NULL,
    PRIMARY KEY (policy_id, version)
);
