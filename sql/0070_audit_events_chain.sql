-- The audit hash chain (projection "audit"): each record's place in its account's chain and its hashes.
-- Nullable because rows written before this file have none: they are not backfilled here, since the chain is a
-- fold over the log in Python's canonical form and checkpoints need the projector's key. The projector
-- rebuilds the audit projection when it finds unhashed rows (projections/audit_upgrade.py).
ALTER TABLE audit_events ADD COLUMN IF NOT EXISTS seq bigint;
ALTER TABLE audit_events ADD COLUMN IF NOT EXISTS prev_hash bytea;
ALTER TABLE audit_events ADD COLUMN IF NOT EXISTS hash bytea;
