-- A command's X-Request-Id is a valid trace id even when the client sent its own X-Correlation-Id. Only
-- those rows (request id != correlation id) are indexed, so the index stays tiny and appends stay cheap.
CREATE INDEX IF NOT EXISTS events_request_idx ON events ((metadata->>'requestId'))
    WHERE metadata->>'requestId' <> metadata->>'correlationId';
