"""Simulcast end to end: headless Chromium publishes three VP8 layers (rids q/h/f at 1/4,
1/2 and full size of a 1280x720 camera) through WHIP; aiortc WHEP players pick layers.

One publisher serves every phase, because Chromium opens its upper layers only as its
bandwidth estimate grows, which takes tens of seconds; each phase has its own bounded wait:

1. Chromium sends all three layers at full size (its getStats per rid, bounded).
2. Three players on ``?layer=low|mid|high`` decode frames of the widths Chromium sends.
3. A fourth player switches low -> high -> low with ``POST {location}/layer``: no decoder
   error and no gap over 500 ms between decoded frames.
4. Layer loss: the page sets encodings[f].active = false; the high player falls back to the
   mid layer within 1 s, and goes back up when the layer returns.
5. Dynacast: once no viewer wants the high layer, /metrics counts a paused layer.

Timings are saved to test-artifacts/simulcast-e2e.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from bench.clients.whip import WhepSession
from bench.forwarding import parse_metrics
from bench.simulcast import post_layer, whep_play_layer
from tests.e2e.browser import PageLog, page_url, poll_js, save_artifact, wait_page_status

pytestmark = pytest.mark.browser

CONNECT_TIMEOUT = 20.0
RAMP_TIMEOUT = 50.0  # Chromium's estimate must grow enough to open the 1280x720 layer
FIRST_FRAMES_TIMEOUT = 15.0
SWITCH_TIMEOUT = 3.0
FALLBACK_LIMIT = 1.0  # acceptance: viewers of a lost layer fall back within 1 s
RECOVER_TIMEOUT = 5.0
MAX_GAP = 0.5
DYNACAST_TIMEOUT = 3.0
RIDS = {"low": "q", "mid": "h", "high": "f"}
SCALE = {"q": 4, "h": 2, "f": 1}


def _widths(player: WhepSession, since: int = 0) -> list[tuple[int, float]]:
    return [
        (w, t)
        for (w, _h), t in zip(
            player.video_frame_sizes[since:], player.video_frame_times[since:], strict=False
        )
    ]


async def wait_width(
    player: WhepSession,
    width: int,
    *,
    since: int = 0,
    timeout: float,  # noqa: ASYNC109 (deadline of the poll loop)
    what: str,
) -> float:
    """time.monotonic() of the first decoded frame of ``width`` at index >= ``since``."""
    deadline = time.monotonic() + timeout
    while True:
        for w, t in _widths(player, since):
            if w == width:
                return t
        if time.monotonic() >= deadline:
            seen = sorted({w for w, _ in _widths(player, since)})
            raise AssertionError(
                f"{what}: no {width}-wide frame within {timeout}s (widths seen {seen}, "
                f"{player.video_frames} frames, errors {player.errors!r})"
            )
        await asyncio.sleep(0.01)


async def wait_steady(
    player: WhepSession, width: int, *, frames: int, timeout: float, what: str  # noqa: ASYNC109
) -> None:
    """Wait until the last ``frames`` decoded frames are all ``width`` wide."""
    deadline = time.monotonic() + timeout
    while True:
        tail = [w for w, _ in _widths(player)[-frames:]]
        if len(tail) == frames and set(tail) == {width}:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"{what}: last frames not all {width} wide after {timeout}s: {tail} "
                f"({player.video_frames} frames, errors {player.errors!r})"
            )
        await asyncio.sleep(0.05)


async def paused_layers(http: aiohttp.ClientSession, url: str) -> float:
    async with http.get(url + "/metrics") as resp:
        metrics = parse_metrics(await resp.text())
    return metrics.get('sfu_simulcast_layers{state="paused"}', 0.0)


async def wait_paused(
    http: aiohttp.ClientSession,
    url: str,
    predicate: Callable[[float], bool],
    *,
    timeout: float,  # noqa: ASYNC109
    what: str,
) -> float:
    deadline = time.monotonic() + timeout
    while True:
        value = await paused_layers(http, url)
        if predicate(value):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: sfu_simulcast_layers paused = {value}")
        await asyncio.sleep(0.1)


def full_size(stats: dict[str, Any] | None, expected: dict[str, int]) -> bool:
    video = (stats or {}).get("video", {})
    return all(
        rid in video
        and video[rid]["frameWidth"] == width
        and video[rid]["framesEncoded"] > 0
        and video[rid]["bytesSent"] > 0
        for rid, width in expected.items()
    )


def viewer_state(node: Any) -> list[dict[str, Any]]:
    """What the node's down-tracks of video are doing (for failure messages)."""
    out = []
    for peer in list(node.peers.values()):
        for slot in peer.slots:
            dt = slot.downtrack
            if dt.kind != "video":
                continue
            out.append({
                "participant": peer.participant, "state": peer.state,
                "current": getattr(dt.current, "rid", None),
                "pending": getattr(dt.pending, "rid", None),
                "preferred_rank": dt.preferred_rank, "paused": dt.paused,
                "awaiting_keyframe": dt.awaiting_keyframe, "dropped_waiting": dt.dropped_waiting,
                "packets_sent": dt.stats.packet_count, "switches": dt.switches,
            })
    return out


