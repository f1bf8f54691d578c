"""The stub seller as its own process (the bench's way) and the process-wide shared client."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys

import pytest

from app.outbound import (
    OutboundClient,
    OutboundRefused,
    close_shared_client,
    configure_shared_client,
    shared_client,
)
from app.outbound.stub_seller import StubSeller
from app.settings import get_settings


async def test_the_stub_runs_as_a_process_with_stats_over_http() -> None:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "app.outbound.stub_seller",
                                                stdout=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        url = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
        assert url.startswith("http://127.0.0.1:")
        async with OutboundClient(allow_private=True) as client:
            for key in ("a", "a", "b"):
                answer = await client.request(f"{url}/echo", idempotency_key=key, json={"k": key},
                                              bearer_token="tok", timeout_s=10)
                assert answer.json() == {"output": {"k": key}}
            stats = (await client.request(f"{url}/_stats", idempotency_key="s", method="GET")).json()
            assert stats["total"] == 3 and stats["byKey"] == {"a": 2, "b": 1}
            assert stats["authorizations"] == ["Bearer tok"] * 3
            assert (await client.request(f"{url}/_reset", idempotency_key="r")).status == 204
            assert (await client.request(f"{url}/_stats", idempotency_key="s", method="GET")).json()["total"] == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0


def test_the_stub_accepts_connections_once_its_url_is_known() -> None:
    # The process prints its URL before uvicorn starts serving: a connection made in between must wait in the
    # backlog, not be refused, and is answered once the server runs.
    seller = StubSeller()
    with socket.create_connection((seller.host, seller.port), timeout=5) as early:
        early.sendall(b"GET /_stats HTTP/1.1\r\nHost: stub\r\nConnection: close\r\n\r\n")
        with seller:
            assert early.recv(64).startswith(b"HTTP/1.1 200")


async def test_one_shared_client_per_process_until_closed() -> None:
    first = shared_client()
    assert shared_client() is first
    assert first.allow_private is get_settings().allow_private_endpoints
    await close_shared_client()
    second = shared_client()
    assert second is not first
    await close_shared_client()


async def test_tests_can_configure_the_shared_client() -> None:
    async def to_loopback(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    with StubSeller() as stub:
        try:
            configure_shared_client(allow_private=False, resolver=to_loopback)
            with pytest.raises(OutboundRefused, match="loopback"):
                await shared_client().request(f"http://seller.invalid:{stub.port}/", idempotency_key="k")
            await close_shared_client()
            configure_shared_client(allow_private=True, resolver=to_loopback)
            answer = await shared_client().request(f"http://seller.invalid:{stub.port}/", idempotency_key="k")
            assert answer.status == 200 and stub.stats.hosts == [f"seller.invalid:{stub.port}"]
        finally:
            await close_shared_client()
            configure_shared_client()
    assert shared_client().allow_private is get_settings().allow_private_endpoints
    await close_shared_client()
