"""Helpers for abuse tests: a healthy publisher + player pair that must stay unaffected, /metrics
and /healthz readers, and a plain UDP socket for hand-made datagrams.

Every wait here is bounded by a count and a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bench.clients.media import SyntheticVideoTrack, ToneAudioTrack
from bench.clients.whip import WhepSession, WhipSession, whep_play, whip_publish

HTTP_TIMEOUT = aiohttp.ClientTimeout(total=5)
POLL_INTERVAL = 0.05


async def http_get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http, http.get(url) as resp:
        return resp.status, await resp.text()


async def healthz_status(http_url: str) -> int:
    status, _ = await http_get(f"{http_url}/healthz")
    return status


async def drop_counts(http_url: str) -> dict[str, float]:
    """``sfu_drops_total`` by reason, parsed from GET /metrics (Prometheus text format)."""
    status, text = await http_get(f"{http_url}/metrics")
    assert status == 200, f"/metrics answered {status}"
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "sfu_drops":
            continue
        for sample in family.samples:
            if sample.name == "sfu_drops_total":
                out[sample.labels["reason"]] = sample.value
    assert out, "no sfu_drops_total series in /metrics"
    return out


async def wait_drops(
    http_url: str,
    reason: str,
    at_least: float,
    timeout: float = 5.0,  # noqa: ASYNC109
) -> float:
    """Poll /metrics until drops{reason} >= at_least; return the value (assert on timeout)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    value = 0.0
    for _ in range(int(timeout / POLL_INTERVAL) + 1):
        value = (await drop_counts(http_url)).get(reason, 0.0)
        if value >= at_least or loop.time() >= deadline:
            break
        await asyncio.sleep(POLL_INTERVAL)
    assert value >= at_least, f"sfu_drops_total{{reason={reason!r}}} is {value}, want >= {at_least}"
    return value


async def expect_drop(
    http_url: str,
    reason: str,
    send: Callable[[], Awaitable[None] | None],
    label: str,
    count: int = 1,
) -> None:
    """Call ``send`` and wait until drops{reason} grew by ``count`` (labelled on failure)."""
    base = (await drop_counts(http_url)).get(reason, 0.0)
    result = send()
    if result is not None:
        await result
    try:
        await wait_drops(http_url, reason, base + count, timeout=3.0)
    except AssertionError as exc:
        raise AssertionError(f"{label}: {exc}") from None


def loop_errors(records: Iterable[logging.LogRecord]) -> list[str]:
    """Errors the event loop logged (an exception escaping a protocol callback, say)."""
    return [r.getMessage() for r in records if r.name == "asyncio" and r.levelno >= logging.ERROR]


class _Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue(maxsize=1024)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait((data, addr))


class UdpProbe:
    """A plain UDP socket on 127.0.0.1 (a fresh address the node has never seen)."""

    def __init__(self, transport: asyncio.DatagramTransport, inbox: _Inbox) -> None:
        self.transport = transport
        self.inbox = inbox

    @classmethod
    async def open(cls) -> UdpProbe:
        loop = asyncio.get_running_loop()
        transport, inbox = await loop.create_datagram_endpoint(_Inbox, local_addr=("127.0.0.1", 0))
        return cls(transport, inbox)

    def send(self, data: bytes, port: int) -> None:
        self.transport.sendto(data, ("127.0.0.1", port))

    async def receive(self, timeout: float) -> bytes | None:  # noqa: ASYNC109
        """The next datagram, or None if none arrives within ``timeout`` seconds."""
        try:
            data, _ = await asyncio.wait_for(self.inbox.queue.get(), timeout)
        except TimeoutError:
            return None
        return data

    def close(self) -> None:
        self.transport.close()


@dataclass(eq=False)
class HealthyPair:
    """A publisher and a WHEP player that is already decoding; abuse must not disturb them."""

    node: Any
    room: str
    publisher: WhipSession
    player: WhepSession

    @classmethod
    async def start(cls, node: Any, room: str, publish_token: str, play_token: str) -> HealthyPair:
        publisher = await whip_publish(
            node.http_url,
            room,
            publish_token,
            [SyntheticVideoTrack(width=320, height=240, fps=30), ToneAudioTrack(freq=440)],
        )
        try:
            player = await whep_play(node.http_url, room, play_token)
        except BaseException:
            await publisher.close()
            raise
        pair = cls(node, room, publisher, player)
        try:
            await player.wait_for_frames(video=10, audio=10, timeout=25)
        except BaseException:
            await pair.close()
            raise
        return pair

    def mark(self) -> tuple[int, int]:
        """(video, audio) frames the player has decoded so far."""
        return self.player.video_frames, self.player.audio_frames

    async def assert_unaffected(
        self,
        before: tuple[int, int],
        *,
        video: int = 8,
        audio: int = 8,
        timeout: float = 12.0,  # noqa: ASYNC109
    ) -> None:
        """The pair kept going through the abuse (which started at ``before``) and after it.

        Decoding must advance by ``video``/``audio`` frames past the later of ``before`` and
        now (the end of the abuse), both sessions must still be registered and connected,
        and /healthz must answer 200.
        """
        after = self.mark()
        player, node = self.player, self.node
        await player.wait_for_frames(
            video=max(before[0], after[0]) + video,
            audio=max(before[1], after[1]) + audio,
            timeout=timeout,
        )
        assert player.errors == [], player.errors
        assert player.pc.connectionState == "connected", player.pc.connectionState
        assert self.publisher.pc.connectionState == "connected"
        for session in (self.publisher, self.player):
            peer = node.peers.get(session.session_id)
            assert peer is not None, f"{session.location} is no longer a session on the node"
            assert peer.state == "connected", peer.state
        assert set(player.video_frame_sizes[before[0] :]) <= {(320, 240)}
        assert await healthz_status(node.http_url) == 200

    async def close(self) -> None:
        await self.player.close()
        await self.publisher.close()
