"""Peers that go away without DELETE are removed with their tracks and subscriptions."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from bench.clients.media import SyntheticVideoTrack, ToneAudioTrack
from bench.clients.whip import whep_play, whip_publish


async def _until(predicate: Callable[[], bool], limit: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_silent_peers_time_out_on_the_node_clock(node: Any, mint: Callable[..., str]) -> None:
    pub = await whip_publish(node.http_url, "r", mint("r", "host", "publish"),
                             [SyntheticVideoTrack(), ToneAudioTrack()])
    player = await whep_play(node.http_url, "r", mint("r", "viewer", "subscribe"))
    try:
        await player.wait_for_frames(video=10, audio=5, timeout=20)
        room = node.rooms["r"]
        assert len(room.receivers) == 2 and all(s.downtrack.bound for s in room.slots)
        now = node.now()
        node.tick(now + node.settings.peer_timeout - 1)  # not silent long enough yet
        assert len(node.peers) == 2
        # Drive the node's clock past the timeout: nothing was heard "since".
        node.tick(now + node.settings.peer_timeout + 1)
        assert node.peers == {}
        assert "r" not in node.rooms
        text = node.metrics.render().decode()
        assert 'sfu_sessions_closed_total{reason="timeout"} 2.0' in text
    finally:
        await player.pc.close()
        await pub.pc.close()


async def test_hang_up_without_delete_removes_tracks(node: Any, mint: Callable[..., str]) -> None:
    pub = await whip_publish(node.http_url, "r", mint("r", "host", "publish"),
                             [SyntheticVideoTrack(), ToneAudioTrack()])
    player = await whep_play(node.http_url, "r", mint("r", "viewer", "subscribe"))
    try:
        await player.wait_for_frames(video=10, audio=5, timeout=20)
        await pub.pc.close()  # DTLS close_notify, no DELETE
        await _until(lambda: not node.rooms["r"].receivers, 5.0)
        room = node.rooms["r"]
        assert all(not s.downtrack.bound for s in room.slots)
        assert node.metrics.sessions_closed["dtls_closed"] == 1
        # The player stays connected and gets the next publisher on the same sections.
        pub = await whip_publish(node.http_url, "r", mint("r", "host2", "publish"),
                                 [SyntheticVideoTrack(), ToneAudioTrack()])
        before = player.video_frames
        await player.wait_for_frames(video=before + 20, audio=5, timeout=20)
    finally:
        await player.close()
        await pub.close()
