"""Video FEC end to end: ULPFEC over RED with headless Chromium, through impaired UDP.

(a) A Chromium viewer that offers red+ulpfec (Chromium always does) sits behind
    :class:`bench.proxy.ImpairmentProxy` at 15 % Bernoulli downlink loss and 60 ms each way
    (RTT 120 ms): NACK alone is too slow there, so the node adds ULPFEC for it
    (``fec_sent``) and Chromium decodes nearly every frame: media in RED while FEC is on,
    RTX of RED for what FEC cannot rebuild. Chromium's getStats counts FEC packets
    (``fecPacketsReceived``) for FlexFEC streams only, so that proof comes from (b).
(b) Two Chromium viewers whose offers lose their NACK feedback, at 10 % loss each: the
    one with red+ulpfec decodes far more frames than the one without.
(c) A Chromium publisher answered red+ulpfec and Opus RED (settings ``publish_fec``,
    ``publish_red``) at 15 % uplink loss, 60 ms each way: it sends its video in RED with
    ULPFEC and its Opus in RED, the node rebuilds lost packets at ingress
    (``fec_recovered``, ``red_recovered``) and an aiortc viewer on a clean link, which
    negotiates no RED, decodes nearly all of both.

One Chromium per test, each well under a minute. Figures land in test-artifacts/.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from typing import Any

import pytest

from bench.clients.media import SyntheticVideoTrack
from bench.clients.whip import whep_play, whip_publish
from bench.link import LinkConfig
from bench.loss import parse_loss
from bench.proxy import ImpairmentProxy, rewrite_candidates
from tests.e2e.browser import (
    PageLog,
    page_url,
    poll_js,
    post_offer,
    save_artifact,
    wait_page_status,
)

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


def _strip_nack(sdp: str) -> str:
    """The offer without generic NACK feedback (PLI stays): a viewer only FEC can repair."""
    return re.sub(r"^a=rtcp-fb:\S+ nack\r?\n", "", sdp, flags=re.M)


def _strip_fec(sdp: str) -> str:
    """The offer without video red/ulpfec (and RED's RTX): a viewer the node sends no FEC."""
    video_start = sdp.index("m=video")
    head, video = sdp[:video_start], sdp[video_start:]
    pts = set(re.findall(r"^a=rtpmap:(\d+) (?:red|ulpfec)/90000", video, re.M))
    pts |= set(re.findall(rf"^a=fmtp:(\d+) apt=(?:{'|'.join(pts)})\r?$", video, re.M))
    lines = [ln for ln in video.split("\r\n")
             if not re.match(rf"a=(?:rtpmap|fmtp|rtcp-fb):(?:{'|'.join(pts)})\b", ln)]
    m_line = lines[0].split(" ")
    lines[0] = " ".join(m_line[:3] + [p for p in m_line[3:] if p not in pts])
    return head + "\r\n".join(lines)


async def _chromium_viewer(chromium_context: Any, pages_url: str, node: Any, mint: Mint,
                           room: str, name: str, proxy_addr: tuple[str, int],
                           munge: Callable[[str], str] = lambda s: s) -> tuple[Any, PageLog,
                                                                              str]:
    page = await chromium_context.new_page()
    log = PageLog(page, f"play_proxy.html ({name})")
    await page.goto(page_url(pages_url, "play_proxy.html", audio="0"))
    offer = munge(await asyncio.wait_for(page.evaluate("makeOffer()"), 10))
    _, answer = await post_offer(node.http_url, "whep", room, mint(room, name, ["subscribe"]), offer)
    await page.evaluate("(sdp) => applyAnswer(sdp)", rewrite_candidates(answer, proxy_addr))
    await wait_page_status(page, "connected", timeout=CONNECT_TIMEOUT, log=log)
    return page, log, answer


STATS = "() => window.getInboundStats()"


@pytest.mark.browser
@pytest.mark.timeout(75)
async def test_chromium_viewer_gets_ulpfec_and_decodes_at_15pct_loss_120ms_rtt(
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
        page, log, answer = await _chromium_viewer(context, pages_url, node, mint, room,
                                                   "chrome-viewer", proxy_addr)
        negotiated = _video_fec(answer)
        assert negotiated == {"red": True, "ulpfec": True, "red_rtx": True}, answer
        await poll_js(page, STATS, lambda s: bool(s) and s["framesDecoded"] > 0,
                      timeout=FIRST_FRAME_TIMEOUT, describe="first decoded frame", log=log)
        rec0, before = _recovery(node), await page.evaluate(STATS)
        lost0 = proxy.downlink_stats.dropped_loss
        await asyncio.sleep(WINDOW)
        after = await page.evaluate(STATS)
        rec = _delta(_recovery(node), rec0)
        lost = proxy.downlink_stats.dropped_loss - lost0
        metrics = node.metrics.render().decode()
        figures = {
            "window_s": WINDOW, "downlink_dropped_by_proxy": lost,
            "frames_decoded": after["framesDecoded"] - before["framesDecoded"],
            # Chromium fills these for FlexFEC streams only, so 0 with ULPFEC.
            "fec_packets_received": after["fecPacketsReceived"] - before["fecPacketsReceived"],
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
        assert 'sfu_fec_viewers{state="protecting"} 1.0' in metrics, figures
        # Media in RED and RTX of RED decode: nearly every frame despite 15 % loss.
        assert figures["frames_decoded"] > 0.9 * FPS * WINDOW, (figures, log.tail())
        assert rec.get("retransmits", 0) > 0, figures


@pytest.mark.browser
@pytest.mark.timeout(75)
async def test_chromium_decodes_what_only_ulpfec_repairs(
    node: Any, mint: Mint, chromium: Any, pages_url: str
) -> None:
    """Two Chromium viewers without NACK behind 10 % loss each: the one with red+ulpfec
    decodes far more of the stream than the one without, so Chromium really rebuilds
    packets from the node's ULPFEC (its getStats has no ULPFEC counters)."""
    room = "fec-only"
    proxies = []
    for seed in (61, 62):
        proxy = ImpairmentProxy(("127.0.0.1", node.udp_port), uplink=LinkConfig(delay=DELAY),
                                downlink=LinkConfig(delay=DELAY, seed=seed,
                                                    loss=parse_loss("bernoulli:10%", seed)))
        proxies.append((proxy, await proxy.start()))
    async with contextlib.AsyncExitStack() as stack:
        for proxy, _ in proxies:
            stack.push_async_callback(proxy.stop)
        track = SyntheticVideoTrack(width=WIDTH, height=HEIGHT, fps=FPS)
        pub = await whip_publish(node.http_url, room, mint(room, "pub", ["publish"]), [track],
                                 video_codec="video/VP8")
        stack.push_async_callback(pub.close)
        await pub.wait_connected(CONNECT_TIMEOUT)
        context = await chromium.new_context()
        stack.push_async_callback(context.close)
        with_fec = await _chromium_viewer(context, pages_url, node, mint, room, "with-fec",
                                          proxies[0][1], _strip_nack)
        without = await _chromium_viewer(context, pages_url, node, mint, room, "without-fec",
                                         proxies[1][1], lambda s: _strip_fec(_strip_nack(s)))
        assert _video_fec(with_fec[2])["ulpfec"] and not _video_fec(without[2])["red"]
        assert not re.search(r"^a=rtcp-fb:\d+ nack\r?$", with_fec[2] + without[2], re.M)
        for page, log, _ in (with_fec, without):
            await poll_js(page, STATS, lambda s: bool(s) and s["framesDecoded"] > 0,
                          timeout=FIRST_FRAME_TIMEOUT, describe="first decoded frame", log=log)
        before = [await page.evaluate(STATS) for page, _, _ in (with_fec, without)]
        rec0 = _recovery(node)
        await asyncio.sleep(WINDOW)
        after = [await page.evaluate(STATS) for page, _, _ in (with_fec, without)]
        rec = _delta(_recovery(node), rec0)
        figures: dict[str, Any] = {"window_s": WINDOW, "node_recovery": rec}
        for name, b, a in zip(("with_fec", "without_fec"), before, after, strict=True):
            figures[name] = {k: round(a[k] - b[k], 3) for k in
                             ("framesDecoded", "freezeCount", "totalFreezesDuration",
                              "pliCount", "videoPacketsLost")}
        figures["dropped_by_proxy"] = [p.downlink_stats.dropped_loss for p, _ in proxies]
        save_artifact("fec-chromium-fec-only.json", figures)
        print("chromium without NACK, 10% loss, with and without FEC:", figures)
        fec_frames = figures["with_fec"]["framesDecoded"]
        plain_frames = figures["without_fec"]["framesDecoded"]
        assert rec.get("fec_sent", 0) > 0, figures
        assert all(d > 0 for d in figures["dropped_by_proxy"]), figures
        # Without any repair nearly every frame after the first loss waits for a key frame;
        # with FEC most losses are rebuilt (the rest still wait: Chromium keeps NACKing, as
        # its own offer said, before it asks for a key frame).
        assert fec_frames > 3 * max(plain_frames, 10), figures
        assert fec_frames > 0.25 * FPS * WINDOW, figures


@pytest.mark.browser
@pytest.mark.timeout(75)
async def test_chromium_publisher_ulpfec_is_recovered_at_ingress_at_15pct_uplink_loss(
    node: Any, mint: Mint, chromium: Any, pages_url: str
) -> None:
    node.settings.publish_fec = True
    node.settings.publish_red = True
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
        await page.goto(page_url(pages_url, "publish_proxy.html",
                                 width=str(WIDTH), height=str(HEIGHT)))
        offer = await asyncio.wait_for(page.evaluate("makeOffer()"), 10)
        token = mint(room, "chrome-pub", ["publish"])
        _, answer = await post_offer(node.http_url, "whip", room, token, offer)
        await page.evaluate("(sdp) => applyAnswer(sdp)", rewrite_candidates(answer, proxy_addr))
        await wait_page_status(page, "connected", timeout=CONNECT_TIMEOUT, log=log)
        negotiated = _video_fec(answer)
        assert negotiated == {"red": True, "ulpfec": True, "red_rtx": True}, answer
        audio = answer.split("m=audio", 1)[1].split("\nm=", 1)[0]
        # Opus RED answered ahead of Opus: the order libwebrtc needs to send RED.
        assert re.search(r"^m=audio \d+ \S+ (\d+) ", "m=audio" + audio, re.M), answer
        assert re.search(r"^a=rtpmap:\d+ red/48000/2\r?$", audio, re.M), answer

        # An aiortc viewer negotiates neither RED: plain Opus and plain VP8 for it.
        player = await whep_play(node.http_url, room, mint(room, "viewer", ["subscribe"]))
        stack.push_async_callback(player.close)
        await player.wait_connected(CONNECT_TIMEOUT)
        await player.wait_for_frames(video=1, timeout=FIRST_FRAME_TIMEOUT)
        rec0, lost0 = _recovery(node), proxy.uplink_stats.dropped_loss
        frames0, audio0 = player.video_frames, player.audio_frames
        await asyncio.sleep(WINDOW)
        rec = _delta(_recovery(node), rec0)
        lost = proxy.uplink_stats.dropped_loss - lost0
        outbound = await page.evaluate("() => window.getOutboundStats()")
        figures = {
            "window_s": WINDOW, "uplink_dropped_by_proxy": lost,
            "viewer_frames_decoded": player.video_frames - frames0,
            "viewer_audio_frames": player.audio_frames - audio0,
            "node_recovery": rec, "negotiated": negotiated, "publisher": outbound,
            "viewer_errors": repr(player.errors),
        }
        save_artifact("fec-chromium-publisher.json", figures)
        print("chromium publisher, 15% uplink loss, RTT 120 ms:", figures)
        assert lost > 0, figures
        assert rec.get("fec_in", 0) > 0, (figures, log.tail())  # Chromium sent ULPFEC
        assert rec.get("fec_recovered", 0) > 0, figures  # and the node rebuilt packets
        assert figures["viewer_frames_decoded"] > 0.5 * FPS * WINDOW, figures
        assert rec.get("red_in", 0) > 0, figures  # Chromium sent Opus in RED
        # 50 Opus frames a second reach the viewer, its RED stripped (a few lost upstream).
        assert figures["viewer_audio_frames"] > 0.7 * 50 * WINDOW, figures
        assert player.errors == []
