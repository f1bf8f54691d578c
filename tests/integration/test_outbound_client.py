"""The outbound client over real HTTP against the stub seller on loopback (and a few raw servers)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence

import httpx
import pytest

from app.outbound import (
    OutboundClient,
    OutboundConnectError,
    OutboundProtocolError,
    OutboundRefused,
    OutboundRequestInvalid,
    OutboundTimeout,
    ResponseTooLarge,
)
from app.outbound.stub_seller import StubSeller


@pytest.fixture(scope="module")
def seller() -> Iterator[StubSeller]:
    with StubSeller() as stub:
        yield stub


@pytest.fixture
def stub(seller: StubSeller) -> StubSeller:
    seller.stats.reset()
    return seller


@pytest.fixture
async def client() -> AsyncIterator[OutboundClient]:
    async with OutboundClient(allow_private=True) as c:
        yield c


def resolving(table: dict[str, list[str]], calls: list[str] | None = None) -> Callable[[str, int],
                                                                                       Awaitable[Sequence[str]]]:
    async def resolve(host: str, port: int) -> Sequence[str]:
        if calls is not None:
            calls.append(host)
        return table[host]

    return resolve


async def test_a_json_call_reaches_the_seller_with_its_key_and_token(client: OutboundClient, stub: StubSeller) -> None:
    answer = await client.request(f"{stub.url}/echo", idempotency_key="run-1", json={"prompt": "hi"},
                                  bearer_token="tok-123", timeout_s=5)
    assert answer.status == 200 and answer.json() == {"output": {"prompt": "hi"}}
    assert answer.headers["content-type"] == "application/json" and answer.elapsed_ms > 0
    assert answer.peer == f"127.0.0.1:{stub.port}"
    assert stub.stats.calls("run-1") == 1 and stub.stats.authorizations == ["Bearer tok-123"]
    seen = stub.stats.requests[-1]
    assert seen["method"] == "POST" and seen["headers"]["content-type"] == "application/json"
    assert seen["headers"]["accept-encoding"] == "identity"


async def test_content_is_sent_byte_for_byte_with_extra_headers(client: OutboundClient, stub: StubSeller) -> None:
    body = b'{"specversion":"1.0",  "id":"e1"}'
    await client.request(f"{stub.url}/echo", idempotency_key="d-1", content=body,
                         content_type="application/cloudevents+json", headers={"MM-Signature": "t=1,v1=ab cd"})
    seen = stub.stats.requests[-1]
    assert seen["body"] == body and seen["headers"]["mm-signature"] == "t=1,v1=ab cd"
    assert seen["headers"]["content-type"] == "application/cloudevents+json"
    assert "authorization" not in seen["headers"]


@pytest.mark.parametrize("status", [201, 400, 404, 409, 422, 429, 500, 503])
async def test_the_status_is_relayed_with_the_body(client: OutboundClient, stub: StubSeller, status: int) -> None:
    answer = await client.request(f"{stub.url}/status/{status}", idempotency_key=f"s-{status}", json={"a": 1})
    assert answer.status == status
    assert answer.json() == {"error": "stub-status", "status": status, "input": {"a": 1}}


async def test_a_behaviour_can_come_from_the_json_body(client: OutboundClient, stub: StubSeller) -> None:
    answer = await client.request(stub.url, idempotency_key="j-1", json={"stub": {"status": 418}})
    assert answer.status == 418


async def test_a_redirect_is_returned_not_followed(client: OutboundClient, stub: StubSeller) -> None:
    answer = await client.request(f"{stub.url}/redirect", idempotency_key="r-1", json={})
    assert (answer.status, answer.headers["location"]) == (302, "/echo")
    assert stub.stats.total == 1  # /echo was never called


async def test_flaky_answers_503_until_the_same_key_has_called_enough(client: OutboundClient,
                                                                      stub: StubSeller) -> None:
    statuses = [(await client.request(f"{stub.url}/flaky/2", idempotency_key="f-1", json={})).status
                for _ in range(3)]
    assert statuses == [503, 503, 200] and stub.stats.calls("f-1") == 3


async def test_cookies_a_seller_sets_are_never_sent_back(client: OutboundClient, stub: StubSeller) -> None:
    first = await client.request(f"{stub.url}/cookie", idempotency_key="c-1", json={})
    assert "set-cookie" in first.headers
    await client.request(f"{stub.url}/echo", idempotency_key="c-2", json={})
    assert "cookie" not in stub.stats.requests[-1]["headers"]


async def test_a_slow_seller_times_out(client: OutboundClient, stub: StubSeller) -> None:
    started = time.monotonic()
    with pytest.raises(OutboundTimeout) as failed:
        await client.request(f"{stub.url}/sleep/3000", idempotency_key="t-1", json={}, timeout_s=0.3)
    assert failed.value.error_class == "timeout" and failed.value.retryable
    assert time.monotonic() - started < 2


async def test_the_total_timeout_stops_a_seller_that_drips(client: OutboundClient) -> None:
    """Each byte arrives well within the read timeout; the call's deadline still ends it."""
    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        for _ in range(1000):
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(0.05)

    server = await asyncio.start_server(drip, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    started = time.monotonic()
    try:
        with pytest.raises(OutboundTimeout):
            await client.request(f"http://127.0.0.1:{port}/", idempotency_key="drip", json={}, timeout_s=0.5)
    finally:
        server.close()
    assert time.monotonic() - started < 2


async def test_a_closed_port_is_a_connect_error(client: OutboundClient) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(OutboundConnectError) as failed:
        await client.request(f"http://127.0.0.1:{port}/", idempotency_key="x", json={}, timeout_s=2)
    assert failed.value.error_class == "connect" and failed.value.retryable


async def test_a_body_past_the_cap_is_refused(client: OutboundClient, stub: StubSeller) -> None:
    with pytest.raises(ResponseTooLarge) as failed:
        await client.request(f"{stub.url}/big", idempotency_key="b-1", json={})
    assert failed.value.error_class == "response-too-large" and failed.value.limit == 1024 * 1024
    small = await client.request(f"{stub.url}/big/100", idempotency_key="b-2", json={}, max_body_bytes=100)
    assert len(small.body) == 100
    with pytest.raises(ResponseTooLarge):
        await client.request(f"{stub.url}/big/101", idempotency_key="b-3", json={}, max_body_bytes=100)


async def test_a_chunked_body_is_cut_at_the_cap_while_reading(client: OutboundClient) -> None:
    """No Content-Length to refuse up front: reading stops at the cap, not at the (endless) end."""
    sent = 0

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * 65536
        try:
            while sent < 64 * 1024 * 1024:
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                await writer.drain()
                sent += len(chunk)
        except ConnectionError:
            pass

    server = await asyncio.start_server(endless, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(ResponseTooLarge):
            await client.request(f"http://127.0.0.1:{port}/", idempotency_key="chunked", json={}, timeout_s=5)
    finally:
        server.close()
    assert sent < 16 * 1024 * 1024


async def test_a_name_resolving_to_loopback_is_refused_with_the_flag_off(stub: StubSeller) -> None:
    async with OutboundClient(allow_private=False,
                              resolver=resolving({"seller.invalid": ["127.0.0.1"]})) as strict:
        with pytest.raises(OutboundRefused, match=r"seller\.invalid resolves to 127\.0\.0\.1: loopback") as refused:
            await strict.request(f"http://seller.invalid:{stub.port}/echo", idempotency_key="k", json={})
        with pytest.raises(OutboundRefused, match="loopback"):  # the stub itself, by its literal address
            await strict.request(f"{stub.url}/echo", idempotency_key="k", json={})
    assert refused.value.error_class == "ssrf-refused"
    assert stub.stats.total == 0


async def test_with_the_flag_on_it_connects_to_the_checked_address_under_the_name(stub: StubSeller) -> None:
    """seller.invalid exists in no DNS: reaching the stub proves the socket went to the address the guard
    checked, and a rebinding resolver (another answer on a second lookup) is never asked again."""
    answers = iter([["127.0.0.1"], ["127.0.0.2"]])
    calls: list[str] = []

    async def rebinding(host: str, port: int) -> Sequence[str]:
        calls.append(host)
        return next(answers)

    async with OutboundClient(allow_private=True, resolver=rebinding) as lax:
        answer = await lax.request(f"http://seller.invalid:{stub.port}/echo", idempotency_key="k", json={"a": 1})
        again = await lax.request(f"http://seller.invalid:{stub.port}/echo", idempotency_key="k", json={"a": 2})
    assert (answer.status, answer.peer, again.peer) == (200, f"127.0.0.1:{stub.port}", f"127.0.0.1:{stub.port}")
    assert stub.stats.hosts == [f"seller.invalid:{stub.port}"] * 2
    assert calls == ["seller.invalid"]  # one lookup; the pooled connection carried the second call


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data/iam/", "http://[fd00:ec2::254]/",
                                 "http://[::ffff:169.254.169.254]/", "http://metadata.invalid/"])
