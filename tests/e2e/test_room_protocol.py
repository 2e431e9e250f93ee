"""The WebSocket room protocol with real aiortc peers: publish, subscribe, renegotiate, leave."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest

from bench.clients.media import SyntheticVideoTrack, ToneAudioTrack
from bench.clients.room import RoomClient, RoomError


async def test_publish_subscribe_and_renegotiate(node: Any, mint: Callable[..., str]) -> None:
    host = await RoomClient.connect(node.http_url, mint("show", "host", ["publish", "subscribe"]))
    viewer = await RoomClient.connect(node.http_url, mint("show", "viewer", ["subscribe"]))
    try:
        reply = await host.publish([SyntheticVideoTrack(), ToneAudioTrack()])
        assert len(reply["published"]) == 2
        await viewer.wait_for_tracks(2)
        answer = await viewer.subscribe_all()
        assert set(answer["subscribed"].values()) == {t["track_id"] for t in viewer.remote_tracks()}
        video_mid = next(m for m, t in viewer.subscriptions.items()
                         if any(x["track_id"] == t and x["kind"] == "video" for x in viewer.tracks))
        await viewer.wait_for_frames(video_mid, 30)

        # The host adds a second camera: the viewer is told and renegotiates for it.
        await host.publish([SyntheticVideoTrack(width=160, height=120)])
        await viewer.wait_for_tracks(3)
        await viewer.subscribe_all()
        new_mid = max(viewer.subscriptions, key=int)
        await viewer.wait_for_frames(new_mid, 20)
        assert viewer.frame_sizes[new_mid] == (160, 120)
        assert viewer.frame_sizes[video_mid] == (320, 240)

        # The host leaves: the viewer sees the room empty.
        await host.close()
        await viewer.wait_for_tracks(0)
    finally:
        await host.close()
        await viewer.close()


async def test_protocol_errors_keep_socket_open(node: Any, mint: Callable[..., str]) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(
        node.http_url.replace("http", "ws") + "/ws"
    ) as ws:
        async def ask(payload: str) -> dict[str, Any]:
            await ws.send_str(payload)
            msg = await asyncio.wait_for(ws.receive(), 5)
            return json.loads(msg.data)

        assert (await ask("{nope"))["code"] == "malformed"
        assert (await ask('{"type": "offer", "sdp": "v=0"}'))["code"] == "not_joined"
        assert (await ask('{"type": "ping", "id": 7}')) == {"v": 1, "type": "pong", "id": 7}
        joined = await ask(json.dumps({"type": "join", "token": mint("r", "a", ["subscribe"])}))
        assert joined["type"] == "joined" and joined["tracks"] == []
        assert (await ask('{"type": "dance"}'))["code"] == "unknown_type"
        bad = await ask('{"type": "offer", "sdp": "v=0\\r\\nm=video"}')
        assert bad["code"] == "bad_offer" and "m=" in bad["reason"]
        assert (await ask('{"type": "ping"}'))["type"] == "pong"


async def test_join_with_bad_token_is_refused(node: Any, mint: Callable[..., str]) -> None:
    other = mint("r", "a", ["subscribe"])[:-4] + "AAAA"
    with pytest.raises(RoomError) as info:
        await RoomClient.connect(node.http_url, other)
    assert info.value.code == "unauthorized"
