"""/healthz: ready only between a finished start() and a drain (readiness for load balancers)."""

from __future__ import annotations

import json
from typing import Any

from aiohttp.test_utils import make_mocked_request

from sfu.http.app import build_app, healthz


async def _health(node: Any) -> tuple[int, dict[str, Any]]:
    request = make_mocked_request("GET", "/healthz", app=build_app(node))
    resp = await healthz(request)
    assert resp.body is not None
    return resp.status, json.loads(bytes(resp.body))  # type: ignore[arg-type]


async def test_starting_node_is_not_ready(node_settings: Any) -> None:
    from sfu.node import Node

    n = Node(node_settings)  # start() not finished: its HTTP site may already answer
    status, body = await _health(n)
    assert (status, body["status"]) == (503, "starting")


async def test_started_node_is_ready_until_it_drains(node: Any) -> None:
    status, body = await _health(node)
    assert (status, body["status"]) == (200, "ok")
    node.drain()
    status, body = await _health(node)
    assert (status, body["status"]) == (503, "draining")
