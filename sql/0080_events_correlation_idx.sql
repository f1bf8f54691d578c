-- Causation traces (GET /v1/traces/{id}, mm debug bundle) find every event one request caused by its
-- correlation id; actors copy the triggering event's correlation id, so one index lookup finds the whole tree.
CREATE INDEX IF NOT EXISTS events_correlation_idx ON events ((metadata->>'correlationId'));