def decode_failures(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "failed to decode" in r.getMessage()]


async def test_chromium_simulcast_layers_switching_fallback_dynacast(
    node: Any,
    mint: Callable[..., str],
    chromium: Any,
    pages_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="aiortc.rtcrtpreceiver")
    room = "simulcast1"
    report: dict[str, Any] = {}
    context = await chromium.new_context()
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(context.close)
        http = await stack.enter_async_context(aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=10)
        ))

        # 1. Chromium publishes three layers; wait until it sends each at its full size.
        page = await context.new_page()
        log = PageLog(page, "publish_simulcast.html")
        await page.goto(page_url(pages_url, "publish_simulcast.html", node=node.http_url,
                                 room=room, token=mint(room, "chrome-host", ["publish"])))
        await wait_page_status(page, "connected", timeout=CONNECT_TIMEOUT, log=log)
        capture = await page.evaluate("window.captureSettings")
        video = next(c for c in capture if c["kind"] == "video")
        assert (video["width"], video["height"]) == (1280, 720), capture
        expected = {rid: video["width"] // scale for rid, scale in SCALE.items()}
        t_ramp = time.monotonic()
        stats = await poll_js(
            page, "() => window.getOutboundStats()", lambda s: full_size(s, expected),
            timeout=RAMP_TIMEOUT, interval=1.0, log=log,
            describe=f"Chromium sends q/h/f at {expected} (bandwidth estimate ramp-up)",
        )
        report["ramp_seconds"] = round(time.monotonic() - t_ramp, 1)
        report["publisher_at_full_size"] = stats
        width_of = {name: stats["video"][rid]["frameWidth"] for name, rid in RIDS.items()}
        assert width_of == {"low": 320, "mid": 640, "high": 1280}, width_of
        # Nobody watches yet: dynacast pauses every layer but the lowest (checked every 250 ms).
        await wait_paused(http, node.http_url, lambda v: v == 2, timeout=DYNACAST_TIMEOUT,
                          what="no viewer: q active, h and f paused")

        # 2. One player per layer.
        players: dict[str, WhepSession] = {}
        tokens: dict[str, str] = {}
        for name in ("low", "mid", "high"):
            tokens[name] = mint(room, f"viewer-{name}", ["subscribe"])
            players[name] = await whep_play_layer(node.http_url, room, tokens[name], name)
            stack.push_async_callback(players[name].close)
        for name, player in players.items():
            try:
                await player.wait_for_frames(video=1, timeout=FIRST_FRAMES_TIMEOUT)
                await wait_steady(player, width_of[name], frames=10,
                                  timeout=FIRST_FRAMES_TIMEOUT, what=f"player on ?layer={name}")
            except (TimeoutError, AssertionError) as exc:
                pub = await page.evaluate("window.getOutboundStats()")
                keyframes = {rid: {k: v[k] for k in ("pliCount", "keyFramesEncoded")}
                             for rid, v in pub["video"].items()}
                raise AssertionError(
                    f"?layer={name}: {exc}\nnode: {viewer_state(node)}\n"
                    f"node keyframe requests: {dict(node.metrics.keyframe_requests)}\n"
                    f"publisher PLIs/key frames per rid: {keyframes}\n{log.tail()}"
                ) from exc
        report["player_widths"] = {n: p.last_video_size for n, p in players.items()}
        await wait_paused(http, node.http_url, lambda v: v == 0, timeout=DYNACAST_TIMEOUT,
                          what="every layer is watched")
        # From here on, any decoder error is a failure (the players all started cleanly).
        assert decode_failures(caplog) == []
        caplog.clear()

        # 3. A fourth player switches low -> high -> low mid-stream.
        switch_token = mint(room, "viewer-switch", ["subscribe"])
        switcher = await whep_play_layer(node.http_url, room, switch_token, "low")
        stack.push_async_callback(switcher.close)
        await switcher.wait_for_frames(video=1, timeout=FIRST_FRAMES_TIMEOUT)
        await wait_steady(switcher, width_of["low"], frames=10, timeout=FIRST_FRAMES_TIMEOUT,
                          what="switching player before its first switch")
        start_index = len(switcher.video_frame_times) - 1
        switch_ms: dict[str, float] = {}
        for target in ("high", "low"):
            since = len(switcher.video_frame_sizes)
            t0 = time.monotonic()
            status, text = await post_layer(http, switcher.location, switch_token,
                                            {"layer": target})
            assert status == 200, text
            t1 = await wait_width(switcher, width_of[target], since=since,
                                  timeout=SWITCH_TIMEOUT, what=f"switch to {target}")
            switch_ms[target] = round((t1 - t0) * 1000, 1)
            await wait_steady(switcher, width_of[target], frames=15, timeout=SWITCH_TIMEOUT,
                              what=f"after the switch to {target}")
        times = switcher.video_frame_times[start_index:]
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        report["switch_ms"] = switch_ms
        report["switch_max_gap_ms"] = round(max(gaps) * 1000, 1)
        assert max(gaps) <= MAX_GAP, f"gap of {max(gaps):.3f}s in decoded frames while switching"
        assert decode_failures(caplog) == []
        assert switcher.errors == []

        # 4. The publisher stops its high layer: the high player falls back to mid, and back.
        high = players["high"]
        since = len(high.video_frame_sizes)
        encodings = await page.evaluate("window.setLayerActive('f', false)")
        t_off = time.monotonic()
        assert {"rid": "f", "active": False} in encodings, encodings
        t_fallback = await wait_width(high, width_of["mid"], since=since,
                                      timeout=FALLBACK_LIMIT + 2.0, what="fallback to mid")
        report["fallback_ms"] = round((t_fallback - t_off) * 1000, 1)
        assert t_fallback - t_off <= FALLBACK_LIMIT, (
            f"fell back after {t_fallback - t_off:.3f}s (limit {FALLBACK_LIMIT}s)"
        )
        await wait_steady(high, width_of["mid"], frames=10, timeout=SWITCH_TIMEOUT,
                          what="high player on mid while f is off")
        since = len(high.video_frame_sizes)
        await page.evaluate("window.setLayerActive('f', true)")
        t_on = time.monotonic()
        t_back = await wait_width(high, width_of["high"], since=since, timeout=RECOVER_TIMEOUT,
                                  what="back to high when f returns")
        report["recover_ms"] = round((t_back - t_on) * 1000, 1)
        await wait_steady(high, width_of["high"], frames=10, timeout=SWITCH_TIMEOUT,
                          what="high player back on high")
        assert decode_failures(caplog) == []

        # 5. Dynacast: with no viewer on high, the node pauses it (never the lowest layer).
        assert await high.close() in (200, 204)
        await wait_paused(http, node.http_url, lambda v: v >= 1, timeout=DYNACAST_TIMEOUT,
                          what="high layer paused once nobody wants it")
        report["paused_after_high_left"] = await paused_layers(http, node.http_url)
        for name in ("low", "mid"):
            assert players[name].errors == []
        assert decode_failures(caplog) == []
        report["publisher_final"] = await page.evaluate("window.getOutboundStats()")
        save_artifact("simulcast-e2e.json", report)
        assert await page.evaluate("window.stopPublishing()") in (200, 204), log.tail()
