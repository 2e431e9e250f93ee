"""An aiortc client of the node's room protocol (WebSocket `/ws`, see docs/protocol.md).

    client = await RoomClient.connect(http_url, token)
    await client.publish([SyntheticVideoTrack(), ToneAudioTrack()])
    await client.subscribe_all()            # one recvonly transceiver per remote track
    await client.wait_for_frames(video=30, timeout=20)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import aiohttp
from aiortc import RTCRtpTransceiver, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from bench.clients.whip import new_peer_connection

TIMEOUT = 15.0


class RoomError(Exception):
    """The node answered with an `error` message."""

    def __init__(self, message: dict[str, Any]) -> None:
        super().__init__(f"{message.get('code')}: {message.get('reason')}")
        self.code = message.get("code")
        self.reason = message.get("reason")


class RoomClient:
    """One participant: a WebSocket and one peer connection."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.http = http
        self.ws = ws
        self.pc = new_peer_connection()
        self.participant = ""
        self.tracks: list[dict[str, str]] = []  # the room's tracks, as last announced
        self.subscriptions: dict[str, str] = {}  # mid -> track id
        self.published: dict[str, str] = {}  # mid -> track id
        self.video_frames: dict[str, int] = {}  # mid -> decoded frames
        self.audio_frames: dict[str, int] = {}
        self.frame_sizes: dict[str, tuple[int, int]] = {}
        self.events: list[dict[str, Any]] = []
        self._next_id = 0
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._tracks_changed = asyncio.Event()
        self._progress = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._reader = asyncio.ensure_future(self._read())
        self.pc.on("track", self._on_track)

    @classmethod
    async def connect(cls, http_url: str, token: str) -> RoomClient:
        http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        ws = await http.ws_connect(http_url.replace("http", "ws", 1) + "/ws")
        client = cls(http, ws)
        joined = await client.request({"type": "join", "token": token})
        client.participant = joined["participant"]
        client.tracks = joined["tracks"]
        return client

    async def request(self, message: dict[str, Any]) -> dict[str, Any]:
        self._next_id += 1
        ref = self._next_id
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[ref] = fut
        await self.ws.send_str(json.dumps({**message, "id": ref}))
        reply = await asyncio.wait_for(fut, TIMEOUT)
        if reply.get("type") == "error":
            raise RoomError(reply)
        return reply

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            self.events.append(data)
            ref = data.get("id")
            if ref in self._replies:
                fut = self._replies.pop(ref)
                if not fut.done():
                    fut.set_result(data)
            if data.get("type") == "tracks":
                self.tracks = data["tracks"]
                self._tracks_changed.set()

    def remote_tracks(self) -> list[dict[str, str]]:
        return [t for t in self.tracks if t["participant"] != self.participant]

    async def wait_for_tracks(self, count: int, timeout: float = TIMEOUT) -> None:  # noqa: ASYNC109
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.remote_tracks()) != count:
            self._tracks_changed.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"room has {len(self.remote_tracks())} remote tracks, not {count}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._tracks_changed.wait(), remaining)

    async def negotiate(self) -> dict[str, Any]:
        offer = await self.pc.createOffer()
        await self.pc.setLocalDescription(offer)
        assert self.pc.localDescription is not None
        reply = await self.request(
            {"type": "offer", "sdp": self.pc.localDescription.sdp,
             "subscriptions": self.subscriptions}
        )
        await self.pc.setRemoteDescription(RTCSessionDescription(reply["sdp"], "answer"))
        self.published = reply["published"]
        return reply

    async def publish(self, tracks: list[MediaStreamTrack]) -> dict[str, Any]:
        for track in tracks:
            self.pc.addTransceiver(track, direction="sendonly")
        return await self.negotiate()

    async def subscribe_all(self) -> dict[str, Any]:
        """A recvonly transceiver for every remote track not yet subscribed."""
        have = set(self.subscriptions.values())
        for info in self.remote_tracks():
            if info["track_id"] in have:
                continue
            t: RTCRtpTransceiver = self.pc.addTransceiver(info["kind"], direction="recvonly")
            # aiortc assigns the mid in createOffer; remember the transceiver meanwhile.
            t._wanted_track = info["track_id"]  # type: ignore[attr-defined]
        offer = await self.pc.createOffer()
        await self.pc.setLocalDescription(offer)
        for t in self.pc.getTransceivers():
            wanted = getattr(t, "_wanted_track", None)
            if wanted and t.mid is not None:
                self.subscriptions[t.mid] = wanted
        assert self.pc.localDescription is not None
        reply = await self.request(
            {"type": "offer", "sdp": self.pc.localDescription.sdp,
             "subscriptions": self.subscriptions}
        )
        await self.pc.setRemoteDescription(RTCSessionDescription(reply["sdp"], "answer"))
        return reply

    def _on_track(self, track: MediaStreamTrack) -> None:
        mid = next((t.mid for t in self.pc.getTransceivers() if t.receiver.track is track), "?")
        self._tasks.append(asyncio.ensure_future(self._consume(str(mid), track)))

    async def _consume(self, mid: str, track: MediaStreamTrack) -> None:
        counts = self.video_frames if track.kind == "video" else self.audio_frames
        counts.setdefault(mid, 0)
        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            while True:
                frame = await track.recv()
                counts[mid] += 1
                if track.kind == "video":
                    self.frame_sizes[mid] = (frame.width, frame.height)  # type: ignore[union-attr]
                self._progress.set()

    async def wait_for_frames(
        self, mid: str, count: int, timeout: float = 20.0  # noqa: ASYNC109
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.video_frames.get(mid, 0) + self.audio_frames.get(mid, 0) < count:
            self._progress.clear()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(
                    f"mid {mid}: {self.video_frames.get(mid, 0)} video / "
                    f"{self.audio_frames.get(mid, 0)} audio frames, wanted {count}"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), remaining)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await self.ws.close()
        self._reader.cancel()
        await self.pc.close()
        await self.http.close()
