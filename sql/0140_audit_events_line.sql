-- The record's NDJSON export line (UTF-8, newline included), rendered by PostgreSQL when the audit projection
-- inserts the row (projections/audit_reader.py RECORD_LINE, the same expression the export falls back to), so an
-- export reads it instead of rendering ~40 functions a row: PostgreSQL's rendering bounded the export (ops/bench
-- `export`). Derived from the row's other columns: whatever updates those must set line NULL (or re-render it).
-- Nullable and not backfilled: rows written before this file (and rebuilt ones until the projector rewrites them)
-- are rendered at export time, byte for byte the same; adding a nullable column rewrites nothing.
ALTER TABLE audit_events ADD COLUMN IF NOT EXISTS line bytea;
