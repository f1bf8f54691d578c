"""The process's one OutboundClient (one connection pool), created on first use on the running event loop."""

from __future__ import annotations

import asyncio

from app.outbound.client import OutboundClient
from app.settings import get_settings

_shared: tuple[asyncio.AbstractEventLoop, OutboundClient] | None = None


def shared_client() -> OutboundClient:
    """The client for this process, configured from settings (MM_ALLOW_PRIVATE_ENDPOINTS).

    Pooled connections belong to one event loop (a worker process has one, Dramatiq's); called from another
    loop this makes a new client for it rather than hand over sockets that loop cannot drive.
    """
    global _shared
    loop = asyncio.get_running_loop()
    if _shared is None or _shared[0] is not loop:
        _shared = (loop, OutboundClient(allow_private=get_settings().allow_private_endpoints))
    return _shared[1]


async def close_shared_client() -> None:
    """Close the pool (worker shutdown). The next shared_client() starts a fresh one."""
    global _shared
    if _shared is not None:
        shared, _shared = _shared, None
        if shared[0] is asyncio.get_running_loop():
            await shared[1].aclose()
