"""A stub seller: a real HTTP server on loopback for tests, `mm demo` and the bench.

Behaviour per request, from path segments (applied left to right) or a JSON body's "stub" object:
  /echo (or any other path)  200 {"output": <the JSON input>}
  /status/N                  status N with {"error": "stub-status", "status": N, "input": ...}
  /sleep/MS                  wait MS milliseconds first
  /big/BYTES                 200 with a BYTES-long body (/big alone: 2 MiB, past the client's 1 MiB cap)
  /redirect                  302 to /echo (a client must not follow it)
  /flaky/N                   503 for the first N calls with the same Idempotency-Key, then as the rest says
  /cookie                    also sets a cookie (a client must not send it back)
  /receipt/SEED              a 200 also carries X-MM-Receipt: an Ed25519 signature (key: the base64url raw seed)
                             over the hex SHA-256 of the body, as a seller signs its execution evidence
e.g. /sleep/200/status/503, or a body {"stub": {"sleepMs": 200, "status": 503}, ...}.
GET /_stats answers the counters as JSON; POST /_reset clears them. In process, read `StubSeller.stats`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import hashlib
import json
import signal
import socket
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from types import TracebackType
from typing import Any

import uvicorn

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
BIG_DEFAULT = 2 * 1024 * 1024
_MAX_REQUEST_BYTES = 4 * 1024 * 1024


class StubStats:
    """What the stub saw; written on the server's thread, read from any (one lock)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.total = 0
            self.by_key: collections.Counter[str] = collections.Counter()
            self.authorizations: list[str | None] = []  # the Authorization header of each call, in order
            self.hosts: list[str | None] = []  # the Host header of each call, in order
            # The last 1,000 calls: method, path, headers (lower-cased names) and body, for webhook tests.
            self.requests: collections.deque[dict[str, Any]] = collections.deque(maxlen=1000)

    def record(self, method: str, path: str, headers: dict[str, str], body: bytes) -> int:
        """Count a call; the number of calls so far with its Idempotency-Key (this one included)."""
        key = headers.get("idempotency-key", "")
        with self._lock:
            self.total += 1
            self.by_key[key] += 1
            self.authorizations.append(headers.get("authorization"))
            self.hosts.append(headers.get("host"))
            self.requests.append({"method": method, "path": path, "headers": headers, "body": body})
            return self.by_key[key]

    def calls(self, idempotency_key: str) -> int:
        with self._lock:
            return self.by_key[idempotency_key]

    def as_json(self) -> dict[str, Any]:
        with self._lock:
            return {"total": self.total, "byKey": dict(self.by_key), "authorizations": list(self.authorizations),
                    "hosts": list(self.hosts)}


def make_app(stats: StubStats) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await _read_body(receive)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        path, method = scope["path"], scope["method"]
        if path == "/_stats":
            return await _reply(send, 200, json.dumps(stats.as_json()).encode())
        if path == "/_reset":
            stats.reset()
            return await _reply(send, 204, b"")
        nth = stats.record(method, path, headers, body)
        payload = _json(body)
        plan = _plan(path, payload)
        if plan.get("sleepMs"):
            await asyncio.sleep(int(plan["sleepMs"]) / 1000)
        extra = [(b"set-cookie", b"stub-session=abc; Path=/")] if plan.get("cookie") else []
        if plan.get("redirect"):
            return await _reply(send, 302, b"", [(b"location", b"/echo"), *extra])
        if plan.get("flaky") and nth <= int(plan["flaky"]):
            return await _reply(send, 503, json.dumps({"error": "stub-flaky", "call": nth}).encode(), extra)
        if "bodyBytes" in plan:
            return await _reply(send, 200, b"x" * int(plan["bodyBytes"]), extra, b"application/octet-stream")
        status = int(plan.get("status", 200))
        if status != 200:
            return await _reply(send, status, json.dumps({"error": "stub-status", "status": status,
                                                          "input": payload}).encode(), extra)
        out = json.dumps({"output": payload}).encode()
        if plan.get("receipt"):
            extra = [*extra, (b"x-mm-receipt", _receipt(str(plan["receipt"]), out))]
        return await _reply(send, 200, out, extra)

    return app


def _plan(path: str, payload: Any) -> dict[str, Any]:
    words = {"status": "status", "sleep": "sleepMs", "big": "bodyBytes", "flaky": "flaky"}
    plan: dict[str, Any] = {}
    parts = [p for p in path.split("/") if p]
    i = 0
    while i < len(parts):
        word = parts[i]
        if word in ("redirect", "cookie"):
            plan[word] = True
        elif word == "receipt" and i + 1 < len(parts):
            plan["receipt"] = parts[i + 1]
            i += 1
        elif word in words:
            has_number = i + 1 < len(parts) and parts[i + 1].isdigit()
            plan[words[word]] = int(parts[i + 1]) if has_number else (BIG_DEFAULT if word == "big" else 0)
            i += has_number
        i += 1
    if isinstance(payload, dict) and isinstance(payload.get("stub"), dict):
        plan.update(payload["stub"])
    return plan


def _receipt(seed_b64url: str, body: bytes) -> bytes:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.from_private_bytes(base64.urlsafe_b64decode(seed_b64url + "=" * (-len(seed_b64url) % 4)))
    return base64.b64encode(key.sign(hashlib.sha256(body).hexdigest().encode()))


async def _read_body(receive: Receive) -> bytes:
    body = bytearray()
    while True:
        message = await receive()
        body += message.get("body", b"")
        if len(body) > _MAX_REQUEST_BYTES or not message.get("more_body"):
            return bytes(body[:_MAX_REQUEST_BYTES])


def _json(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


async def _reply(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None,
                 content_type: bytes = b"application/json") -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class StubSeller:
    """`with StubSeller() as seller:` serves on 127.0.0.1 (port 0: a free one) on a thread of its own."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.stats = StubStats()
        self._sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind((host, port))
        # Listening from here on: `python -m app.outbound.stub_seller` prints its URL before uvicorn starts, and a
        # client connecting in between was refused (seen once in CI on a slow box). Connections now wait in the
        # backlog until uvicorn accepts them (its own listen() on this socket only sets the backlog again).
        self._sock.listen(2048)
        self.host, self.port = host, self._sock.getsockname()[1]
        config = uvicorn.Config(make_app(self.stats), lifespan="off", access_log=False, log_level="warning",
                                timeout_keep_alive=30, timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name=f"stub-seller:{self.port}", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def serve_forever(self) -> None:
        """Serve on the calling thread until stop(); on the main thread, SIGINT and SIGTERM stop it too."""
        with asyncio.Runner(loop_factory=self._server.config.get_loop_factory()) as runner:
            runner.run(self._server.serve(sockets=[self._sock]))

    def _run(self) -> None:
        self.serve_forever()

    def start(self) -> StubSeller:
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the stub seller did not start")
            self._thread.join(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._sock.close()

    def __enter__(self) -> StubSeller:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """`python -m app.outbound.stub_seller [--port N]`: its own process (the bench), first line = its URL."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    seller = StubSeller(args.host, args.port)
    # uvicorn stops on SIGINT/SIGTERM, then re-raises the signal to the handler found here: exit 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _exit_cleanly)
    print(seller.url, flush=True)
    seller.serve_forever()
    return 0


def _exit_cleanly(signum: int, _frame: object) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    raise SystemExit(main())
