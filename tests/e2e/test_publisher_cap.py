"""The operator's cap on a publisher (`--publisher-max-bitrate`): a REMB each second that a
Chromium simulcast publisher takes as the ceiling of its send-side estimate.

Chromium publishes q/h/f (320/640/1280 wide, up to about 2.5 Mbit/s together on loopback)
through WHIP to a node capped at `CAP`. Within `SETTLE` seconds its estimate
(`availableOutgoingBitrate`) and what it sends (video bytes over the last `WINDOW` seconds)
are under the cap, with the lower layers still flowing. The same publisher on a node without
the cap sends well above it (the control).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.browser import PageLog, page_url, save_artifact, wait_page_status

pytestmark = pytest.mark.browser

CAP = 500_000
SETTLE = 15.0
WINDOW = 3.0
ROOM = "capped"


async def _publish(node: Any, mint: Callable[..., str], chromium: Any,
                   pages_url: str) -> dict[str, Any]:
    """Publish, then return what Chromium reports once its sending has settled."""
    context = await chromium.new_context()
    try:
        pub = await context.new_page()
        log = PageLog(pub, "publish_simulcast.html")
        await pub.goto(page_url(pages_url, "publish_simulcast.html", node=node.http_url,
                                room=ROOM, token=mint(ROOM, "pub", ["publish"])))
        await wait_page_status(pub, "connected", timeout=20.0, log=log)
        loop = asyncio.get_running_loop()
        start = loop.time()
        samples: list[tuple[float, dict[str, Any]]] = []
        while loop.time() - start < SETTLE:
            await asyncio.sleep(0.5)
            stats = await pub.evaluate("window.getOutboundStats()")
            samples.append((loop.time(), stats))
        (t0, first), (t1, last) = next(
            s for s in samples if s[0] >= samples[-1][0] - WINDOW), samples[-1]

        def sent(stats: dict[str, Any]) -> int:
            return sum(v["bytesSent"] for v in stats["video"].values())

        return {
            "available_bps": last["availableOutgoingBitrate"],
            "video_bps": (sent(last) - sent(first)) * 8 / (t1 - t0),
            "layers": {rid: {"width": v["frameWidth"], "active": v["active"],
                             "bytes": v["bytesSent"]} for rid, v in last["video"].items()},
        }
    finally:
        await context.close()


@pytest.fixture
def capped_settings(node_settings: Any) -> Any:
    node_settings.publisher_max_bitrate = CAP
    return node_settings


async def test_a_capped_publisher_sends_under_the_cap(
    capped_settings: Any, node: Any, mint: Callable[..., str], chromium: Any, pages_url: str,
) -> None:
    got = await _publish(node, mint, chromium, pages_url)
    report = {"cap": CAP, "capped": got, "remb_sent": node.metrics.bwe["publisher_remb"]}
    save_artifact("publisher-cap-e2e.json", report)
    assert node.metrics.bwe["publisher_remb"] > 0
    assert got["available_bps"] is not None and got["available_bps"] <= CAP * 1.05, report
    assert got["video_bps"] <= CAP * 1.1, report
    assert got["layers"]["q"]["bytes"] > 0, report  # the picture goes on, at the bottom


async def test_without_a_cap_the_same_publisher_sends_more(
    node: Any, mint: Callable[..., str], chromium: Any, pages_url: str,
) -> None:
    got = await _publish(node, mint, chromium, pages_url)
    save_artifact("publisher-cap-control-e2e.json", got)
    assert node.metrics.bwe["publisher_remb"] == 0
    assert got["video_bps"] > CAP * 1.5, got
