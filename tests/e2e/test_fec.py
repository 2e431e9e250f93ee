"""Video FEC end to end: ULPFEC over RED with headless Chromium, through impaired UDP.

(a) A Chromium viewer that offers red+ulpfec (Chromium always does) sits behind
    :class:`bench.proxy.ImpairmentProxy` at 15 % Bernoulli downlink loss and 60 ms each way
    (RTT 120 ms): NACK alone is too slow there, so the node adds ULPFEC for it. Chromium
    counts the FEC it receives (inbound-rtp ``fecPacketsReceived``) and keeps decoding; the
    node's ``fec_sent`` counter agrees.
(b) A Chromium publisher answered red+ulpfec (setting ``publish_fec``) at 15 % uplink loss,
    60 ms each way: it sends its video in RED with ULPFEC, the node rebuilds lost packets at
    ingress (``fec_recovered``) and an aiortc viewer on a clean link decodes the stream.

One Chromium per test, each well under a minute. Figures land in test-artifacts/.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import urllib.parse
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from bench.clients.media import SyntheticVideoTrack
from bench.clients.whip import whep_play, whip_publish
from bench.link import LinkConfig
from bench.loss import parse_loss
from bench.proxy import ImpairmentProxy, rewrite_candidates
from tests.e2e.browser import PageLog, page_url, poll_js, save_artifact, wait_page_status

Mint = Callable[..., str]

DELAY = 0.060  # s, one way, both directions: RTT 120 ms
LOSS = "bernoulli:15%"
CONNECT_TIMEOUT = 20.0
FIRST_FRAME_TIMEOUT = 20.0
WINDOW = 15.0  # s measured after the first decoded frame
WIDTH, HEIGHT, FPS = 320, 240, 30


def _links(seed: int) -> tuple[LinkConfig, LinkConfig]:
    """(clean link with the delay, lossy link with the delay)."""
    return (LinkConfig(delay=DELAY, seed=seed),
            LinkConfig(delay=DELAY, loss=parse_loss(LOSS, seed), seed=seed))


async def _post(http_url: str, endpoint: str, room: str, token: str, sdp: str) -> tuple[str, str]:
    """POST an offer; (absolute resource URL, answer SDP)."""
    url = f"{http_url}/{endpoint}/{urllib.parse.quote(room, safe='')}"
    headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http,
        http.post(url, data=sdp.encode(), headers=headers) as resp,
    ):
        body = await resp.text()
        assert resp.status == 201, (resp.status, body)
        return urllib.parse.urljoin(url, resp.headers["Location"]), body


def _video_fec(answer: str) -> dict[str, bool]:
    """What the node's answer negotiated for video: red, ulpfec, and an RTX for RED."""
    video = answer.split("m=video", 1)[1].split("\nm=", 1)[0] if "m=video" in answer else ""
    red = re.search(r"^a=rtpmap:(\d+) red/90000", video, re.M)
    return {
        "red": red is not None,
        "ulpfec": bool(re.search(r"^a=rtpmap:\d+ ulpfec/90000", video, re.M)),
        "red_rtx": red is not None
        and bool(re.search(rf"^a=fmtp:\d+ apt={red.group(1)}\r?$", video, re.M)),
    }


def _recovery(node: Any) -> dict[str, int]:
    return dict(node.metrics.recovery)


def _delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