async def test_cloud_metadata_is_refused_even_with_the_flag_on(url: str) -> None:
    async with OutboundClient(allow_private=True,
                              resolver=resolving({"metadata.invalid": ["169.254.169.254"]})) as lax:
        with pytest.raises(OutboundRefused, match="cloud metadata"):
            await lax.request(url, idempotency_key="k", json={}, timeout_s=2)


@pytest.mark.parametrize("url", ["http://10.0.0.1/run", "http://192.168.1.20:8080/", "http://[::1]:9/",
                                 "http://0.0.0.0:80/", "http://[fe80::1]/", "http://100.64.1.1/"])
async def test_a_literal_non_public_address_is_refused_without_connecting(url: str) -> None:
    started = time.monotonic()
    async with OutboundClient(allow_private=False) as strict:
        with pytest.raises(OutboundRefused):
            await strict.request(url, idempotency_key="k", json={}, timeout_s=5)
    assert time.monotonic() - started < 1  # refused, not a connect attempt timing out


async def test_a_name_with_one_public_and_one_private_address_is_refused(stub: StubSeller) -> None:
    mixed = resolving({"mixed.invalid": ["93.184.216.34", "127.0.0.1"]})
    async with OutboundClient(allow_private=False, resolver=mixed) as strict:
        with pytest.raises(OutboundRefused, match=r"resolves to 127\.0\.0\.1"):
            await strict.request(f"http://mixed.invalid:{stub.port}/", idempotency_key="k", json={})
    assert stub.stats.total == 0


