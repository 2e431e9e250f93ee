"""RTCP end to end: receiver reports reach the publisher, translated sender reports reach
players, and H.264 is forwarded like VP8."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from bench.clients.media import SyntheticVideoTrack, ToneAudioTrack
from bench.clients.whip import whep_play, whip_publish


async def _stats_of_type(getter: Callable[[], Any], kind: str, limit: float) -> list[Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while True:
        report = await getter()
        found = [s for s in report.values() if s.type == kind]
        if found or loop.time() > deadline:
            return found
        await asyncio.sleep(0.2)


async def test_reports_flow_both_ways(node: Any, mint: Callable[..., str]) -> None:
    pub = await whip_publish(node.http_url, "r", mint("r", "host", "publish"),
                             [SyntheticVideoTrack(), ToneAudioTrack()])
    player = await whep_play(node.http_url, "r", mint("r", "viewer", "subscribe"))
    try:
        await player.wait_for_frames(video=10, audio=5, timeout=20)
        sender = next(s for s in pub.pc.getSenders() if s.track and s.track.kind == "video")
        # The node's receiver reports: the publisher sees remote-inbound stats for its SSRC.
        rr = await _stats_of_type(sender.getStats, "remote-inbound-rtp", 10)
        assert rr and rr[0].packetsLost == 0
        # The publisher's sender reports, translated to the player's SSRC and timeline.
        receiver = next(r for r in player.pc.getReceivers() if r.track.kind == "video")
        sr = await _stats_of_type(receiver.getStats, "remote-outbound-rtp", 10)
        assert sr and sr[0].packetsSent > 0
        downtrack = node.rooms["r"].slots[0].downtrack
        assert downtrack.stats.packet_count > 0
    finally:
        await player.close()
        await pub.close()


async def test_h264_is_forwarded(node: Any, mint: Callable[..., str]) -> None:
    pub = await whip_publish(node.http_url, "r", mint("r", "host", "publish"),
                             [SyntheticVideoTrack()], video_codec="video/H264")
    player = await whep_play(node.http_url, "r", mint("r", "viewer", "subscribe"), audio=False)
    try:
        await player.wait_for_frames(video=30, audio=0, timeout=20)
        assert node.rooms["r"].receivers and all(
            r.info.codec.name == "H264" for r in node.rooms["r"].receivers.values()
        )
        assert player.video_frame_sizes[-1] == (320, 240)
    finally:
        await player.close()
        await pub.close()
