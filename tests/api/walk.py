"""The time-travel walk: run commands on one stream, capture the live GET after each, then check that
?version=N and ?asOf=<recordedAt> answer exactly those captured states."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import httpx

from tests.api.helpers import assert_problem

Step = Callable[[], Awaitable[httpx.Response]]


class Walk:
    """Runs commands, and after each one that moved the stream records (version, live GET body or None)."""

    def __init__(self, client: httpx.AsyncClient, headers: dict[str, str], stream_id: uuid.UUID, path: str) -> None:
        self.client, self.headers, self.stream_id, self.path = client, headers, stream_id, path
        self.seen: list[tuple[int, dict[str, Any] | None]] = []
        self.recorded_at: dict[int, str] = {}

    async def step(self, command: Step) -> None:
        await command()
        after = self.seen[-1][0] + 1 if self.seen else 1
        r = await self.client.get(f"/v1/streams/{self.stream_id}/events", headers=self.headers,
                                  params={"fromVersion": after, "limit": 200})
        if r.status_code == 404:
            return  # the stream has not begun yet
        assert r.status_code == 200, r.text
        events = r.json()["data"]
        if not events:
            return
        for e in events:
            self.recorded_at[e["version"]] = e["recordedAt"]
        live = await self.client.get(self.path, headers=self.headers)
        assert live.status_code in (200, 404), live.text
        self.seen.append((events[-1]["version"], live.json() if live.status_code == 200 else None))

    async def check(self) -> None:
        assert len(self.seen) >= 3, self.seen
        for version, body in self.seen:
            for params in ({"version": version}, {"asOf": self.recorded_at[version]}):
                r = await self.client.get(self.path, headers=self.headers, params=params)
                if body is None:
                    assert_problem(r, 404, "NOT_FOUND")
                    continue
                assert r.status_code == 200, (params, r.text)
                assert r.json() == body, params
                assert r.headers["x-as-of-version"] == str(version)
        first = datetime.fromisoformat(self.recorded_at[1]) - timedelta(milliseconds=1)
        assert_problem(await self.client.get(self.path, headers=self.headers, params={"asOf": first.isoformat()}),
                       404, "NOT_FOUND")
        last = self.seen[-1][0]
        assert_problem(await self.client.get(self.path, headers=self.headers, params={"version": last + 1}),
                       404, "NOT_FOUND")
