"""Downlink bandwidth estimation end to end: a Chromium viewer behind a link that narrows.

Headless Chromium publishes three VP8 simulcast layers (rids q/h/f, 320/640/1280 wide) through
WHIP straight to the node. A second Chromium page plays the room through WHEP; the test does
the WHEP POST and points the answer's candidates at `bench.proxy.ImpairmentProxy`, whose
downlink towards the viewer carries 2.5 Mbit/s for `HIGH_SECONDS` after the viewer's first
datagram, then 0.6 Mbit/s for `AFTER_SECONDS`, then 2.5 Mbit/s again (`bench.traces.steps`),
300 ms drop-tail queue, 10 ms each way.

The viewer negotiates transport-cc with the node, so the node numbers its egress, reads the
viewer's feedback into a GCC estimator and lets the allocator pick the layer (the viewer asks
for no layer itself). Acceptance:

1. before the drop the viewer is on a layer above the lowest (the estimate grew by probing);
2. within `SWITCH_LIMIT` (2 s) of the drop its decoded frames are narrower (a lower layer);
3. no freeze longer than `MAX_FREEZE` (500 ms): no inter-frame gap over it in the frames the
   page presented (requestVideoFrameCallback), no longer stall of framesDecoded (sampled
   every 50 ms, so +100 ms of slack), and webrtc-stats' totalFreezesDuration at most that
   much per counted freeze;
4. when the capacity returns, within `RECOVER_LIMIT` its decoded frames are wider again;
5. transport-cc is in use: the viewer's RTCRtpReceiver parameters list the transport-wide-cc
   extension, and the node received its transport-cc feedback (Chromium's getStats has no
   field naming the congestion controller of a receive-only peer; its
   `availableIncomingBitrate` is filled only by receive-side REMB estimation).

The page samples getStats every 50 ms; timings and the node's estimator state are saved to
test-artifacts/bwe-downlink-e2e.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from bench.link import LinkConfig
from bench.proxy import ImpairmentProxy, rewrite_candidates
from bench.traces import steps
from tests.e2e.browser import PageLog, page_url, poll_js, save_artifact, wait_page_status

pytestmark = pytest.mark.browser

CONNECT_TIMEOUT = 20.0
PUBLISH_TIMEOUT = 30.0  # Chromium sends h and f at full size
HIGH_SECONDS = 20.0  # 2.5 Mbit/s this long after the viewer's first datagram
HIGH_BPS = 2.5e6
LOW_BPS = 0.6e6
AFTER_SECONDS = 8.0  # observed after the drop; then the capacity returns
RECOVER_LIMIT = 15.0  # seconds after the capacity returns for a wider layer
TRANSPORT_CC_URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
SWITCH_LIMIT = 2.0
MAX_FREEZE = 0.5
ROOM = "bwe-downlink"


def viewer_node_state(node: Any) -> list[dict[str, Any]]:
    out = []
    for peer in list(node.peers.values()):
        if peer.bwe is None:
            continue
        stats = peer.bwe.core.stats()
        stats["video"] = [
            {"current": getattr(s.downtrack.current, "rid", None),
             "pending": getattr(s.downtrack.pending, "rid", None),
             "allocated_rank": s.downtrack.allocated_rank,
             "allocator_paused": s.downtrack.allocator_paused}
            for s in peer.slots if s.downtrack.kind == "video"
        ]
        out.append(stats)
    return out


def sending(stats: dict[str, Any] | None) -> bool:
    video = (stats or {}).get("video", {})
    return all(
        rid in video and video[rid]["frameWidth"] == width and video[rid]["bytesSent"] > 0
        for rid, width in (("q", 320), ("h", 640), ("f", 1280))
    )


async def whep_post(http: aiohttp.ClientSession, node_url: str, token: str, sdp: str) -> str:
    url = f"{node_url}/whep/{urllib.parse.quote(ROOM, safe='')}"
    headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"}
    async with http.post(url, data=sdp.encode(), headers=headers) as resp:
        body = await resp.text()
        assert resp.status == 201, (resp.status, body)
    return body


async def test_viewer_moves_down_a_layer_when_its_downlink_narrows_and_back_up(
    node: Any,
    mint: Callable[..., str],
    chromium: Any,
    pages_url: str,
) -> None:
    report: dict[str, Any] = {"high_bps": HIGH_BPS, "low_bps": LOW_BPS,
                              "high_seconds": HIGH_SECONDS}
    loop = asyncio.get_running_loop()
    downlink = LinkConfig(capacity=steps([(HIGH_SECONDS, HIGH_BPS), (AFTER_SECONDS, LOW_BPS),
                                          (3600.0, HIGH_BPS)]),
                          delay=0.010, seed=7)
    proxy = ImpairmentProxy(("127.0.0.1", node.udp_port), LinkConfig(delay=0.010), downlink)
    async with contextlib.AsyncExitStack() as stack:
        context = await chromium.new_context()
        stack.push_async_callback(context.close)
        http = await stack.enter_async_context(
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        )
        proxy_addr = await proxy.start()
        stack.push_async_callback(proxy.stop)

        # Publisher: straight to the node, three layers at full size.
        pub = await context.new_page()
        pub_log = PageLog(pub, "publish_simulcast.html")
        await pub.goto(page_url(pages_url, "publish_simulcast.html", node=node.http_url,
                                room=ROOM, token=mint(ROOM, "pub", ["publish"])))
        await wait_page_status(pub, "connected", timeout=CONNECT_TIMEOUT, log=pub_log)
        t0 = time.monotonic()
        await poll_js(pub, "() => window.getOutboundStats()", sending,
                      timeout=PUBLISH_TIMEOUT, interval=0.5, log=pub_log,
                      describe="Chromium sends q/h/f at 320/640/1280")
        report["publisher_ramp_s"] = round(time.monotonic() - t0, 1)

        # Viewer: WHEP through the proxy.
        view = await context.new_page()
        log = PageLog(view, "play_bwe.html")
        await view.goto(page_url(pages_url, "play_bwe.html"))
        offer = await view.evaluate("window.makeOffer()")
        assert "transport-wide-cc" in offer and "transport-cc" in offer
        answer = await whep_post(http, node.http_url, mint(ROOM, "viewer", ["subscribe"]),
                                 offer)
        assert "transport-wide-cc" in answer and "a=rtcp-fb:" in answer
        await view.evaluate("(sdp) => window.applyAnswer(sdp)",
                            rewrite_candidates(answer, proxy_addr))
        await wait_page_status(view, "connected", timeout=CONNECT_TIMEOUT, log=log)
        # Chromium checks from each of its addresses: the flow that matters is the one the
        # node's viewer session uses (the node sees the proxy's upstream socket).
        viewer = next(p for p in node.peers.values() if p.participant == "viewer")
        assert viewer.bwe is not None, "the viewer did not negotiate transport-cc"
        flow = next((f for f in proxy.flows.values()
                     if viewer.addr is not None and f.sock.getsockname()[1] == viewer.addr[1]),
                    None)
        assert flow is not None and flow.down.link is not None, (viewer.addr, proxy.flows)
        drop_loop = flow.down.link.start + HIGH_SECONDS
        drop_wall = time.time() + (drop_loop - loop.time())  # the page's clock (Date.now)

        # The node's view every 50 ms around the drop (for the report).
        timeline: list[dict[str, Any]] = []

        async def watch() -> None:
            dt = next(s.downtrack for s in viewer.slots if s.downtrack.kind == "video")
            core = viewer.bwe.core
            while True:
                timeline.append({
                    "t": round(loop.time() - drop_loop, 3), "estimate": core.estimate,
                    "state": core.state, "rank": dt.allocated_rank,
                    "current": getattr(dt.current, "rid", None),
                    "pending": getattr(dt.pending, "rid", None),
                    "paused": dt.allocator_paused,
                })
                await asyncio.sleep(0.05)

        watcher = asyncio.ensure_future(watch())
        stack.callback(watcher.cancel)

        # Up to the drop: the estimate must have carried the viewer above the lowest layer.
        await asyncio.sleep(max(0.0, drop_loop - loop.time()))
        samples = await view.evaluate("window.samples")
        before = [s for s in samples if drop_wall - 2.0 <= s["t"] / 1000 <= drop_wall]
        report["node_before_drop"] = viewer_node_state(node)
        assert before, f"no samples before the drop\n{log.tail()}"
        width_before = before[-1]["width"]
        report["width_before_drop"] = width_before
        assert width_before > 320, (
            f"viewer still on the lowest layer when the link narrows: "
            f"{[s['width'] for s in before]}\nnode: {report['node_before_drop']}"
        )

        # After the drop: a lower layer within SWITCH_LIMIT, without a long freeze.
        await asyncio.sleep(AFTER_SECONDS)
        samples = await view.evaluate("window.samples")
        frames = await view.evaluate("window.frames")
        report["node_after_drop"] = viewer_node_state(node)
        after = [s for s in samples if s["t"] / 1000 > drop_wall]
        lower = next((s for s in after if 0 < s["width"] < width_before), None)
        report["widths_after"] = sorted({s["width"] for s in after})
        assert lower is not None, (
            f"still {width_before} wide {AFTER_SECONDS}s after the drop: "
            f"{report['widths_after']}\nnode: {report['node_after_drop']}\n{log.tail()}"
        )
        switch_s = lower["t"] / 1000 - drop_wall
        report["switch_s"] = round(switch_s, 3)
        report["width_after_drop"] = after[-1]["width"]

        window = [s for s in samples if drop_wall - 1.0 <= s["t"] / 1000]
        freeze_delta = window[-1]["totalFreezesDuration"] - window[0]["totalFreezesDuration"]
        freeze_count = window[-1]["freezeCount"] - window[0]["freezeCount"]
        report["freezes_after_drop"] = {"count": freeze_count,
                                        "total_s": round(freeze_delta, 3)}
        shown = [t / 1000 for t, _w in frames if drop_wall - 1.0 <= t / 1000]
        gaps = [b - a for a, b in zip(shown, shown[1:], strict=False)]
        report["max_frame_gap_s"] = round(max(gaps), 3) if gaps else None
        decoded = [(s["t"] / 1000, s["framesDecoded"]) for s in window]
        stalls, since = [], decoded[0][0]
        for (t, n), (_tp, n_prev) in zip(decoded[1:], decoded, strict=False):
            if n != n_prev:
                stalls.append(t - since)
                since = t
        report["max_decode_stall_s"] = round(max(stalls), 3) if stalls else None
        report["node_bwe_events"] = dict(node.metrics.bwe)
        report["node_timeline"] = [e for e in timeline if -1.0 <= e["t"] <= 4.0]
        report["estimate_histogram_count"] = node.metrics.bwe_estimate.count
        save_artifact("bwe-downlink-e2e.json", report)

        assert switch_s <= SWITCH_LIMIT, (
            f"moved down {switch_s:.2f}s after the drop (limit {SWITCH_LIMIT}s): {report}"
        )
        assert len(shown) > 100, f"only {len(shown)} frames presented: {report}"
        assert max(gaps) <= MAX_FREEZE, f"frame gap of {max(gaps):.3f}s: {report}"
        assert max(stalls) <= MAX_FREEZE + 0.1, f"decoding stalled {max(stalls):.3f}s: {report}"
        # webrtc-stats only sums freezes: none may be longer than the limit on average either.
        assert freeze_delta <= MAX_FREEZE * max(1, freeze_count), f"froze: {report}"
        events = node.metrics.bwe
        assert events["feedback"] > 0 and events["probe_packets"] > 0, events
        assert node.metrics.bwe_estimate.count > 0
        uris = await view.evaluate("window.receiverExtensions()")
        report["receiver_header_extensions"] = uris
        assert TRANSPORT_CC_URI in uris, uris

        # The capacity returns: a wider layer again.
        return_wall = drop_wall + AFTER_SECONDS
        narrow = report["width_after_drop"]
        deadline = loop.time() + max(0.0, return_wall - time.time()) + RECOVER_LIMIT
        wider = None
        while wider is None and loop.time() < deadline:
            await asyncio.sleep(0.5)
            samples = await view.evaluate("window.samples")
            wider = next((s for s in samples
                          if s["t"] / 1000 > return_wall and s["width"] > narrow), None)
        report["node_after_return"] = viewer_node_state(node)
        report["recover_s"] = None if wider is None else round(wider["t"] / 1000 - return_wall,
                                                                 3)
        save_artifact("bwe-downlink-e2e.json", report)
        assert wider is not None, (
            f"still {narrow} wide {RECOVER_LIMIT}s after the capacity returned: "
            f"node: {report['node_after_return']}\n{log.tail()}"
        )
        with contextlib.suppress(Exception):
            await pub.evaluate("window.stopPublishing()")
