"""The process's one OutboundClient (one connection pool), created on first use on the running event loop."""

from __future__ import annotations

import asyncio

from app.outbound.client import OutboundClient
from app.outbound.guard import Resolver, system_resolver
from app.settings import get_settings

_shared: tuple[asyncio.AbstractEventLoop, OutboundClient] | None = None
_allow_private: bool | None = None  # None: MM_ALLOW_PRIVATE_ENDPOINTS decides
_resolver: Resolver = system_resolver


def shared_client() -> OutboundClient:
    """The client for this process, configured from settings (MM_ALLOW_PRIVATE_ENDPOINTS).

    Pooled connections belong to one event loop (a worker process has one, Dramatiq's); called from another
    loop this makes a new client for it rather than hand over sockets that loop cannot drive.
    """
    global _shared
    loop = asyncio.get_running_loop()
    if _shared is None or _shared[0] is not loop:
        allow = get_settings().allow_private_endpoints if _allow_private is None else _allow_private
        _shared = (loop, OutboundClient(allow_private=allow, resolver=_resolver))
    return _shared[1]


def configure_shared_client(*, allow_private: bool | None = None, resolver: Resolver | None = None) -> None:
    """Tests running actors in process: the flag and resolver the next shared_client() is built with.

    Call with no arguments to go back to the settings and the system resolver. The current client, if any,
    is dropped (its idle connections close when it is collected); call close_shared_client() first to close it.
    """
    global _shared, _allow_private, _resolver
    _shared, _allow_private, _resolver = None, allow_private, resolver or system_resolver


async def close_shared_client() -> None:
    """Close the pool (worker shutdown). The next shared_client() starts a fresh one."""
    global _shared
    if _shared is not None:
        shared, _shared = _shared, None
        if shared[0] is asyncio.get_running_loop():
            await shared[1].aclose()
