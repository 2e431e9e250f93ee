"""Peer: one WebRTC connection to the node (a WHIP publisher, a WHEP player or a room client).

It owns the connection's DTLS handshake and SRTP contexts, its datachannels, and the receivers
it publishes and down-tracks it subscribes. Media arrives in `on_srtp`, synchronously from the
UDP callback: unprotect, route, rewrite, protect and send happen without an await.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pylibsrtp
from aiortc import RTCDataChannel, RTCSctpTransport
from aiortc.rtcdtlstransport import RTCDtlsFingerprint, RTCDtlsParameters
from aiortc.rtcsctptransport import RTCSctpCapabilities

from sfu.core.downtrack import DownTrack
from sfu.core.receiver import Receiver
from sfu.core.room import Room, Slot
from sfu.negotiate import EXT_MID
from sfu.net.dtls import make_dtls
from sfu.sdp import AnswerMedia
from sfu.wire import rtcp
from sfu.wire.rtcp import RtcpError
from sfu.wire.rtp import RtpError, parse_header

if TYPE_CHECKING:
    from sfu.node import Node

log = logging.getLogger("sfu.peer")


class Peer:
    """The node's side of one peer connection."""

    def __init__(
        self,
        node: Node,
        *,
        kind: str,
        room: Room,
        participant: str,
        remote_ufrag: str,
        remote_fingerprints: list[tuple[str, str]],
        dtls_server: bool,
        sctp_port: int | None,
        sctp_max_message: int | None,
        now: float,
    ) -> None:
        self.node = node
        self.kind = kind  # whip / whep / ws
        self.id = secrets.token_urlsafe(12)
        self.room = room
        self.participant = participant
        self.local_ufrag = secrets.token_hex(4)
        self.local_pwd = secrets.token_hex(16)
        self.remote_ufrag = remote_ufrag
        self.remote_fingerprints = remote_fingerprints
        self.dtls_server = dtls_server
        self.sctp_remote_port = sctp_port
        self.sctp_max_message = sctp_max_message or 65536
        self.created_at = now
        self.last_seen = now
        self.addr: tuple[str, int] | None = None
        self.nominated = False
        self.state = "new"  # new -> connected -> closed
        self.close_reason = ""
        self.rtcp_ssrc = secrets.randbits(32) | 1
        # publishing
        self.receivers: list[Receiver] = []
        self.receivers_by_ssrc: dict[int, Receiver] = {}
        self.receivers_by_mid: dict[str, Receiver] = {}
        self.mid_ext_id: int | None = None
        # negotiation: what each mid became, kept across renegotiations
        self.sections: dict[str, AnswerMedia] = {}
        self.sdp_session_id = secrets.randbits(62)
        self.sdp_version = 0
        # subscribing
        self.slots: list[Slot] = []
        self.downtracks_by_ssrc: dict[int, DownTrack] = {}
        # crypto and datachannels
        self._tx: pylibsrtp.Session | None = None
        self._rx: pylibsrtp.Session | None = None
        self._dtls, self._pipe = make_dtls(node.certificate, self._send_raw, dtls_server)
        self._dtls.on("statechange", self._on_dtls_state)
        self._sctp: RTCSctpTransport | None = None
        self.channels: list[RTCDataChannel] = []
        self._task: asyncio.Task[None] | None = None
        self.on_channel: Callable[[Peer, RTCDataChannel], None] | None = None

    # --- set-up ------------------------------------------------------------------------------

    def add_receiver(self, receiver: Receiver, mid: str, ssrcs: list[int]) -> None:
        receiver.upstream = self
        self.receivers.append(receiver)
        self.receivers_by_mid[mid] = receiver
        for ssrc in ssrcs:
            self.receivers_by_ssrc[ssrc] = receiver
        if ssrcs:
            receiver.ssrc = ssrcs[0]

    def remove_receiver(self, receiver: Receiver) -> None:
        if receiver in self.receivers:
            self.receivers.remove(receiver)
        for mid in [k for k, r in self.receivers_by_mid.items() if r is receiver]:
            del self.receivers_by_mid[mid]
        for ssrc in [k for k, r in self.receivers_by_ssrc.items() if r is receiver]:
            del self.receivers_by_ssrc[ssrc]

    def remove_slot(self, slot: Slot) -> None:
        if slot in self.slots:
            self.slots.remove(slot)
        self.downtracks_by_ssrc.pop(slot.downtrack.ssrc, None)

    def add_slot(self, slot: Slot) -> None:
        slot.downtrack.sink = self
        self.slots.append(slot)
        self.downtracks_by_ssrc[slot.downtrack.ssrc] = slot.downtrack

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run_dtls())

    async def _run_dtls(self) -> None:
        params = RTCDtlsParameters(
            fingerprints=[RTCDtlsFingerprint(a, v) for a, v in self.remote_fingerprints]
        )
        try:
            await self._dtls.start(params)
        except Exception as exc:  # aiortc raises assorted errors on hostile input
            log.info("dtls handshake error", extra={"peer": self.id, "error": str(exc)})
        if self._dtls.state != "connected":
            self.node.close_peer(self, "dtls_failed")
            return
        self._rx = self._dtls._rx_srtp
        self._tx = self._dtls._tx_srtp
        self.state = "connected"
        self.node.peer_connected(self)
        if self.sctp_remote_port is not None:
            self._sctp = RTCSctpTransport(self._dtls, port=5000)
            self._sctp.on("datachannel", self._on_datachannel)
            await self._sctp.start(
                RTCSctpCapabilities(maxMessageSize=self.sctp_max_message), self.sctp_remote_port
            )

    def _on_dtls_state(self) -> None:
        # The peer sent close_notify (a clean hang-up without DELETE): no need to wait for
        # the silence timeout.
        if self.state == "connected" and self._dtls.state in ("closed", "failed"):
            self.node.close_peer(self, "dtls_closed")

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        self.channels.append(channel)
        if self.on_channel is not None:
            self.on_channel(self, channel)

    async def close(self) -> None:
        self.state = "closed"
        for ch in self.channels:
            ch.close()
        if self._sctp is not None:
            try:
                await self._sctp.stop()
            except Exception:  # the association may already be gone
                pass
        try:
            await self._dtls.stop()
        except Exception:
            pass
        self._pipe.close()
        if self._task is not None and not self._task.done():
            self._task.cancel()

    # --- datagrams in ------------------------------------------------------------------------

    def on_binding(self, addr: tuple[str, int], use_candidate: bool, now: float) -> None:
        """A valid STUN check from the peer: learn or move its address."""
        self.last_seen = now
        if self.addr is None or (use_candidate and addr != self.addr):
            old = self.addr
            self.addr = addr
            self.node.peer_address(self, old, addr)
        if use_candidate:
            self.nominated = True

    def on_dtls(self, data: bytes, now: float) -> None:
        self.last_seen = now
        if not self._pipe.feed(data):
            self.node.metrics.drop("dtls_flood")

    def on_srtp(self, data: bytes, now: float) -> None:
        """The hot path: one SRTP or SRTCP datagram from this peer."""
        self.last_seen = now
        rx = self._rx
        m = self.node.metrics
        if rx is None:
            m.drop("not_connected")
            return
        if 192 <= data[1] <= 223:  # RTCP (RFC 5761)
            try:
                plain = rx.unprotect_rtcp(data)
            except pylibsrtp.Error:
                m.drop("srtp_unprotect")
                return
            m.packets_in["rtcp"] += 1
            m.bytes_in["rtcp"] += len(data)
            self._on_rtcp(plain, now)
            return
        try:
            plain = rx.unprotect(data)
            hdr = parse_header(plain)
        except pylibsrtp.Error:
            m.drop("srtp_unprotect")
            return
        except RtpError:
            m.drop("rtp_malformed")
            return
        receiver = self.receivers_by_ssrc.get(hdr.ssrc)
        if receiver is None:
            receiver = self._learn_ssrc(plain, hdr)
            if receiver is None:
                m.drop("unknown_ssrc")
                return
        kind = receiver.info.kind
        m.packets_in[kind] += 1
        m.bytes_in[kind] += len(data)
        if hdr.payload_type != receiver.payload_type:
            m.drop("unknown_payload_type")
            return
        key = receiver.on_rtp(plain, hdr, now)
        sock = self.node.sock
        if sock is None:
            return
        # The per-viewer steps are spelled out here rather than layered through helper
        # calls: this loop runs once per packet per viewer and dominates the node's CPU.
        sent = sent_bytes = 0
        for dt in receiver.downtracks:
            out = dt.forward(plain, hdr, key, now)
            if out is None:
                continue
            sink = dt.sink
            tx = sink._tx
            if tx is None or sink.addr is None:
                m.drop("not_connected")
                continue
            enc = tx.protect(out)
            try:
                sock.sendto(enc, sink.addr)
            except BlockingIOError:
                m.drop("send_buffer_full")
                continue
            except OSError:
                m.drop("send_error")
                continue
            sent += 1
            sent_bytes += len(enc)
        if sent:
            m.packets_out[kind] += sent
            m.bytes_out[kind] += sent_bytes

    def _learn_ssrc(self, plain: bytes, hdr: Any) -> Receiver | None:
        """Bind an SSRC the offer did not declare, by its MID extension or payload type."""
        receiver = None
        if self.mid_ext_id is not None and hdr.ext_profile:
            from sfu.wire.rtp import get_extension

            try:
                mid = get_extension(plain, hdr, self.mid_ext_id)
            except RtpError:
                mid = None
            if mid is not None:
                receiver = self.receivers_by_mid.get(mid.decode("ascii", "replace"))
        if receiver is None:
            candidates = [
                r for r in self.receivers if r.ssrc is None and r.payload_type == hdr.payload_type
            ]
            if len(candidates) == 1:
                receiver = candidates[0]
        if receiver is None or (receiver.ssrc is not None and receiver.ssrc != hdr.ssrc):
            return None
        receiver.ssrc = hdr.ssrc
        self.receivers_by_ssrc[hdr.ssrc] = receiver
        return receiver

    def _on_rtcp(self, plain: bytes, now: float) -> None:
        try:
            packets = rtcp.parse_compound(plain)
        except RtcpError:
            self.node.metrics.drop("rtcp_malformed")
            return
        for p in packets:
            if isinstance(p, rtcp.SenderReport):
                receiver = self.receivers_by_ssrc.get(p.ssrc)
                if receiver is not None:
                    receiver.on_sender_report(p.ntp_timestamp, p.rtp_timestamp, now)
                    self.node.forward_sender_report(receiver, p, now)
            elif isinstance(p, (rtcp.Pli, rtcp.Fir)):
                ssrcs = [p.media_ssrc] if isinstance(p, rtcp.Pli) else [e[0] for e in p.entries]
                for ssrc in ssrcs:
                    dt = self.downtracks_by_ssrc.get(ssrc)
                    if dt is not None and dt.receiver is not None:
                        self.node.request_keyframe(dt.receiver, now)
            elif isinstance(p, rtcp.ReceiverReport):
                for block in p.reports:
                    dt = self.downtracks_by_ssrc.get(block.ssrc)
                    if dt is not None:
                        dt.rtt = dt.stats.rtt_from_report(block, now)
            if isinstance(p, rtcp.SenderReport):
                for block in p.reports:
                    dt = self.downtracks_by_ssrc.get(block.ssrc)
                    if dt is not None:
                        dt.rtt = dt.stats.rtt_from_report(block, now)

    # --- datagrams out -----------------------------------------------------------------------

    def _send_raw(self, data: bytes) -> None:
        if self.addr is not None and self.state != "closed":
            self.node.send_datagram(data, self.addr, "dtls")

    def send_rtp(self, packet: bytes, kind: str) -> None:
        tx = self._tx
        if tx is None or self.addr is None:
            self.node.metrics.drop("not_connected")
            return
        self.node.send_datagram(tx.protect(packet), self.addr, kind)

    def send_rtcp(self, packets: list[rtcp.RtcpPacket]) -> None:
        tx = self._tx
        if tx is None or self.addr is None or not packets:
            return
        self.node.send_datagram(
            tx.protect_rtcp(rtcp.serialize_compound(packets)), self.addr, "rtcp"
        )

    def set_mid_extension(self, ext_id: int | None) -> None:
        if ext_id is not None:
            self.mid_ext_id = ext_id


__all__ = ["Peer", "EXT_MID"]
