"""Shared fixtures: loopback-only ICE for every test, a real Node on ephemeral ports, tokens."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from bench.clients.loopback import restrict_ice_to_loopback

TEST_API_KEY = "testkey"
TEST_API_SECRET = "x" * 40
# pytest-timeout's SIGALRM, raised into a running event loop, can wedge it: the test fails and
# every later test hangs until CI's own limit (reproduced with a Chromium test). So an async
# test's own time limit (its `timeout` mark, else the ini's) is an asyncio.timeout around its
# body: it is cancelled at the await it is stuck on, fails with that traceback, and its
# fixtures tear down. pytest-timeout stays as the hard stop, HARD_MARGIN later, with the
# thread method (stacks of every thread, then exit), for what cancellation cannot reach.
HARD_MARGIN = 30.0


def _time_limit(item: pytest.Item) -> float | None:
    mark = item.get_closest_marker("timeout")
    if mark is not None:
        value = mark.args[0] if mark.args else mark.kwargs.get("timeout")
    else:
        value = item.config.getini("timeout")
    return float(value) if value else None


def _cancel_after(fn: Callable[..., Any], limit: float) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def limited(*args: Any, **kwargs: Any) -> Any:
        try:
            async with asyncio.timeout(limit):
                return await fn(*args, **kwargs)
        except TimeoutError as exc:
            raise pytest.fail.Exception(f"timed out after {limit:g} s (cancelled at the "
                                        "await above)") from exc

    return limited


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fn = getattr(item, "obj", None)
        limit = _time_limit(item)
        if limit is None or not inspect.iscoroutinefunction(fn):
            continue
        item.obj = _cancel_after(fn, limit)  # type: ignore[attr-defined]
        item.add_marker(pytest.mark.timeout(limit + HARD_MARGIN), append=False)


@pytest.fixture(autouse=True)
def loopback_ice() -> Iterator[None]:
    """aioice gathers only 127.0.0.1 host candidates for the duration of each test."""
    undo = restrict_ice_to_loopback()
    try:
        yield
    finally:
        undo()


@pytest.fixture
def node_settings(tmp_path: Path) -> Any:
    from sfu.config import Settings

    data_dir = tmp_path / "sfu-data"
    data_dir.mkdir()
    return Settings(
        host="127.0.0.1",
        http_port=0,
        udp_port=0,
        data_dir=data_dir,
        api_key=TEST_API_KEY,
        api_secret=TEST_API_SECRET,
        # Test traffic stays on loopback: Chromium also checks from the host's other
        # addresses, and the node must never answer there.
        peer_networks=["127.0.0.0/8", "::1/128"],
    )


@pytest.fixture
async def node(node_settings: Any) -> AsyncIterator[Any]:
    """A started Node (HTTP + one UDP media port on 127.0.0.1, ephemeral); stopped after."""
    from sfu.node import Node

    n = Node(node_settings)
    await asyncio.wait_for(n.start(), 15)
    try:
        yield n
    finally:
        await asyncio.wait_for(n.stop(), 15)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Any]:
    """A real redis-server of this test's own (tests.integration.conftest.RedisServer)."""
    from tests.integration.conftest import RedisServer

    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mint(node_settings: Any) -> Callable[..., str]:
    """``mint(room, identity, grants)`` -> a token the node under test accepts."""
    from sfu.auth import mint_token

    def _mint(room: str, identity: str, grants: Sequence[str] | str) -> str:
        grant_list = [grants] if isinstance(grants, str) else list(grants)
        return mint_token(
            api_key=node_settings.api_key,
            api_secret=node_settings.api_secret,
            room=room,
            identity=identity,
            grants=grant_list,
        )

    return _mint
