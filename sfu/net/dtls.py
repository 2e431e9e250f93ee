"""Glue between the node's single UDP socket and aiortc's DTLS and SCTP transports.

aiortc's RTCDtlsTransport reads datagrams from an ICE transport through `_recv()` and writes
through `_send()`. `DatagramPipe` stands in for that ICE transport: the UDP demultiplexer feeds
it DTLS records only. SRTP never goes through it, so the media path has no await: after the
handshake the session takes the two SRTP contexts that aiortc derived from the DTLS keys.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiortc.rtcdtlstransport import RTCCertificate, RTCDtlsTransport


class DatagramPipe:
    """The minimal ICE-transport surface RTCDtlsTransport uses."""

    def __init__(self, send: Callable[[bytes], None], role: str) -> None:
        self._send_cb = send
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=256)
        self.role = role  # only read by aiortc for its stats
        self.state = "connected"

    def feed(self, data: bytes) -> bool:
        """Queue one DTLS record; False (a counted drop) when the peer floods us."""
        try:
            self._queue.put_nowait(data)
        except asyncio.QueueFull:
            return False
        return True

    def close(self) -> None:
        self.state = "closed"
        try:
            self._queue.put_nowait(None)
        except asyncio.QueueFull:
            pass

    async def _recv(self) -> bytes:
        data = await self._queue.get()
        if data is None:
            raise ConnectionError("pipe closed")
        return data

    async def _send(self, data: bytes) -> None:
        self._send_cb(data)


def make_dtls(
    certificate: RTCCertificate, send: Callable[[bytes], None], server: bool
) -> tuple[RTCDtlsTransport, DatagramPipe]:
    """A DTLS transport in the given role, fed through a DatagramPipe."""
    pipe = DatagramPipe(send, "controlling" if server else "controlled")
    dtls = RTCDtlsTransport(pipe, [certificate])  # type: ignore[arg-type]
    dtls._set_role("server" if server else "client")
    return dtls, pipe
