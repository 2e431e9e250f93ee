"""Headless Chromium against the node: a browser publishes its fake camera + mic via WHIP,
a browser player and an aiortc player both decode it via WHEP.

The pages (tests/e2e/pages) are served from another 127.0.0.1 port, so the node's CORS is
exercised too. A screenshot of the player page and the stats land in test-artifacts/.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest

from bench.clients.whip import whep_play
from tests.e2e.browser import (
    ARTIFACTS_DIR,
    PageLog,
    page_url,
    poll_js,
    save_artifact,
    wait_page_status,
)

pytestmark = pytest.mark.browser

CONNECT_TIMEOUT = 20.0
DECODE_TIMEOUT = 30.0


async def test_chromium_publishes_chromium_and_aiortc_play(
    node: Any, mint: Callable[..., str], chromium: Any, pages_url: str
) -> None:
    room = "live1"
    context = await chromium.new_context(viewport={"width": 1280, "height": 900})
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(context.close)

        publisher = await context.new_page()
        pub_log = PageLog(publisher, "publish.html")
        await publisher.goto(
            page_url(
                pages_url,
                "publish.html",
                node=node.http_url,
                room=room,
                token=mint(room, "chrome-host", ["publish"]),
            )
        )
        await wait_page_status(publisher, "connected", timeout=CONNECT_TIMEOUT, log=pub_log)
        capture = await publisher.evaluate("window.captureSettings")
        video_capture = [c for c in capture if c["kind"] == "video"]
        assert video_capture and (video_capture[0]["width"], video_capture[0]["height"]) == (
            1280,
            720,
        ), capture
        outbound = await poll_js(
            publisher,
            "() => window.getOutboundStats()",
            lambda s: bool(s) and s["framesEncoded"] > 0 and s["bytesSent"] > 0,
            timeout=DECODE_TIMEOUT,
            describe="publisher encodes and sends video",
            log=pub_log,
        )

        player = await context.new_page()
        play_log = PageLog(player, "play.html")
        await player.goto(
            page_url(
                pages_url,
                "play.html",
                node=node.http_url,
                room=room,
                token=mint(room, "chrome-viewer", ["subscribe"]),
            )
        )
        await wait_page_status(player, "connected", timeout=CONNECT_TIMEOUT, log=play_log)

        aio_player = await whep_play(
            node.http_url, room, mint(room, "aiortc-viewer", ["subscribe"])
        )
        stack.push_async_callback(aio_player.close)

        inbound = await poll_js(
            player,
            "() => window.getInboundStats()",
            lambda s: bool(s) and s["framesDecoded"] > 0 and s["packetsReceived"] > 0,
            timeout=DECODE_TIMEOUT,
            describe="Chromium player decodes video and receives audio",
            log=play_log,
        )
        assert inbound["frameWidth"] > 0 and inbound["frameHeight"] > 0, inbound
        # Let the <video> element paint something before the screenshot.
        inbound = await poll_js(
            player,
            "() => window.getInboundStats()",
            lambda s: s["videoElement"]["width"] > 0 and s["videoElement"]["currentTime"] > 0.5,
            timeout=DECODE_TIMEOUT,
            describe="<video> element plays",
            log=play_log,
        )

        await aio_player.wait_for_frames(video=30, audio=25, timeout=DECODE_TIMEOUT)
        assert aio_player.errors == []
        width, height = aio_player.video_frame_sizes[-1]
        assert width > 0 and height > 0

        ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
        await player.screenshot(path=str(ARTIFACTS_DIR / "whep-player-chromium.png"))
        await publisher.screenshot(path=str(ARTIFACTS_DIR / "whip-publisher-chromium.png"))
        outbound = await publisher.evaluate("window.getOutboundStats()")
        save_artifact(
            "browser-e2e-stats.json",
            {
                "capture": capture,
                "publisher_outbound": outbound,
                "player_inbound": inbound,
                "aiortc_player": {
                    "video_frames": aio_player.video_frames,
                    "audio_frames": aio_player.audio_frames,
                    "last_size": [width, height],
                },
            },
        )

        assert await aio_player.close() in (200, 204)
        assert await player.evaluate("window.stopPlaying()") in (200, 204), play_log.tail()
        assert await publisher.evaluate("window.stopPublishing()") in (200, 204), pub_log.tail()
