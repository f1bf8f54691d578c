-- API keys as authentication reads them. Written in the same transaction as the account events that issue
-- or revoke them (app/store/credentials.py), never by a projection: a key works from the moment the response
-- showing it is sent, and a revoked key stops when the revocation is acknowledged. Only SHA-256 digests.
CREATE TABLE IF NOT EXISTS api_key_credentials (
    key_hash   text        PRIMARY KEY,
    key_id     uuid        NOT NULL UNIQUE,
    account_id uuid        NOT NULL,
    is_admin   boolean     NOT NULL,
    revoked_at timestamptz
);

-- Keys recorded before this table existed, straight from the log (not from a read model that may lag).
INSERT INTO api_key_credentials (key_hash, key_id, account_id, is_admin)
SELECT k.data->>'key_hash', (k.data->>'key_id')::uuid, k.stream_id, (o.data->>'is_admin')::boolean
FROM events k
JOIN events o ON o.stream_id = k.stream_id AND o.type = 'accounts:Account.Opened'
WHERE k.type = 'accounts:Account.ApiKeyIssued'
ON CONFLICT DO NOTHING;

UPDATE api_key_credentials c SET revoked_at = (r.data->>'timestamp')::timestamptz
FROM events r
WHERE r.type = 'accounts:Account.ApiKeyRevoked' AND (r.data->>'key_id')::uuid = c.key_id AND c.revoked_at IS NULL;
