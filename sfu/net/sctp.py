"""A cheaper SCTP association for the node's datachannels: aiortc's, with bundling.

aiortc's ``RTCSctpTransport`` pays, for every ``RTCDataChannel.send``: one asyncio task
(``ensure_future(_data_channel_flush())``), one SCTP packet holding a single DATA chunk
("no bundling for now"), one DTLS record, one ``sendto``, and one SACK back from the peer.
It also acknowledges every received packet with a SACK of its own, at once.

``BundlingSctpTransport`` is a thin override of four of its internals; the protocol state
(TSNs, congestion window, flight size, retransmission marks, T3, PR-SCTP abandonment,
stream resets) stays aiortc's and is driven exactly as aiortc drives it:

1. **Coalesced scheduling** (``_data_channel_send``): ``send`` queues the message and
   schedules at most one flush task per association; every message sent in the same loop
   iteration goes out in that one flush.
2. **Bundling** (``_data_channel_flush`` + ``_transmit``): the flush hands the queued
   messages to SCTP with transmission deferred, then runs one ``_transmit`` that picks the
   same chunks aiortc's would (retransmissions first, then new DATA while the flight size
   is under the congestion window and the burst limit), but packs them, behind any control
   chunk (SACK, FORWARD TSN), into packets of up to ``SCTP_MAX_PACKET_LENGTH`` bytes
   (RFC 9260 section 6.10: control chunks first; DATA chunks of any stream may share a
   packet).
3. **Delayed SACK** (``_send_sack``, RFC 9260 section 6.2): a SACK goes out for every second
   packet carrying DATA, or after ``sack_delay`` (200 ms), and at once when the packet
   revealed a gap or a duplicate, or carried a FORWARD TSN. A SACK that is pending when the
   node sends anything rides in that packet.

INIT, INIT ACK, COOKIE ECHO/ACK, HEARTBEAT ACK, ABORT, SHUTDOWN and RE-CONFIG still go
through aiortc's ``_send_chunk`` alone in their packets (INIT, INIT ACK and SHUTDOWN
COMPLETE must never be bundled).

The overridden internals are pinned: importing this module checks the aiortc version and
the methods and state it relies on, and raises ``ImportError`` if they moved. Set
``SFU_SCTP_BUNDLING=0`` to use aiortc's stock class instead (the check then only logs).
Known limit, inherited: aiortc ignores the peer's advertised receiver window (rwnd) when
sending, and so does this class; it only changes how the chunks aiortc sends are packed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from struct import pack
from typing import Final

import aiortc
from aiortc import rtcsctptransport as _sctp
from aiortc.rtcdatachannel import RTCDataChannel
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtcsctptransport import RTCSctpTransport

log = logging.getLogger("sfu.sctp")

ENV_FLAG: Final = "SFU_SCTP_BUNDLING"
TESTED_AIORTC: Final = ("1.16.",)  # version prefixes this override was checked against
SACK_DELAY: Final = 0.2  # RFC 9260 section 6.2: SHOULD be 200 ms, MUST be under 500 ms
SACK_EVERY: Final = 2  # acknowledge at least every second packet carrying DATA

# aiortc internals this module calls or overrides (methods) ...
_METHODS: Final = (
    "_transmit", "_send_chunk", "_send_sack", "_send", "_data_channel_send",
    "_data_channel_flush", "_transmit_reconfig", "_handle_data", "_receive_sack_chunk",
    "_receive_forward_tsn_chunk", "_set_state", "_t3_start", "_t3_restart",
    "_flight_size_increase", "_maybe_abandon", "_update_advanced_peer_ack_point",
)
# ... the state they read or write (attribute names assigned in RTCSctpTransport.__init__) ...
_STATE: Final = (
    "_association_state", "_cwnd", "_flight_size", "_fast_recovery_exit",
    "_fast_recovery_transmit", "_forward_tsn_chunk", "_outbound_queue", "_sent_queue",
    "_t3_handle", "_sack_needed", "_sack_duplicates", "_sack_misordered",
    "_last_received_tsn", "_advertised_rwnd", "_data_channel_queue", "_data_channels",
    "_data_channel_id", "_remote_max_message_size", "_local_port", "_remote_port",
    "_remote_verification_tag", "_loop",
)
# ... the calls between aiortc's methods that this module's overrides hook into ...
_CALLS: Final = {
    "_handle_data": ("_receive_chunk", "_send_sack"),
    "_receive_sack_chunk": ("_data_channel_flush", "_transmit"),
    "_send": ("_transmit",),
    "_t3_expired": ("_transmit",),
}
# ... and module-level names.
_MODULE: Final = (
    "SackChunk", "DataChunk", "crc32c", "USERDATA_MAX_LENGTH", "SCTP_MAX_PACKET_LENGTH",
    "SCTP_COMMON_HEADER_LENGTH", "SCTP_TSN_MODULO", "SCTP_DATA_FIRST_FRAG", "WEBRTC_DCEP",
    "WEBRTC_STRING", "WEBRTC_STRING_EMPTY", "WEBRTC_BINARY", "WEBRTC_BINARY_EMPTY",
    "tsn_plus_one",
)


def check_aiortc() -> list[str]:
    """What this override needs from aiortc and does not find (empty when all is there)."""
    problems: list[str] = []
    version = getattr(aiortc, "__version__", "?")
    if not version.startswith(TESTED_AIORTC):
        problems.append(f"aiortc {version} is not a tested version {TESTED_AIORTC}")
    for name in _METHODS:
        if not callable(getattr(RTCSctpTransport, name, None)):
            problems.append(f"RTCSctpTransport.{name} is missing")
    for method, callees in _CALLS.items():
        code = getattr(getattr(RTCSctpTransport, method, None), "__code__", None)
        names = set(code.co_names) if code is not None else set()
        problems += [f"RTCSctpTransport.{method} no longer calls {c}" for c in callees
                     if c not in names]
    assigned = set(RTCSctpTransport.__init__.__code__.co_names)
    problems += [f"RTCSctpTransport.{n} is no longer set up" for n in _STATE if n not in assigned]
    problems += [f"aiortc.rtcsctptransport.{n} is missing" for n in _MODULE if not hasattr(_sctp, n)]
    return problems


def bundling_enabled() -> bool:
    """The ``SFU_SCTP_BUNDLING`` flag: on unless set to 0/false/off/no."""
    return os.environ.get(ENV_FLAG, "1").strip().lower() not in ("0", "false", "off", "no")


_PROBLEMS: Final = check_aiortc()
if _PROBLEMS:
    _message = (
        "sfu.net.sctp overrides aiortc's SCTP internals and does not match this aiortc: "
        + "; ".join(_PROBLEMS)
        + f". Re-check the override (and its tests) against this aiortc, or set {ENV_FLAG}=0 "
        "to use aiortc's stock RTCSctpTransport."
    )
    if bundling_enabled():
        raise ImportError(_message)
    log.warning(_message)

_HEADER_LENGTH: Final = _sctp.SCTP_COMMON_HEADER_LENGTH
_MAX_PACKET: Final = _sctp.SCTP_MAX_PACKET_LENGTH  # fits the IPv6 minimum MTU under DTLS/UDP
_ZERO_CRC: Final = b"\x00\x00\x00\x00"


class BundlingSctpTransport(RTCSctpTransport):
    """``RTCSctpTransport`` with coalesced flushes, bundled packets and delayed SACKs."""

    def __init__(
        self,
        transport: RTCDtlsTransport,
        port: int = 5000,
        *,
        max_packet: int = _MAX_PACKET,
        sack_delay: float = SACK_DELAY,
    ) -> None:
        super().__init__(transport, port)
        if not _HEADER_LENGTH + 16 + _sctp.USERDATA_MAX_LENGTH <= max_packet <= _MAX_PACKET:
            raise ValueError(f"max_packet must hold one full DATA chunk and be <= {_MAX_PACKET}")
        self._max_packet = max_packet
        self._sack_delay = sack_delay  # 0 disables delayed SACKs (every packet, as aiortc)
        self._flush_task: asyncio.Task[None] | None = None  # the one pending flush
        self._defer_transmit = False  # inside our flush: _send() must not transmit
        self._sack_handle: asyncio.TimerHandle | None = None
        self._sack_packets = 0  # packets needing acknowledgement since the last SACK
        self._sack_now = False  # a FORWARD TSN arrived: acknowledge without delay
        # Counters for tests and benchmarks.
        self.packets_sent = 0
        self.data_chunks_sent = 0
        self.sacks_sent = 0

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop  # aiortc's, taken in __init__
        assert loop is not None
        return loop

    # --- 1. one flush per loop iteration -----------------------------------------------------

    def _data_channel_send(self, channel: RTCDataChannel, data: bytes | str) -> None:
        # aiortc's body, except the last line: it ran ensure_future(_data_channel_flush())
        # for every message; here one flush task serves every send of the loop iteration.
        if data == "":
            pp_id, user_data = _sctp.WEBRTC_STRING_EMPTY, b"\x00"
        elif isinstance(data, str):
            pp_id, user_data = _sctp.WEBRTC_STRING, data.encode("utf8")
        elif data == b"":
            pp_id, user_data = _sctp.WEBRTC_BINARY_EMPTY, b"\x00"
        else:
            pp_id, user_data = _sctp.WEBRTC_BINARY, data
        if self._remote_max_message_size and len(user_data) > self._remote_max_message_size:
            raise ValueError(
                f"Cannot send message of {len(user_data)} bytes, the remote party "
                f"only supports messages up to {self._remote_max_message_size} bytes"
            )
        channel._addBufferedAmount(len(user_data))
        self._data_channel_queue.append((channel, pp_id, user_data))
        if self._flush_task is None:
            self._flush_task = self._event_loop().create_task(self._coalesced_flush())

    async def _coalesced_flush(self) -> None:
        # Cleared first: a send during the awaits below schedules the next flush.
        self._flush_task = None
        try:
            await self._data_channel_flush()
        except ConnectionError:  # DTLS went away under us; aiortc's own tasks ignore it too
            pass

    async def _data_channel_flush(self) -> None:
        """aiortc's flush, with one transmission for all the messages it hands to SCTP.

        aiortc moves messages from the channel queue (counted in ``bufferedAmount``) into the
        SCTP outbound queue only while that queue is empty, and transmits after each. Here
        the messages move, with transmission deferred, while the outbound queue holds less
        than what the congestion window and burst limit let out now (at least one message,
        as aiortc), then one ``_transmit`` bundles them.
        """
        if self._association_state != self.State.ESTABLISHED:
            return
        queue = self._data_channel_queue
        if queue:
            outbound = self._outbound_queue
            pending = sum(len(c.user_data) for c in outbound) if outbound else 0
            burst = (2 if self._fast_recovery_exit is not None else 4) * _sctp.USERDATA_MAX_LENGTH
            budget = min(self._cwnd - self._flight_size, burst)
            self._defer_transmit = True
            try:
                while queue and (not outbound or pending < budget):
                    channel, protocol, user_data = queue.popleft()
                    stream_id = channel.id
                    if stream_id is None:
                        stream_id = self._data_channel_id
                        assert stream_id is not None  # set by start()
                        while stream_id in self._data_channels:
                            stream_id += 2
                        self._data_channels[stream_id] = channel
                        channel._setId(stream_id)
                    if protocol == _sctp.WEBRTC_DCEP:
                        await self._send(stream_id, protocol, user_data)
                    else:
                        life = channel.maxPacketLifeTime
                        await self._send(
                            stream_id, protocol, user_data,
                            expiry=time.time() + life / 1000 if life else None,
                            max_retransmits=channel.maxRetransmits,
                            ordered=channel.ordered,
                        )
                        channel._addBufferedAmount(-len(user_data))
                    pending += len(user_data)
            finally:
                self._defer_transmit = False
            await self._transmit()
        # A stream reset may have been waiting for these messages.
        await self._transmit_reconfig()

    # --- 2. bundled transmission -------------------------------------------------------------

    async def _transmit(self) -> None:
        if self._defer_transmit:  # our flush transmits once, after queueing everything
            return
        await self._transmit_bundled(sack=False)

    async def _transmit_bundled(self, *, sack: bool) -> None:
        """aiortc's ``_transmit`` choice of chunks, packed into as few packets as fit.

        Everything that changes protocol state happens before the first await, so two
        transmissions never interleave. ``sack`` sends a SACK even with nothing else to send.
        """
        control: list[bytes] = []
        data: list[bytes] = []
        forward = self._forward_tsn_chunk
        if forward is not None:
            control.append(bytes(forward))
            self._forward_tsn_chunk = None
            if not self._t3_handle:
                self._t3_start()

        # Same choice as aiortc: burst limit, retransmissions first (stopping everything
        # when the window is full), then new chunks while the flight size is under cwnd.
        burst = (2 if self._fast_recovery_exit is not None else 4) * _sctp.USERDATA_MAX_LENGTH
        cwnd = min(self._flight_size + burst, self._cwnd)
        window_full = False
        retransmit_earliest = True
        for chunk in self._sent_queue:
            if chunk._retransmit:
                if self._fast_recovery_transmit:
                    self._fast_recovery_transmit = False
                elif self._flight_size >= cwnd:
                    window_full = True
                    break
                self._flight_size_increase(chunk)
                chunk._misses = 0
                chunk._retransmit = False
                chunk._sent_count += 1
                data.append(bytes(chunk))
                if retransmit_earliest:
                    self._t3_restart()  # the earliest outstanding TSN is being resent
            retransmit_earliest = False

        if not window_full and self._outbound_queue and self._flight_size < cwnd:
            now = time.time()
            outbound = self._outbound_queue
            sent = self._sent_queue
            while outbound and self._flight_size < cwnd:
                chunk = outbound.popleft()
                sent.append(chunk)
                self._flight_size_increase(chunk)
                chunk._sent_count += 1
                chunk._sent_time = now
                data.append(bytes(chunk))
                if not self._t3_handle:
                    self._t3_start()

        # A SACK that is due, or pending under the delay, rides ahead of the rest.
        if self._sack_needed and (sack or control or data):
            control.insert(0, self._take_sack())
        if not (control or data):
            return
        self.data_chunks_sent += len(data)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("> %d control + %d DATA chunks", len(control), len(data))
        for packet in self._pack(control + data):
            self.packets_sent += 1
            await self.transport._send_data(packet)

    def _pack(self, chunks: list[bytes]) -> list[bytes]:
        """SCTP packets (common header, CRC32c) of consecutive chunks, each <= max_packet."""
        packets: list[bytes] = []
        header = pack("!HHL", self._local_port, self._remote_port, self._remote_verification_tag)
        room = self._max_packet - _HEADER_LENGTH
        start, size = 0, 0
        for i, chunk in enumerate(chunks):
            if i > start and size + len(chunk) > room:
                packets.append(self._seal(header, chunks[start:i]))
                start, size = i, 0
            size += len(chunk)
        packets.append(self._seal(header, chunks[start:]))
        return packets

    @staticmethod
    def _seal(header: bytes, chunks: list[bytes]) -> bytes:
        body = b"".join(chunks)
        checksum = _sctp.crc32c(header + _ZERO_CRC + body)
        return header + pack("<L", checksum) + body

    # --- 3. delayed SACK ---------------------------------------------------------------------

    async def _send_sack(self) -> None:
        # aiortc calls this once per received packet that needs acknowledging, at the end of
        # _handle_data. RFC 9260 section 6.2: at least every second such packet, or within
        # 200 ms; at once for a gap or duplicates (section 6.7) and after a FORWARD TSN.
        self._sack_packets += 1
        if (
            self._sack_delay <= 0
            or self._sack_now
            or self._sack_packets >= SACK_EVERY
            or self._sack_duplicates
            or self._sack_misordered
            or self._association_state != self.State.ESTABLISHED
        ):
            await self._transmit_bundled(sack=True)
        elif self._sack_handle is None:
            self._sack_handle = self._event_loop().call_later(self._sack_delay, self._sack_expired)

    async def _receive_forward_tsn_chunk(self, chunk: _sctp.ForwardTsnChunk) -> None:
        self._sack_now = True
        await super()._receive_forward_tsn_chunk(chunk)

    def _sack_expired(self) -> None:
        self._sack_handle = None
        if self._sack_needed and self._association_state == self.State.ESTABLISHED:
            self._event_loop().create_task(self._send_delayed_sack())

    async def _send_delayed_sack(self) -> None:
        if self._sack_needed:
            try:
                await self._transmit_bundled(sack=True)
            except ConnectionError:
                pass

    def _take_sack(self) -> bytes:
        """aiortc's SACK for the current receive state, marked as sent (not yet sent)."""
        gaps: list[list[int]] = []
        gap_next = None
        last = self._last_received_tsn
        assert last is not None  # DATA was received, so the peer's INIT set it
        for tsn in sorted(self._sack_misordered):
            pos = (tsn - last) % _sctp.SCTP_TSN_MODULO
            if tsn == gap_next:
                gaps[-1][1] = pos
            else:
                gaps.append([pos, pos])
            gap_next = _sctp.tsn_plus_one(tsn)
        sack = _sctp.SackChunk()
        sack.cumulative_tsn = last
        sack.advertised_rwnd = max(0, self._advertised_rwnd)
        sack.duplicates = self._sack_duplicates[:]
        sack.gaps = [(a, b) for a, b in gaps]
        self._sack_duplicates.clear()
        self._sack_needed = False
        self._sack_now = False
        self._sack_packets = 0
        if self._sack_handle is not None:
            self._sack_handle.cancel()
            self._sack_handle = None
        self.sacks_sent += 1
        return bytes(sack)

    def _set_state(self, state: RTCSctpTransport.State) -> None:
        if state == self.State.CLOSED and self._sack_handle is not None:
            self._sack_handle.cancel()
            self._sack_handle = None
        super()._set_state(state)


def make_sctp_transport(
    transport: RTCDtlsTransport, port: int = 5000, *, bundling: bool | None = None
) -> RTCSctpTransport:
    """The node's SCTP transport: bundling unless disabled here or by ``SFU_SCTP_BUNDLING=0``."""
    if bundling is None:
        bundling = bundling_enabled()
    if bundling and not _PROBLEMS:
        return BundlingSctpTransport(transport, port)
    return RTCSctpTransport(transport, port)
