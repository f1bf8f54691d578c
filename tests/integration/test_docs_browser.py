"""Headless Chromium renders /docs and /docs/scalar of a real `mm api` with every non-local host unreachable."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import struct
import subprocess
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import TEST_SECRET_KEY
from tests.live_stack import free_port, mm_processes

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Nothing but loopback resolves, so a page that still needs a CDN renders blank here, as it would offline.
_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
          "--disable-background-networking", "--disable-component-update", "--disable-sync",
          "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1280,1600",
          "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--virtual-time-budget=10000"]


@pytest.fixture(scope="module")
def chromium() -> str:
    if CHROMIUM is None:
        reason = "chromium is not installed (apt-get install -y chromium); .ci/run installs it"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)  # CI must prove the docs render, never skip it
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture(scope="module")
def api(server_url: str) -> Iterator[str]:
    import asyncio

    from app.migrate import create_database, drop_database

    url = asyncio.run(create_database(server_url, "mm_docs"))
    try:
        with mm_processes(["api"], {"MM_DATABASE_URL": url, "MM_SECRET_KEY": TEST_SECRET_KEY}, free_port()) as base:
            yield base
    finally:
        asyncio.run(drop_database(server_url, url))


def _run_chromium(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    out = subprocess.run([chromium, *_FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr.decode(errors="replace")[-3000:]
    return out


def _visible_text(dom: str) -> str:
    """What a reader sees: no scripts (Swagger UI inlines the whole spec in one), no tags, entities decoded."""
    dom = re.sub(r"<(script|style)\b[^>]*>.*?</\1>", " ", dom, flags=re.DOTALL | re.IGNORECASE)
    return html.unescape(re.sub(r"<[^>]+>", "", dom))


def _distinct_rows(png: bytes) -> int:
    """Distinct scanlines of a PNG: a blank (uniform) page has at most a handful, whatever its filters."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, depth, colour = 8, b"", 0, 8, 6
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        chunk = png[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, _height, depth, colour = struct.unpack(">IIBB", chunk[:10])
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour]
    raw, stride = zlib.decompress(idat), 1 + (width * channels * depth + 7) // 8
    return len({raw[i:i + stride] for i in range(0, len(raw), stride)})


def _page_requests(netlog: Path, origin: str) -> list[str]:
    """URLs the page itself asked for (Chromium's own service calls carry no page initiator)."""
    log = json.loads(netlog.read_text())
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [e["params"]["url"] for e in log["events"]
            if e["type"] == start_job and (e.get("params") or {}).get("initiator") == origin]


def _operations(base: str) -> list[tuple[str, str]]:
    spec: dict[str, Any] = httpx.get(base + "/openapi.json", timeout=10).json()
    return [(path, op["summary"]) for path, ops in spec["paths"].items() for op in ops.values()]


@pytest.mark.parametrize("page", ["/docs", "/docs/scalar"])
def test_docs_render_every_operation_offline(chromium: str, api: str, page: str, tmp_path: Path) -> None:
    operations = _operations(api)
    assert len(operations) > 20 and all(summary for _, summary in operations)

    dom = _run_chromium(chromium, tmp_path / "dom-profile", "--dump-dom", api + page).stdout.decode()
    text = _visible_text(dom)
    missing = [(path, summary) for path, summary in operations if path not in text or summary not in text]
    assert not missing, f"{page} did not render {len(missing)} of {len(operations)} operations: {missing[:5]}"

    shot, netlog = tmp_path / "page.png", tmp_path / "netlog.json"
    _run_chromium(chromium, tmp_path / "shot-profile", f"--screenshot={shot}", f"--log-net-log={netlog}",
                  api + page)
    png = shot.read_bytes()
    # Measured: a blank 1280x1600 page is a 9 KB PNG with 2 distinct rows; these pages 180-220 KB with 600-900.
    assert len(png) > 50_000 and _distinct_rows(png) > 300, (len(png), _distinct_rows(png))

    requested = _page_requests(netlog, api)
    assert any("/docs/assets/" in url for url in requested), requested
    assert all(url.startswith(api + "/") for url in requested), [u for u in requested if not u.startswith(api)]
