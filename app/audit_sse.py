"""The Server-Sent Events wire form of an audit record: `id:` its cursor, `event:` its type, `data:` the record."""

from __future__ import annotations

import asyncpg
import msgspec

from app.api.audit_formats import record_of

_encode = msgspec.json.Encoder().encode


def sse_frame(r: asyncpg.Record) -> bytes:
    rec = record_of(r)
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (rec.cursor.encode(), rec.type.encode(), _encode(rec))