@pytest.mark.browser
@pytest.mark.timeout(75)
async def test_chromium_viewer_receives_and_uses_ulpfec_at_15pct_loss_120ms_rtt(
    node: Any, mint: Mint, chromium: Any, pages_url: str
) -> None:
    room = "fec-viewer"
    clean, lossy = _links(seed=41)
    proxy = ImpairmentProxy(("127.0.0.1", node.udp_port), uplink=clean, downlink=lossy)
    proxy_addr = await proxy.start()
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(proxy.stop)
        track = SyntheticVideoTrack(width=WIDTH, height=HEIGHT, fps=FPS)
        pub = await whip_publish(node.http_url, room, mint(room, "pub", ["publish"]), [track],
                                 video_codec="video/VP8")
        stack.push_async_callback(pub.close)
        await pub.wait_connected(CONNECT_TIMEOUT)

        context = await chromium.new_context()
        stack.push_async_callback(context.close)
        page = await context.new_page()
        log = PageLog(page, "play_proxy.html")
        await page.goto(page_url(pages_url, "play_proxy.html", audio="0"))
        offer = await asyncio.wait_for(page.evaluate("makeOffer()"), 10)
        token = mint(room, "chrome-viewer", ["subscribe"])
        _, answer = await _post(node.http_url, "whep", room, token, offer)
        await page.evaluate("(sdp) => applyAnswer(sdp)", rewrite_candidates(answer, proxy_addr))
        await wait_page_status(page, "connected", timeout=CONNECT_TIMEOUT, log=log)
        negotiated = _video_fec(answer)
        assert negotiated == {"red": True, "ulpfec": True, "red_rtx": True}, answer

        stats = "() => window.getInboundStats()"
        await poll_js(page, stats, lambda s: bool(s) and s["framesDecoded"] > 0,
                      timeout=FIRST_FRAME_TIMEOUT, describe="first decoded frame", log=log)
        rec0, before = _recovery(node), await page.evaluate(stats)
        lost0 = proxy.downlink_stats.dropped_loss
        await asyncio.sleep(WINDOW)
        after = await page.evaluate(stats)
        rec = _delta(_recovery(node), rec0)
        lost = proxy.downlink_stats.dropped_loss - lost0
        metrics = node.metrics.render().decode()
        figures = {
            "window_s": WINDOW, "downlink_dropped_by_proxy": lost,
            "frames_decoded": after["framesDecoded"] - before["framesDecoded"],
            "fec_packets_received": after["fecPacketsReceived"] - before["fecPacketsReceived"],
            "fec_packets_discarded": (after["fecPacketsDiscarded"]
                                      - before["fecPacketsDiscarded"]),
            "nacks_sent": after["nackCount"] - before["nackCount"],
            "retransmitted_packets_received": (after["retransmittedPacketsReceived"]
                                               - before["retransmittedPacketsReceived"]),
            "freezes": after["freezeCount"] - before["freezeCount"],
            "freeze_s": round(after["totalFreezesDuration"] - before["totalFreezesDuration"], 3),
            "node_recovery": rec, "negotiated": negotiated, "final": after,
            "fec_viewers": re.findall(r"^sfu_fec_viewers\{.*$", metrics, re.M),
        }
        save_artifact("fec-chromium-viewer.json", figures)
        print("chromium viewer, 15% loss, RTT 120 ms:", figures)
        assert lost > 0, figures  # the loss really happened on this viewer's link
        assert rec.get("fec_sent", 0) > 0, figures
        assert figures["fec_packets_received"] > 0, (figures, log.tail())
        # FEC packets Chromium could not use are discarded; most must be usable (in range,
        # well formed), or it would discard nearly all of them.
        assert figures["fec_packets_discarded"] < figures["fec_packets_received"], figures
        assert figures["frames_decoded"] > 0.8 * FPS * WINDOW, (figures, log.tail())
        assert 'sfu_fec_viewers{state="protecting"} 1.0' in metrics, figures


@pytest.mark.browser
@pytest.mark.timeout(75)
async def test_chromium_publisher_ulpfec_is_recovered_at_ingress_at_15pct_uplink_loss(
    node: Any, mint: Mint, chromium: Any, pages_url: str
) -> None:
    node.settings.publish_fec = True
    room = "fec-publisher"
    clean, lossy = _links(seed=51)
    proxy = ImpairmentProxy(("127.0.0.1", node.udp_port), uplink=lossy, downlink=clean)
    proxy_addr = await proxy.start()
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(proxy.stop)
        context = await chromium.new_context()
        stack.push_async_callback(context.close)
        page = await context.new_page()
        log = PageLog(page, "publish_proxy.html")
        await page.goto(page_url(pages_url, "publish_proxy.html", audio="0",
                                 width=str(WIDTH * 2), height=str(HEIGHT * 2)))
        offer = await asyncio.wait_for(page.evaluate("makeOffer()"), 10)
        token = mint(room, "chrome-pub", ["publish"])
        _, answer = await _post(node.http_url, "whip", room, token, offer)
        await page.evaluate("(sdp) => applyAnswer(sdp)", rewrite_candidates(answer, proxy_addr))
        await wait_page_status(page, "connected", timeout=CONNECT_TIMEOUT, log=log)
        negotiated = _video_fec(answer)
        assert negotiated == {"red": True, "ulpfec": True, "red_rtx": True}, answer

        player = await whep_play(node.http_url, room, mint(room, "viewer", ["subscribe"]),
                                 audio=False)
        stack.push_async_callback(player.close)
        await player.wait_connected(CONNECT_TIMEOUT)
        await player.wait_for_frames(video=1, timeout=FIRST_FRAME_TIMEOUT)
        rec0, lost0 = _recovery(node), proxy.uplink_stats.dropped_loss
        frames0 = player.video_frames
        await asyncio.sleep(WINDOW)
        rec = _delta(_recovery(node), rec0)
        lost = proxy.uplink_stats.dropped_loss - lost0
        outbound = await page.evaluate("() => window.getOutboundStats()")
        figures = {
            "window_s": WINDOW, "uplink_dropped_by_proxy": lost,
            "viewer_frames_decoded": player.video_frames - frames0,
            "node_recovery": rec, "negotiated": negotiated, "publisher": outbound,
            "viewer_errors": repr(player.errors),
        }
        save_artifact("fec-chromium-publisher.json", figures)
        print("chromium publisher, 15% uplink loss, RTT 120 ms:", figures)
        assert lost > 0, figures
        assert rec.get("fec_in", 0) > 0, (figures, log.tail())  # Chromium sent ULPFEC
        assert rec.get("fec_recovered", 0) > 0, figures  # and the node rebuilt packets
        assert figures["viewer_frames_decoded"] > 0.5 * FPS * WINDOW, figures
        assert player.errors == []