@pytest.mark.parametrize("url", ["ftp://example.com/", "https://user:pw@example.com/", "file:///etc/passwd"])
async def test_other_schemes_and_userinfo_are_refused(client: OutboundClient, url: str) -> None:
    with pytest.raises(OutboundRefused):
        await client.request(url, idempotency_key="k", json={})


async def test_proxy_variables_are_ignored(client: OutboundClient, stub: StubSeller,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy would open the connection for us, past the guard: the environment's proxies never apply."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    async with OutboundClient(allow_private=True) as fresh:
        assert (await fresh.request(f"{stub.url}/echo", idempotency_key="p", json={})).status == 200


@pytest.mark.parametrize(("kwargs", "secret"), [
    ({"bearer_token": "tok\r\nX-Injected: 1"}, "X-Injected"),
    ({"idempotency_key": "k\nX-Injected: 1"}, "X-Injected"),
    ({"headers": {"X-Extra": "v\r\nX-Injected: 1"}}, "X-Injected"),
    ({"headers": {"Authorization": "Basic abc"}}, "abc"),
    ({"headers": {"Host": "evil.example"}}, "evil"),
])
async def test_header_injection_is_refused_without_echoing_the_value(client: OutboundClient, stub: StubSeller,
                                                                     kwargs: dict[str, object], secret: str) -> None:
    call: dict[str, object] = {"idempotency_key": "k", "json": {}, **kwargs}
    with pytest.raises(OutboundRequestInvalid) as refused:
        await client.request(f"{stub.url}/echo", **call)  # type: ignore[arg-type]
    assert secret not in str(refused.value) and stub.stats.total == 0


async def test_no_token_body_or_query_reaches_the_logs(client: OutboundClient, stub: StubSeller,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="httpcore")
    secrets = ["TOKEN-s3cr3t", "BODY-s3cr3t", "QUERY-s3cr3t", "PATH-s3cr3t"]
    errors: list[str] = []
    await client.request(f"{stub.url}/echo/PATH-s3cr3t?key=QUERY-s3cr3t", idempotency_key="log-1",
                         json={"p": "BODY-s3cr3t"}, bearer_token="TOKEN-s3cr3t")
    for path, timeout in (("/sleep/2000", 0.2), ("/big", 5.0)):
        with pytest.raises((OutboundTimeout, ResponseTooLarge)) as failed:
            await client.request(f"{stub.url}{path}/PATH-s3cr3t?key=QUERY-s3cr3t", idempotency_key="log-2",
                                 json={"p": "BODY-s3cr3t"}, bearer_token="TOKEN-s3cr3t", timeout_s=timeout)
        errors.append(str(failed.value))
    assert caplog.records, "nothing was logged: the test would prove nothing"
    # The client's own line names the origin (httpx, which logged the full URL, is no longer on the path).
    assert any("outbound POST" in r.getMessage() and f"127.0.0.1:{stub.port}" in r.getMessage()
               for r in caplog.records)
    for secret in secrets:
        assert secret not in caplog.text and not any(secret in e for e in errors), secret


async def test_the_next_checked_address_is_tried_when_one_refuses(stub: StubSeller) -> None:
    """127.0.0.2 is loopback too, but nothing listens there: the second address the guard passed answers."""
    two = resolving({"two.invalid": ["127.0.0.2", "127.0.0.1"]})
    async with OutboundClient(allow_private=True, resolver=two) as lax:
        answer = await lax.request(f"http://two.invalid:{stub.port}/echo", idempotency_key="k", json={})
    assert answer.peer == f"127.0.0.1:{stub.port}"


async def test_a_peer_that_hangs_up_without_answering_is_a_protocol_error(client: OutboundClient) -> None:
    async def rude(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(rude, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(OutboundProtocolError) as failed:
            await client.request(f"http://127.0.0.1:{port}/", idempotency_key="k", json={}, timeout_s=5)
    finally:
        server.close()
    assert failed.value.error_class == "protocol" and failed.value.retryable


async def test_a_pooled_connection_the_peer_closed_is_not_reused(client: OutboundClient) -> None:
    """The server answers once per connection (keep-alive advertised) then hangs up: the next call must see
    the idle connection as closed and open another, not fail on a dead socket."""
    connections = 0

    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)  # the body: {}
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n{}")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(once, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        for _ in range(3):
            answer = await client.request(f"http://127.0.0.1:{port}/", idempotency_key="k", json={}, timeout_s=5)
            assert answer.status == 200
            await asyncio.sleep(0.05)  # the FIN arrives while the connection idles in the pool
    finally:
        server.close()
    assert connections == 3


@pytest.mark.parametrize("url", ["http://2130706433/", "http://0x7f.1/", "http://127.1/", "http://localhost/",
                                 "http://[::]/", "http://0/", "http://[::ffff:7f00:1]/"])
async def test_odd_spellings_of_local_addresses_are_refused_by_what_they_resolve_to(url: str) -> None:
    """The system resolver reads 2130706433, 0x7f.1 and 127.1 as 127.0.0.1: the guard judges the address."""
    async with OutboundClient(allow_private=False) as strict:
        with pytest.raises(OutboundRefused, match=r"loopback|unspecified"):
            await strict.request(url, idempotency_key="k", timeout_s=2)


async def test_other_httpx_users_keep_their_log_lines(stub: StubSeller, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="httpx")
    async with httpx.AsyncClient() as plain:
        await plain.post(f"{stub.url}/echo/kept?q=1", json={})
    assert any(r.name == "httpx" and "/echo/kept?q=1" in r.getMessage() for r in caplog.records)
