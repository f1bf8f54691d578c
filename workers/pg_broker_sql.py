"""SQL the PostgreSQL broker's consumer runs on table worker_messages (created by sql/0050)."""

# Claims up to n ready messages; when it finds none, one more row (id NULL) says in how many seconds the next
# queued one is due (NULL: none queued), so an idle consumer knows how long to wait without a second statement.
CLAIM = """
WITH picked AS MATERIALIZED (
    SELECT id FROM worker_messages
    WHERE queue_name = %(queue)s AND state = 'queued' AND eta <= now()
    ORDER BY eta, id
    LIMIT %(n)s
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE worker_messages AS w
    SET state = 'consumed', attempts = w.attempts + 1, consumed_at = now(),
        lease_expires_at = now() + make_interval(secs => %(lease)s), updated_at = now()
    FROM picked WHERE w.id = picked.id
    RETURNING w.id, w.attempts, w.eta, w.message
)
SELECT id, attempts, eta, message, NULL::float8 AS due_in_s FROM claimed
UNION ALL
SELECT NULL, NULL, NULL, NULL, EXTRACT(EPOCH FROM min(eta) - now())::float8 FROM worker_messages
WHERE queue_name = %(queue)s AND state = 'queued' AND NOT EXISTS (SELECT FROM claimed)
HAVING NOT EXISTS (SELECT FROM claimed)
"""
RECLAIM = """
WITH expired AS MATERIALIZED (
    SELECT id FROM worker_messages
    WHERE queue_name = %(queue)s AND state = 'consumed' AND lease_expires_at < now()
    FOR UPDATE SKIP LOCKED
)
UPDATE worker_messages AS w SET state = 'queued', lease_expires_at = NULL, updated_at = now()
FROM expired WHERE w.id = expired.id
"""
RENEW = """
UPDATE worker_messages AS w
SET lease_expires_at = now() + make_interval(secs => %(lease)s), updated_at = now()
FROM unnest(%(ids)s::bigint[], %(attempts)s::int[]) AS t(id, attempts)
WHERE w.id = t.id AND w.attempts = t.attempts AND w.state = 'consumed'
RETURNING w.id
"""
CLEANUP = """
DELETE FROM worker_messages WHERE id IN (
    SELECT id FROM worker_messages
    WHERE queue_name = %(queue)s AND state = 'done' AND updated_at < now() - make_interval(secs => %(keep)s)
    LIMIT 2000 FOR UPDATE SKIP LOCKED)
"""
# Settling is fenced by (id, attempts): after a retry re-queued the row or a lease expired and a peer
# re-claimed it, the stale holder's ack/nack/requeue matches nothing.
ACK = """
UPDATE worker_messages SET state = 'done', lease_expires_at = NULL, updated_at = now()
WHERE id = %(id)s AND attempts = %(attempts)s AND state = 'consumed'
"""
ACK_DELETE = "DELETE FROM worker_messages WHERE id = %(id)s AND attempts = %(attempts)s AND state = 'consumed'"
NACK = """
UPDATE worker_messages SET state = 'rejected', lease_expires_at = NULL, message = %(message)s, updated_at = now()
WHERE id = %(id)s AND attempts = %(attempts)s AND state = 'consumed'
"""
REQUEUE = """
WITH back AS (
    UPDATE worker_messages AS w SET state = 'queued', lease_expires_at = NULL, updated_at = now()
    FROM unnest(%(ids)s::bigint[], %(attempts)s::int[]) AS t(id, attempts)
    WHERE w.id = t.id AND w.attempts = t.attempts AND w.state = 'consumed'
    RETURNING w.id
)
SELECT pg_notify(%(channel)s, %(queue)s) FROM (SELECT 1 FROM back LIMIT 1) AS any_back
"""
