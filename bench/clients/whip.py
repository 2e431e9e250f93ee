"""aiortc WHIP (publish) and WHEP (play) clients.

Non-trickle: the offer is sent only once ICE gathering is complete, so it carries every
local candidate; the answer (from an ICE-lite server) carries the server's. Call
:func:`bench.clients.loopback.restrict_ice_to_loopback` first when the server is on
127.0.0.1, since aioice never gathers loopback candidates by itself.

    pub = await whip_publish(url, "r1", token, [SyntheticVideoTrack(), ToneAudioTrack()])
    player = await whep_play(url, "r1", token)
    await player.wait_for_frames(video=30, audio=10, timeout=20)
    await player.close(); await pub.close()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import urllib.parse
from dataclasses import dataclass, field

import aiohttp
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

log = logging.getLogger(__name__)

HTTP_TIMEOUT = 15.0
GATHER_TIMEOUT = 10.0
MAX_REDIRECTS = 3  # cluster redirects followed (a node sends a client on at most twice)


class WhipError(Exception):
    """The server refused an offer (non-201) or a request failed at the HTTP level."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"HTTP {status}: {reason}")
        self.status = status
        self.reason = reason


def new_peer_connection() -> RTCPeerConnection:
    """A peer connection that asks no STUN/TURN server (nothing public is reachable).

    Keeps aiortc's default "balanced" bundle policy on purpose: with max-bundle, aiortc
    1.16 takes the remote candidates of a shared transport from the *last* bundled m-line
    only, so an answer that (correctly, RFC 8843) lists candidates on the first m-line only
    would leave it with no candidate pair. With "balanced" the offer carries a transport per
    m-line and the answer's BUNDLE group collapses them onto the first one.
    """
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


async def _wait_gathering_complete(pc: RTCPeerConnection, limit: float) -> None:
    # aiortc's setLocalDescription() already gathers before returning; this is a bounded
    # safety net in case that ever changes.
    if pc.iceGatheringState == "complete":
        return
    done = asyncio.Event()

    @pc.on("icegatheringstatechange")
    def _on_change() -> None:
        if pc.iceGatheringState == "complete":
            done.set()

    if pc.iceGatheringState != "complete":
        await asyncio.wait_for(done.wait(), limit)


async def _exchange(
    pc: RTCPeerConnection, http_url: str, endpoint: str, room: str, token: str,
    query: dict[str, str] | None = None,
) -> str:
    """Create the offer, POST it, apply the answer. Return the absolute resource URL."""
    offer = await pc.createOffer()
    await pc.setLocalDescription(offer)
    await _wait_gathering_complete(pc, GATHER_TIMEOUT)
    local = pc.localDescription
    assert local is not None
    url = f"{http_url.rstrip('/')}/{endpoint}/{urllib.parse.quote(room, safe='')}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    headers = {"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"}
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        # A cluster node answers 307 with the node that serves the room. Follow it by hand:
        # HTTP clients drop Authorization on a redirect to another origin.
        for _ in range(MAX_REDIRECTS + 1):
            async with http.post(
                url, data=local.sdp.encode(), headers=headers, allow_redirects=False
            ) as resp:
                body = await resp.text()
                location = resp.headers.get("Location")
                if resp.status in (307, 308) and location:
                    url = urllib.parse.urljoin(url, location)
                    continue
                if resp.status != 201:
                    raise WhipError(resp.status, body.strip() or resp.reason or "")
                if not location:
                    raise WhipError(resp.status, "201 answer without a Location header")
                if not body.strip():
                    raise WhipError(resp.status, "201 answer with an empty SDP body")
                break
        else:
            raise WhipError(307, f"more than {MAX_REDIRECTS} redirects")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
    # Location is relative ("/whip/{room}/{id}"): resolve it against the request URL.
    return urllib.parse.urljoin(url, location)


async def _delete(location: str, token: str) -> int:
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.delete(location, headers={"Authorization": f"Bearer {token}"}) as resp,
    ):
        await resp.read()
        return resp.status


