-- The audit feed filters on ?correlationId= (everything one request caused), in log order.
CREATE INDEX IF NOT EXISTS audit_events_correlation_idx ON audit_events (correlation_id, tx_id, position);
