"""The REMB fallback end to end: an aiortc viewer (no transport-cc) behind a link that narrows.

A raw simulcast publisher (`bench.rawpeer.RawSimulcastPublisher`, pre-encoded VP8 layers
q/h/f at 160/320/640 wide) publishes through WHIP straight to the node. An aiortc player
plays the room through WHEP; the test points the answer's candidates at
`bench.proxy.ImpairmentProxy`, whose downlink towards the player carries `HIGH_BPS` for
`HIGH_SECONDS` after the player's first datagram, then `LOW_BPS` (300 ms drop-tail queue,
10 ms each way).

aiortc offers abs-send-time and goog-remb but not transport-cc, so the node answers with
abs-send-time, stamps it on the player's video, and takes the REMB aiortc's
`RemoteBitrateEstimator` sends as the estimate. Acceptance:

1. REMB arrives from the player and the allocator runs (no ceiling until it signals congestion);
2. after the drop the node moves the player to a lower layer (allocated and forwarded) within
   `SWITCH_LIMIT`, and the player decodes narrower frames (within `DECODE_LIMIT`: aiortc's
   jitter buffer holds on to the old layer's lost packets; see docs/benchmarks.md).

Timings go to test-artifacts/bwe-remb-e2e.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import aiohttp
from aiortc import RTCSessionDescription
from aiortc.rtcdtlstransport import RTCCertificate

from bench.clients.whip import WhepSession, new_peer_connection
from bench.link import LinkConfig
from bench.proxy import ImpairmentProxy, rewrite_candidates
from bench.rawpeer import RawSimulcastPublisher, encode_stream, relabel_layered
from bench.traces import steps
from tests.e2e.browser import save_artifact

ROOM = "bwe-remb"
LAYERS = (("q", 160, 90, 120_000), ("h", 320, 180, 400_000), ("f", 640, 360, 1_100_000))
HIGH_SECONDS = 14.0
HIGH_BPS = 3.0e6
LOW_BPS = 0.3e6
ESTIMATE_TIMEOUT = 10.0
SWITCH_LIMIT = 8.0  # drop to a lower layer at the node (aiortc sends REMB every 0.5 s)
# aiortc's jitter buffer waits for the old layer's packets lost at the drop and asks for no key
# frame until 512 packets later: at q's packet rate that is 20-30 s before it shows q
DECODE_LIMIT = 45.0
FRAME_TIMEOUT = 20.0


def _rid(dt: Any) -> str | None:
    layer = dt.pending or dt.current
    return getattr(layer, "rid", None)


async def _until(check: Callable[[], bool], timeout: float,  # noqa: ASYNC109
                 what: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what()}")
        await asyncio.sleep(0.05)


async def test_aiortc_viewer_gets_a_remb_estimate_and_moves_down_when_its_link_narrows(
    node: Any, mint: Callable[..., str]
) -> None:
    layers = [(rid, relabel_layered(encode_stream(frames=90, width=w, height=h, bitrate=b,
                                                  audio=rid == "q")))
              for rid, w, h, b in LAYERS]
    loop = asyncio.get_running_loop()
    downlink = LinkConfig(capacity=steps([(HIGH_SECONDS, HIGH_BPS), (3600.0, LOW_BPS)]),
                          delay=0.010, queue_ms=300, seed=3)
    proxy = ImpairmentProxy(("127.0.0.1", node.udp_port), LinkConfig(delay=0.010), downlink)
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)))
        proxy_addr = await proxy.start()
        stack.push_async_callback(proxy.stop)
        pub = RawSimulcastPublisher(RTCCertificate.generateCertificate(), layers, name="pub")
        stack.push_async_callback(pub.close)
        await asyncio.wait_for(pub.connect(http, node.http_url, ROOM,
                                           mint(ROOM, "pub", ["publish"])), 20)
        pub.start(120)

        # The player: aiortc, through the proxy.
        pc = new_peer_connection()
        token = mint(ROOM, "viewer", ["subscribe"])
        player = WhepSession(pc=pc, location="", token=token)
        pc.on("track", player._on_track)
        stack.push_async_callback(pc.close)
        stack.push_async_callback(player._stop_background)
        pc.addTransceiver("audio", direction="recvonly")
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        offer = pc.localDescription.sdp
        assert "abs-send-time" in offer and "goog-remb" in offer
        assert "transport-wide-cc" not in offer
        url = f"{node.http_url}/whep/{urllib.parse.quote(ROOM, safe='')}"
        async with http.post(url, data=offer.encode(), headers={
                "Content-Type": "application/sdp", "Authorization": f"Bearer {token}"}) as resp:
            answer = await resp.text()
            assert resp.status == 201, (resp.status, answer)
        assert "abs-send-time" in answer and "goog-remb" in answer
        await pc.setRemoteDescription(RTCSessionDescription(
            sdp=rewrite_candidates(answer, proxy_addr), type="answer"))
        await player.wait_for_frames(video=10, timeout=FRAME_TIMEOUT)

        viewer = next(p for p in node.peers.values() if p.participant == "viewer")
        assert viewer.bwe is not None and viewer.bwe.remb, "no REMB fallback for the player"
        bwe = viewer.bwe
        dt = next(s.downtrack for s in viewer.slots if s.downtrack.kind == "video")
        assert dt.abs_send_time_id > 0

        # 1. REMBs from the player, and the allocator running on them (no ceiling yet: the
        # REMB caps only once it signals congestion, and the player keeps its layer).
        await _until(lambda: bwe.core.trusted and bwe.core.last is not None,
                     ESTIMATE_TIMEOUT, lambda: "REMBs and an allocation")
        stats = bwe.core.estimator.stats()
        assert stats["rembs"] > 0
        assert node.metrics.bwe["allocation_changes"] >= 0

        flow = next((f for f in proxy.flows.values()
                     if viewer.addr is not None and f.sock.getsockname()[1] == viewer.addr[1]),
                    None)
        assert flow is not None and flow.down.link is not None
        drop_at = flow.down.link.start + HIGH_SECONDS
        timeline: list[tuple[float, float | None, int | None, str | None]] = []

        async def watch() -> None:
            while True:
                timeline.append((round(loop.time() - drop_at, 2), bwe.core.estimate,
                                 dt.allocated_rank, _rid(dt)))
                await asyncio.sleep(0.1)

        watcher = asyncio.ensure_future(watch())
        stack.callback(watcher.cancel)
        await asyncio.sleep(max(0.0, drop_at - loop.time()))
        rank_before = dt.allocated_rank
        rid_before = _rid(dt)
        width_before = player.last_video_size[0] if player.last_video_size else 0
        assert rank_before is not None and rank_before >= 1 and rid_before in ("h", "f"), (
            f"not above the lowest layer before the drop: {timeline[-20:]}")

        # 2. The drop: a lower layer, allocated and forwarded, then decoded.
        t0 = time.monotonic()
        await _until(lambda: dt.allocated_rank is not None
                     and 0 <= dt.allocated_rank < rank_before and _rid(dt) != rid_before,
                     SWITCH_LIMIT, lambda: f"a layer below {rid_before} ({timeline[-30:]})")
        switched = time.monotonic() - t0
        index = len(player.video_frame_sizes)
        await _until(lambda: any(0 < w < width_before
                                 for w, _ in player.video_frame_sizes[index:]),
                     DECODE_LIMIT, lambda: f"narrower decoded frames (after the switch: "
                     f"{sorted(set(player.video_frame_sizes[index:]))}, "
                     f"{len(player.video_frame_sizes) - index} frames; node "
                     f"{timeline[-90::3]}, {dict(node.metrics.bwe)}, "
                     f"{dict(node.metrics.recovery)}, current "
                     f"{getattr(dt.current, 'rid', None)} pending "
                     f"{getattr(dt.pending, 'rid', None)} awaiting {dt.awaiting_keyframe} "
                     f"dropped_waiting {dt.dropped_waiting} plis {pub.plis} "
                     f"sent {dt.stats.packet_count} paused {dt.paused, dt.allocator_paused})")
        decoded = time.monotonic() - t0
        report = {
            "estimate_before_drop": next((e for t, e, _, _ in reversed(timeline) if t <= 0),
                                         None),
            "layer_before_drop": rid_before, "width_before_drop": width_before,
            "layer_down_s": round(switched, 2), "narrower_frames_s": round(decoded, 2),
            "estimate_after": bwe.core.estimate, "estimator": bwe.core.estimator.stats(),
            "bwe_events": dict(node.metrics.bwe), "timeline": timeline,
        }
        save_artifact("bwe-remb-e2e.json", report)
        print(f"layer down after {switched:.2f} s, narrower frames after {decoded:.2f} s")
        assert bwe.core.estimate is not None and bwe.core.estimate < LOW_BPS * 1.2
        assert switched <= SWITCH_LIMIT