@dataclass(eq=False)
class _Session:
    pc: RTCPeerConnection
    location: str
    token: str
    delete_status: int | None = field(default=None, init=False)
    _closed: bool = field(default=False, init=False)

    @property
    def session_id(self) -> str:
        return urllib.parse.urlsplit(self.location).path.rstrip("/").rsplit("/", 1)[-1]

    async def wait_connected(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109 (API)
        """Wait (bounded) until the peer connection is "connected"; raise on failure."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        changed = asyncio.Event()
        self.pc.on("connectionstatechange", changed.set)
        try:
            while self.pc.connectionState != "connected":
                if self.pc.connectionState in ("failed", "closed"):
                    raise ConnectionError(f"peer connection {self.pc.connectionState}")
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TimeoutError(
                        f"not connected after {timeout}s (state {self.pc.connectionState})"
                    )
                changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), remaining)
        finally:
            self.pc.remove_listener("connectionstatechange", changed.set)

    async def _stop_background(self) -> None:
        return None

    async def close(self) -> int | None:
        """DELETE the resource (once) and close the peer connection.

        Returns the DELETE status (also kept in ``delete_status``), or None when the
        request could not be made (server gone). Never raises for a failed DELETE: check
        the returned status when it matters.
        """
        if self._closed:
            return self.delete_status
        self._closed = True
        try:
            self.delete_status = await _delete(self.location, self.token)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("DELETE %s failed: %r", self.location, exc)
        await self._stop_background()
        await self.pc.close()
        return self.delete_status


@dataclass(eq=False)
class WhipSession(_Session):
    """A publishing peer. ``tracks`` are the local tracks it sends."""

    tracks: list[MediaStreamTrack] = field(default_factory=list)


@dataclass(eq=False)
class WhepSession(_Session):
    """A playing peer that decodes everything it receives and counts it.

    ``video_frames``/``audio_frames`` count decoded frames across all tracks of that kind;
    ``video_frame_times`` (time.monotonic) and ``video_frame_sizes`` ((width, height))
    hold one entry per decoded video frame; ``first_frame_at`` is the monotonic time of
    the first decoded video frame (None until then).
    """

    channel: RTCDataChannel | None = None
    created_at: float = field(default_factory=time.monotonic)
    tracks: list[MediaStreamTrack] = field(default_factory=list)
    video_frames: int = 0
    audio_frames: int = 0
    video_frame_times: list[float] = field(default_factory=list)
    video_frame_sizes: list[tuple[int, int]] = field(default_factory=list)
    first_frame_at: float | None = None
    first_audio_at: float | None = None
    channel_messages: list[str | bytes] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _progress: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def last_video_size(self) -> tuple[int, int] | None:
        return self.video_frame_sizes[-1] if self.video_frame_sizes else None

    def _on_track(self, track: MediaStreamTrack) -> None:
        self.tracks.append(track)
        task = asyncio.ensure_future(self._consume(track))
        self._tasks.append(task)

    async def _consume(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                now = time.monotonic()
                if track.kind == "video":
                    self.video_frames += 1
                    self.video_frame_times.append(now)
                    self.video_frame_sizes.append(
                        (getattr(frame, "width", 0), getattr(frame, "height", 0))
                    )
                    if self.first_frame_at is None:
                        self.first_frame_at = now
                elif track.kind == "audio":
                    self.audio_frames += 1
                    if self.first_audio_at is None:
                        self.first_audio_at = now
                self._progress.set()
        except MediaStreamError:
            pass
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # keep the failure visible to the test
            log.exception("consumer for %s track failed", track.kind)
            self.errors.append(exc)
        finally:
            self._progress.set()

    async def wait_for_frames(
        self,
        video: int = 1,
        audio: int = 0,
        timeout: float = 20.0,  # noqa: ASYNC109 (part of the client API)
    ) -> None:
        """Wait until at least ``video`` video and ``audio`` audio frames were decoded.

        Bounded by ``timeout`` seconds; raises TimeoutError with the counts so far and the
        connection state, or ConnectionError if the peer connection failed/closed first.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.video_frames < video or self.audio_frames < audio:
            if self.pc.connectionState in ("failed", "closed"):
                raise ConnectionError(
                    f"peer connection {self.pc.connectionState} after "
                    f"{self.video_frames} video / {self.audio_frames} audio frames"
                )
            remaining = deadline - loop.time()
            if remaining <= 0:
                kinds = [t.kind for t in self.tracks]
                raise TimeoutError(
                    f"after {timeout}s: {self.video_frames}/{video} video and "
                    f"{self.audio_frames}/{audio} audio frames decoded; "
                    f"connectionState={self.pc.connectionState} "
                    f"iceConnectionState={self.pc.iceConnectionState} tracks={kinds} "
                    f"errors={self.errors!r}"
                )
            self._progress.clear()
            # Wake at least every 0.5 s to notice a failed connection.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), min(remaining, 0.5))

    async def wait_channel_open(self, timeout: float = 10.0) -> RTCDataChannel:  # noqa: ASYNC109
        """Wait (bounded) until the "events" datachannel is open."""
        if self.channel is None:
            raise RuntimeError("whep_play(..., datachannel=True) was not requested")
        channel = self.channel
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        opened = asyncio.Event()
        channel.on("open", opened.set)
        try:
            while channel.readyState != "open":
                if channel.readyState in ("closing", "closed"):
                    raise ConnectionError(f"datachannel {channel.readyState}")
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TimeoutError(
                        f"datachannel still {channel.readyState!r} after {timeout}s "
                        f"(connectionState={self.pc.connectionState})"
                    )
                opened.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(opened.wait(), min(remaining, 0.5))
        finally:
            channel.remove_listener("open", opened.set)
        return channel

    async def _stop_background(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def _prefer_codec(pc: RTCPeerConnection, kind: str, mime_type: str) -> None:
    caps = RTCRtpSender.getCapabilities(kind)
    preferred = [c for c in caps.codecs if c.mimeType.lower() == mime_type.lower()]
    if not preferred:
        raise ValueError(f"aiortc cannot send {mime_type}")
    # Keep retransmission (rtx) entries so NACK/RTX still negotiates.
    rtx = [c for c in caps.codecs if c.mimeType.lower() == f"{kind}/rtx"]
    for transceiver in pc.getTransceivers():
        if transceiver.kind == kind:
            transceiver.setCodecPreferences(preferred + rtx)


async def whip_publish(
    http_url: str,
    room: str,
    token: str,
    tracks: list[MediaStreamTrack],
    *,
    video_codec: str | None = None,
    query: dict[str, str] | None = None,
) -> WhipSession:
    """Publish ``tracks`` (one sendonly m-line each) to ``POST {http_url}/whip/{room}``.

    ``video_codec`` (e.g. "video/VP8", "video/H264") restricts the offered video codecs.
    Raises WhipError on a non-201 answer; the peer connection is closed in that case.
    """
    pc = new_peer_connection()
    try:
        for track in tracks:
            pc.addTransceiver(track, direction="sendonly")
        if video_codec is not None:
            _prefer_codec(pc, "video", video_codec)
        location = await _exchange(pc, http_url, "whip", room, token, query)
    except BaseException:
        await pc.close()
        raise
    return WhipSession(pc=pc, location=location, token=token, tracks=list(tracks))


async def whep_play(
    http_url: str,
    room: str,
    token: str,
    *,
    video: bool = True,
    audio: bool = True,
    datachannel: bool = False,
    query: dict[str, str] | None = None,
) -> WhepSession:
    """Play a room from ``POST {http_url}/whep/{room}`` with recvonly audio/video m-lines.

    Every received track is decoded by a background task that counts frames. With
    ``datachannel=True`` a datachannel "events" is created before the offer (the
    session's ``channel``); messages on it are appended to ``channel_messages``.
    Raises WhipError on a non-201 answer; the peer connection is closed in that case.
    """
    if not (video or audio or datachannel):
        raise ValueError("nothing to play: enable video, audio or datachannel")
    pc = new_peer_connection()
    session = WhepSession(pc=pc, location="", token=token)
    pc.on("track", session._on_track)
    try:
        if audio:
            pc.addTransceiver("audio", direction="recvonly")
        if video:
            pc.addTransceiver("video", direction="recvonly")
        if datachannel:
            channel = pc.createDataChannel("events")
            channel.on("message", session.channel_messages.append)
            session.channel = channel
        session.location = await _exchange(pc, http_url, "whep", room, token, query)
    except BaseException:
        await session._stop_background()
        await pc.close()
        raise
    return session
