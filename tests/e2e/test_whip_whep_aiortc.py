"""End to end over real UDP on 127.0.0.1: aiortc publishes through WHIP, aiortc plays via WHEP.

Each test runs a real Node (fixture ``node``) on ephemeral ports; all ICE is loopback-only
(autouse fixture ``loopback_ice``). Every wait is bounded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from bench.clients.media import SyntheticVideoTrack, ToneAudioTrack
from bench.clients.whip import WhepSession, WhipError, WhipSession, whep_play, whip_publish

FRAME_TIMEOUT = 20.0
VIDEO_FRAMES = 30
AUDIO_FRAMES = 25  # 0.5 s of 20 ms Opus frames

Mint = Callable[..., str]


async def _http_get(url: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
        http.get(url) as resp,
    ):
        return resp.status, await resp.text()


async def _publish(node: Any, mint: Mint, room: str, identity: str = "host") -> WhipSession:
    return await whip_publish(
        node.http_url,
        room,
        mint(room, identity, ["publish"]),
        [SyntheticVideoTrack(width=320, height=240, fps=30), ToneAudioTrack(freq=440)],
    )


async def _play(node: Any, mint: Mint, room: str, identity: str, **kw: bool) -> WhepSession:
    return await whep_play(node.http_url, room, mint(room, identity, ["subscribe"]), **kw)


def _assert_decoded(player: WhepSession) -> None:
    assert player.video_frames >= VIDEO_FRAMES
    assert player.audio_frames >= AUDIO_FRAMES
    assert player.errors == []
    # The synthetic source is 320x240; an SFU forwards, it does not rescale.
    assert set(player.video_frame_sizes) == {(320, 240)}, set(player.video_frame_sizes)
    assert player.first_frame_at is not None


def _assert_deleted(status: int | None, what: str) -> None:
    assert status in (200, 204), f"DELETE {what} answered {status}"


async def test_publish_two_players_then_delete_and_third_player(node: Any, mint: Mint) -> None:
    room = "r1"
    async with contextlib.AsyncExitStack() as stack:
        publisher = await _publish(node, mint, room)
        stack.push_async_callback(publisher.close)
        assert publisher.location.startswith(node.http_url + "/whip/r1/"), publisher.location

        players = []
        for i in range(2):
            player = await _play(node, mint, room, f"viewer{i}")
            stack.push_async_callback(player.close)
            assert player.location.startswith(node.http_url + "/whep/r1/"), player.location
            players.append(player)
        assert players[0].location != players[1].location

        for player in players:
            await player.wait_for_frames(
                video=VIDEO_FRAMES, audio=AUDIO_FRAMES, timeout=FRAME_TIMEOUT
            )
            _assert_decoded(player)

        for i, player in enumerate(players):
            _assert_deleted(await player.close(), f"player {i}")

        status, _ = await _http_get(f"{node.http_url}/healthz")
        assert status == 200, "node unhealthy after players left"
        await publisher.wait_connected(timeout=5)  # the publisher is unaffected

        third = await _play(node, mint, room, "viewer3")
        stack.push_async_callback(third.close)
        await third.wait_for_frames(video=VIDEO_FRAMES, audio=AUDIO_FRAMES, timeout=FRAME_TIMEOUT)
        _assert_decoded(third)

        status, metrics = await _http_get(f"{node.http_url}/metrics")
        assert status == 200 and metrics.strip(), "empty /metrics"

        _assert_deleted(await third.close(), "third player")
        _assert_deleted(await publisher.close(), "publisher")

    status, _ = await _http_get(f"{node.http_url}/healthz")
    assert status == 200, "node unhealthy after the publisher left"


async def test_player_joining_before_publisher_gets_media(node: Any, mint: Mint) -> None:
    room = "early"
    async with contextlib.AsyncExitStack() as stack:
        player = await _play(node, mint, room, "early-viewer")
        stack.push_async_callback(player.close)
        assert player.video_frames == 0

        publisher = await _publish(node, mint, room)
        stack.push_async_callback(publisher.close)

        await player.wait_for_frames(video=VIDEO_FRAMES, audio=AUDIO_FRAMES, timeout=FRAME_TIMEOUT)
        _assert_decoded(player)
        _assert_deleted(await player.close(), "player")
        _assert_deleted(await publisher.close(), "publisher")


async def test_player_datachannel_opens(node: Any, mint: Mint) -> None:
    room = "shop"
    async with contextlib.AsyncExitStack() as stack:
        publisher = await _publish(node, mint, room)
        stack.push_async_callback(publisher.close)
        player = await _play(node, mint, room, "dc-viewer", datachannel=True)
        stack.push_async_callback(player.close)

        channel = await player.wait_channel_open(timeout=FRAME_TIMEOUT)
        assert channel.label == "events"
        assert channel.readyState == "open"
        # The datachannel shares the transport with media, which still flows.
        await player.wait_for_frames(video=VIDEO_FRAMES, audio=AUDIO_FRAMES, timeout=FRAME_TIMEOUT)
        _assert_deleted(await player.close(), "player")


async def test_refused_offers_are_4xx_with_a_reason(node: Any, mint: Mint) -> None:
    room = "r1"
    with pytest.raises(WhipError) as bad_token:
        await whep_play(node.http_url, room, "not-a-token")
    assert 400 <= bad_token.value.status < 500 and bad_token.value.reason

    # A token for another room must not play this one.
    with pytest.raises(WhipError) as other_room:
        await whep_play(node.http_url, room, mint("elsewhere", "viewer", ["subscribe"]))
    assert 400 <= other_room.value.status < 500 and other_room.value.reason

    # A subscribe-only token must not publish.
    with pytest.raises(WhipError) as no_grant:
        await whip_publish(
            node.http_url, room, mint(room, "viewer", ["subscribe"]), [SyntheticVideoTrack()]
        )
    assert 400 <= no_grant.value.status < 500 and no_grant.value.reason

    status, _ = await _http_get(f"{node.http_url}/healthz")
    assert status == 200
