"""Fixtures the worker tests share: a container whose worker-side state is reset after each test, a stub seller."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from app.container import Container
from app.outbound.stub_seller import StubSeller
from workers import runtime


@pytest.fixture
async def c(fresh_container: Container) -> AsyncIterator[Container]:
    try:
        yield fresh_container
    finally:
        await runtime.close()
        runtime.use_database(None)


@pytest.fixture
def stub() -> Iterator[StubSeller]:
    with StubSeller() as s:
        yield s
