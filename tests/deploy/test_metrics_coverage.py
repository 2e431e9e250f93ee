"""Every metric the Grafana dashboard and the alert rules query is exported by a real node.

A node (tests/conftest.py fixture) gets a little traffic first so that labelled series exist:
a WHIP publisher, a WHEP player with a commerce datachannel (a cart event and an order), a
refused request and a DELETE. The node runs as a one-node cluster with the cascade on (a real
redis-server, a cascade port), since the sfu_cluster_* and cascade series exist only then.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from bench.clients.media import SyntheticVideoTrack, ToneAudioTrack
from bench.clients.whip import whep_play, whip_publish
from bench.ports import free_udp_port
from tests.deploy.helpers import (
    SCRAPE_SERIES,
    alert_exprs,
    dashboard_exprs,
    exposition_names,
    load_dashboard,
    metric_names,
)
from tests.integration.conftest import RedisServer

# Labels Prometheus adds at scrape time (or the compose config sets); no node exports them.
TARGET_LABELS = frozenset({"instance", "job", "node", "le"})


@pytest.fixture
def node_settings(node_settings: Any, redis_server: RedisServer) -> Any:
    """The shared node settings, plus the cluster registry and the cascade listener."""
    return dataclasses.replace(node_settings, cluster_redis_url=redis_server.url,
                               node_id="metrics-node", cascade_port=free_udp_port())


async def _until(predicate: Callable[[], bool], limit: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not predicate():
        assert loop.time() < deadline, f"{what} not reached within {limit}s"
        await asyncio.sleep(0.05)


async def _metrics_after_traffic(node: Any, mint: Callable[..., str]) -> str:
    pub = await whip_publish(node.http_url, "shop", mint("shop", "host", "publish"),
                             [SyntheticVideoTrack(), ToneAudioTrack()])
    player = await whep_play(node.http_url, "shop", mint("shop", "viewer", "subscribe"),
                             datachannel=True)
    try:
        await player.wait_for_frames(video=5, audio=2, timeout=20)
        channel = await player.wait_channel_open(timeout=10)
        channel.send(json.dumps({"v": 1, "type": "cart.add", "product_id": "nope",
                                 "quantity": 1}))
        channel.send(json.dumps({"v": 1, "type": "order.place", "idempotency_key": "k-1",
                                 "sale_id": "no-sale", "product_id": "nope", "quantity": 1}))

        def replied() -> bool:
            types = {json.loads(m).get("type") for m in player.channel_messages
                     if isinstance(m, str)}
            return {"error", "order.result"} <= types

        await _until(replied, 10, "commerce replies")
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
            # A refused request: sfu_http_errors_total{status="401"}.
            async with http.post(f"{node.http_url}/whep/shop", data=b"v=0",
                                 headers={"Content-Type": "application/sdp",
                                          "Authorization": "Bearer bad"}) as resp:
                assert resp.status == 401
            # A closed session: sfu_sessions_closed_total.
            assert await player.close() == 200
            async with http.get(f"{node.http_url}/metrics") as resp:
                assert resp.status == 200
                return await resp.text()
    finally:
        await player.close()
        await pub.close()


def _matchers(expr: str) -> list[tuple[str, str]]:
    """(metric, label) for every label matcher written as metric{label op "value", ...}."""
    out = []
    for m in re.finditer(r"([A-Za-z_:][A-Za-z0-9_:]*)\{([^}]*)\}", expr):
        for label in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", m.group(2)):
            out.append((m.group(1), label))
    return out


def _labels_by_metric(text: str) -> dict[str, set[str]]:
    labels: dict[str, set[str]] = {}
    for line in text.splitlines():
        m = re.match(r"([A-Za-z_:][A-Za-z0-9_:]*)(?:\{([^}]*)\})?\s", line)
        if m and not line.startswith("#"):
            found = labels.setdefault(m.group(1), set())
            found.update(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=\"", m.group(2) or ""))
    return labels


async def test_dashboard_and_alerts_query_only_exported_metrics(
    node: Any, mint: Callable[..., str]
) -> None:
    text = await _metrics_after_traffic(node, mint)
    samples, declared = exposition_names(text)
    labels = _labels_by_metric(text)

    queries = [("dashboard", e) for e in dashboard_exprs(load_dashboard())]
    queries += [(f"alert {name}", e) for name, e in alert_exprs()]
    queried: dict[str, str] = {}
    for where, expr in queries:
        names = metric_names(expr)
        assert names, f"{where}: no metric in {expr!r}"
        for name in names - SCRAPE_SERIES:
            queried.setdefault(name, where)
    missing = {n: w for n, w in queried.items() if n not in samples and n not in declared}
    assert not missing, f"queried but not exported by the node: {missing}"

    # The traffic above made these series appear with samples, not only a TYPE line.
    without_samples = set(queried) - samples
    assert without_samples <= {
        # Only bumped under overload (slow datachannels); declared with no samples here.
        "sfu_commerce_queue_drops_total", "sfu_commerce_coalesced_total",
    }, without_samples

    # Label matchers name labels the metric really has.
    for where, expr in queries:
        for metric, label in _matchers(expr):
            if label in TARGET_LABELS or metric in SCRAPE_SERIES or metric not in labels:
                continue
            assert label in labels[metric], f"{where}: {metric} has no label {label!r}"


def test_promql_metric_name_extraction() -> None:
    expr = (
        'sum by (instance, reason) (rate(sfu_drops_total{reason!="x"}[5m])) '
        "/ ignoring(reason) group_left sum(up) > 1e3 and "
        'histogram_quantile(0.99, sum by (le) (rate(a_bucket{instance=~"$instance"}'
        "[$__rate_interval]))) unless on (instance) b offset 5m"
    )
    assert metric_names(expr) == {"sfu_drops_total", "up", "a_bucket", "b"}
