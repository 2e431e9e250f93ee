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
from sfu.core.fecingress import Skip
from sfu.core.receiver import Receiver
from sfu.core.room import Room, Slot
from sfu.core.twcc import FeedbackGenerator
from sfu.negotiate import EXT_MID
from sfu.net.dtls import make_dtls
from sfu.net.rxstamp import RxStamp
from sfu.net.sctp import make_sctp_transport
from sfu.sdp import AnswerMedia
from sfu.wire import rtcp, rtx
from sfu.wire.rtcp import RtcpError
from sfu.wire.rtp import RtpError, RtpHeader, iter_extensions, parse_header
from sfu.wire.twcc import TransportFeedback, read_transport_seq

if TYPE_CHECKING:
    from sfu.net.downlink import ViewerDownlink
    from sfu.node import Node

log = logging.getLogger("sfu.peer")


class Peer:
    """The node's side of one peer connection."""

    local = False  # a network sink (recorders are in-process sinks: sfu.recording)

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
        self.grants: frozenset[str] = frozenset()  # the token's grants (commerce admin checks)
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
        self.rid_ext_id: int | None = None
        self.rrid_ext_id: int | None = None
        self.rtx_ssrcs: dict[int, Receiver] = {}  # publisher RTX SSRC -> the stream it repairs
        self._nack_at: float | None = None
        self._nack_handle: asyncio.TimerHandle | None = None
        self.receivers_by_rid: dict[tuple[str, str], Receiver] = {}
        # transport-cc feedback to this publisher (enable_twcc), on a timer of its own
        self.twcc: FeedbackGenerator | None = None
        self.twcc_ext_id = 0
        self._twcc_at: float | None = None
        self._twcc_handle: asyncio.TimerHandle | None = None
        self._rx_stamp: RxStamp | None = None
        # negotiation: what each mid became, kept across renegotiations
        self.sections: dict[str, AnswerMedia] = {}
        self.sdp_session_id = secrets.randbits(62)
        self.sdp_version = 0
        # subscribing
        self.slots: list[Slot] = []
        self.downtracks_by_ssrc: dict[int, DownTrack] = {}
        # downlink bandwidth estimation, when the viewer negotiated transport-cc (sfu.offer)
        self.bwe: ViewerDownlink | None = None
        # crypto and datachannels
        self._tx: pylibsrtp.Session | None = None
        self._rx: pylibsrtp.Session | None = None
        self._dtls, self._pipe = make_dtls(node.certificate, self._send_raw, dtls_server)
        self._dtls.on("statechange", self._on_dtls_state)
        self._sctp: RTCSctpTransport | None = None
        self.channels: list[RTCDataChannel] = []
        self._task: asyncio.Task[None] | None = None
        self.on_channel: Callable[[Peer, RTCDataChannel], None] | None = None
        # Told when the node pauses or resumes a simulcast layer this peer publishes.
        self.on_layers: Callable[[Receiver], None] | None = None

    # --- set-up ------------------------------------------------------------------------------

    def add_receiver(self, receiver: Receiver, mid: str, ssrcs: list[int]) -> None:
        """Register a published track; `ssrcs` are its layers' SSRCs when the SDP says them."""
        self.receivers_by_mid[mid] = receiver
        for i, layer in enumerate(receiver.layers):
            layer.upstream = self
            self.receivers.append(layer)
            if i < len(ssrcs):
                layer.ssrc = ssrcs[i]
                self.receivers_by_ssrc[ssrcs[i]] = layer
            if layer.rid is not None:
                self.receivers_by_rid[(mid, layer.rid)] = layer

    def remove_receiver(self, receiver: Receiver) -> None:
        """Forget a published track and all its layers."""
        layers = set(map(id, receiver.layers))
        self.receivers = [r for r in self.receivers if id(r) not in layers]
        for mid in [k for k, r in self.receivers_by_mid.items() if r is receiver]:
            del self.receivers_by_mid[mid]
        for ssrc in [k for k, r in self.receivers_by_ssrc.items() if id(r) in layers]:
            del self.receivers_by_ssrc[ssrc]
        for key in [k for k, r in self.receivers_by_rid.items() if id(r) in layers]:
            del self.receivers_by_rid[key]

    def remove_slot(self, slot: Slot) -> None:
        if slot in self.slots:
            self.slots.remove(slot)
        self.downtracks_by_ssrc.pop(slot.downtrack.ssrc, None)
        if self.bwe is not None:
            self.bwe.remove_track(slot.downtrack)

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
            self._sctp = make_sctp_transport(self._dtls, port=5000)  # bundling SCTP
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
        if self._twcc_handle is not None:
            self._twcc_handle.cancel()
        if self._nack_handle is not None:
            self._nack_handle.cancel()
        if self.bwe is not None:
            self.bwe.close()
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
        twcc = self.twcc
        if twcc is not None and hdr.ext_profile:
            # Before any SSRC/PT check: padding probes count for the estimate too.
            tseq = read_transport_seq(plain, hdr, self.twcc_ext_id)
            if tseq is not None:
                stamp = self._rx_stamp
                twcc.record(tseq, stamp.arrival(now) if stamp is not None else now)
                if twcc.get_timer() != self._twcc_at:
                    self._arm_twcc()
        receiver = self.receivers_by_ssrc.get(hdr.ssrc)
        retransmission = False
        if receiver is None:
            receiver = self.rtx_ssrcs.get(hdr.ssrc) or self._learn_ssrc(plain, hdr)
            if receiver is None:
                m.drop("unknown_ssrc")
                return
            if hdr.ssrc == receiver.rtx_ssrc:
                # A retransmission we asked for (or a padding probe, which carries nothing).
                if hdr.payload_size < 2 or receiver.ssrc is None:
                    m.recovery["rtx_padding_in"] += 1
                    return
                try:
                    _, plain = rtx.unwrap(
                        plain, media_ssrc=receiver.ssrc,
                        media_pt=receiver.red_payload_type
                        if hdr.payload_type == receiver.red_rtx_payload_type
                        and receiver.red_payload_type is not None else receiver.payload_type,
                    )
                    hdr = parse_header(plain)
                except RtpError:
                    m.drop("rtp_malformed")
                    return
                retransmission = True
                m.recovery["rtx_in"] += 1
        kind = receiver.info.kind
        m.packets_in[kind] += 1
        m.bytes_in[kind] += len(data)
        gen = receiver.nack
        if retransmission and (gen is None or not gen.is_missing(hdr.seq)):
            # RTX the node did not ask for: the publisher's bandwidth probes replay old
            # packets on the RTX stream. Forwarding them would only duplicate.
            m.recovery["rtx_unrequested"] += 1
            return
        if hdr.payload_type != receiver.payload_type:
            if hdr.payload_type == receiver.red_payload_type:
                self._on_red(receiver, plain, hdr, retransmission, now)
            else:
                m.drop("unknown_payload_type")
            return
        key = receiver.accept(plain, hdr, now, late=retransmission)
        if gen is not None:
            at = gen.get_timer()
            if at is not None and (self._nack_at is None or at < self._nack_at):
                self._arm_nack(at)
        self._fan_out(receiver, kind, plain, hdr, key, now, retransmission=retransmission)

    def _fan_out(self, receiver: Receiver, kind: str, plain: bytes, hdr: RtpHeader, key: bool,
                 now: float, red_mode: int = 0, retransmission: bool = False) -> None:
        """Relay one accepted packet to cascade edges (plain packets only: edges get plain
        Opus and the plain video the node rebuilt, and run their own RED/FEC), then send it
        to this node's down-tracks (see `fan_out` for `red_mode`)."""
        relay = receiver.relay
        if relay is not None and red_mode != 1:
            relay(plain, hdr, retransmission, now)
        fan_out(self.node, receiver, plain, hdr, key, now, red_mode)

    def _on_red(self, receiver: Receiver, plain: bytes, hdr: RtpHeader, retransmission: bool,
                now: float) -> None:
        """A publisher's RED packet: Opus RED is passed on (stripped for viewers without
        RED); video RED is unwrapped, ULPFEC in it rebuilds lost packets, and the plain
        packets are forwarded (viewers get the node's own RED/FEC, not the publisher's)."""
        m = self.node.metrics
        kind = receiver.info.kind
        rec = receiver.red_recovery
        if rec is not None:  # Opus in RED
            m.recovery["red_in"] += 1
            receiver.on_rtp(plain, hdr, now)
            try:
                plains = rec.on_packet(plain, hdr)
            except RtpError:  # RedError
                m.drop("rtp_malformed")
                return
            for p in plains:
                ph = parse_header(p)
                if ph.seq != hdr.seq:
                    m.recovery["red_recovered"] += 1
                self._fan_out(receiver, kind, p, ph, False, now, red_mode=2)
            if plains and parse_header(plains[-1]).seq == hdr.seq:
                self._fan_out(receiver, kind, plain, hdr, False, now, red_mode=1)
            return
        receiver.account(hdr, len(plain), now)
        try:
            act = receiver.fec_ingress(hdr.ssrc).on_packet(
                plain, hdr, retransmission, now, inspect=receiver, nack=receiver.nack)
        except RtpError:  # RedError, FecError
            m.drop("rtp_malformed")
            return
        if act.fec:
            m.recovery["fec_in"] += 1
        for step in act.steps:
            if isinstance(step, Skip):
                self._skip_fec_seqs(receiver, step, now)
                continue
            if step.recovered:
                m.recovery["fec_recovered"] += 1
            if step.keyframe and receiver.pending:
                receiver.promote_pending(now)
            self._fan_out(receiver, kind, step.data, step.hdr, step.keyframe, now)
        gen = receiver.nack
        if gen is not None:
            at = gen.get_timer()
            if at is not None and (self._nack_at is None or at < self._nack_at):
                self._arm_nack(at)

    def _skip_fec_seqs(self, receiver: Receiver, skip: Skip, now: float) -> None:
        """Publisher seqs that held FEC (received, or known lost): nothing is forwarded for
        them; viewers' streams close them, or get padding in their slot."""
        m = self.node.metrics
        m.recovery["fec_lost_in"] += skip.lost
        for seq, ts in skip.seqs:
            for dt in receiver.downtracks:
                fill = dt.skip(seq, ts, now)
                if fill is None:
                    continue
                sink = dt.sink
                if sink.local:
                    continue
                if dt.history is not None:
                    dt.history.push((fill[2] << 8) | fill[3], fill, now)
                sink.send_rtp(fill, "fill")
                m.recovery["fec_fill_out"] += 1

    def _learn_ssrc(self, plain: bytes, hdr: Any) -> Receiver | None:
        """Bind an SSRC the offer did not declare: by RID and MID extensions, else by PT.

        An RTX stream of a RID layer names its layer in the repaired-rtp-stream-id extension.
        """
        receiver = None
        mid = rid = None
        if hdr.ext_profile and (self.mid_ext_id is not None or self.rid_ext_id is not None):
            try:
                elements = dict(iter_extensions(plain, hdr))
            except RtpError:
                elements = {}
            if self.mid_ext_id in elements:
                mid = elements[self.mid_ext_id].decode("ascii", "replace")
            if self.rid_ext_id in elements:
                rid = elements[self.rid_ext_id].decode("ascii", "replace")
            if self.rrid_ext_id in elements and rid is None:
                rrid = elements[self.rrid_ext_id].decode("ascii", "replace")
                layer = self._layer_by_rid(mid, rrid)
                if layer is not None and layer.is_rtx_payload_type(hdr.payload_type):
                    self.add_rtx_ssrc(hdr.ssrc, layer)
                    return layer
        if rid is None and mid is None:
            owners = [r for r in self.receivers if r.is_rtx_payload_type(hdr.payload_type)
                      and r.rtx_ssrc is None and not r.simulcast]
            if len(owners) == 1 and owners[0].ssrc != hdr.ssrc:
                self.add_rtx_ssrc(hdr.ssrc, owners[0])
                return owners[0]
        if rid is not None:
            if mid is not None:
                receiver = self.receivers_by_rid.get((mid, rid))
            else:
                matches = [r for (_, r_id), r in self.receivers_by_rid.items() if r_id == rid]
                receiver = matches[0] if len(matches) == 1 else None
        elif mid is not None:
            primary = self.receivers_by_mid.get(mid)
            if primary is not None and not primary.simulcast:
                receiver = primary
        if receiver is None and rid is None:
            candidates = [
                r for r in self.receivers
                if r.ssrc is None and not r.simulcast
                and hdr.payload_type in (r.payload_type, r.red_payload_type)
            ]
            if len(candidates) == 1:
                receiver = candidates[0]
        if receiver is None or (receiver.ssrc is not None and receiver.ssrc != hdr.ssrc):
            return None
        receiver.ssrc = hdr.ssrc
        self.receivers_by_ssrc[hdr.ssrc] = receiver
        return receiver

    def _layer_by_rid(self, mid: str | None, rid: str) -> Receiver | None:
        if mid is not None:
            return self.receivers_by_rid.get((mid, rid))
        matches = [r for (_, r_id), r in self.receivers_by_rid.items() if r_id == rid]
        return matches[0] if len(matches) == 1 else None

    # --- loss recovery -----------------------------------------------------------------------

    def _arm_nack(self, at: float) -> None:
        if self._nack_handle is not None:
            self._nack_handle.cancel()
        self._nack_at = at
        self._nack_handle = asyncio.get_event_loop().call_at(at, self._on_nack_timer)

    def _on_nack_timer(self) -> None:
        """NACK what the publisher's streams are missing; a keyframe when recovery gave up."""
        self._nack_handle = None
        self._nack_at = None
        if self.state == "closed":
            return
        now = self.node.now()
        m = self.node.metrics
        earliest: float | None = None
        for receiver in self.receivers:
            gen = receiver.nack
            if gen is None:
                continue
            seqs = gen.handle_timer(now)
            if seqs and receiver.ssrc is not None:
                for chunk in range(0, len(seqs), 200):
                    self.send_rtcp([rtcp.Nack(self.rtcp_ssrc, receiver.ssrc,
                                              seqs[chunk:chunk + 200])])
                m.recovery["nack_sent"] += 1
                m.recovery["nacked_packets"] += len(seqs)
            if gen.take_keyframe_request():
                m.recovery["gave_up"] += 1
                self.node.request_keyframe(receiver, now)
            at = gen.get_timer()
            if at is not None and (earliest is None or at < earliest):
                earliest = at
        if earliest is not None:
            self._arm_nack(max(earliest, now + 0.001))

    def _on_viewer_nack(self, nack: rtcp.Nack, now: float) -> None:
        """Answer a viewer's NACK from History; ask the publisher once for what we lack."""
        m = self.node.metrics
        m.recovery["nack_received"] += 1
        dt = self.downtracks_by_ssrc.get(nack.media_ssrc)
        if dt is None or dt.responder is None:
            m.recovery["nack_unanswerable"] += 1
            return
        missing: list[int] = []
        before = dt.responder.suppressed_rate + dt.responder.suppressed_budget
        repeated = dt.responder.repeated
        for r in dt.responder.on_nack(list(nack.lost), now):
            if r.data is not None:
                self.send_rtp(r.data, "rtx")
                m.recovery["retransmits"] += 1
            elif r.upstream_seq is not None:
                missing.append(r.upstream_seq)
        m.recovery["retransmits_suppressed"] += (
            dt.responder.suppressed_rate + dt.responder.suppressed_budget - before
        )
        m.recovery["retransmits_repeated"] += dt.responder.repeated - repeated
        layer = dt.current
        if missing and layer is not None and layer.upstream_nacks is not None:
            seqs = layer.upstream_nacks.request(missing, now)
            upstream: Peer | None = layer.upstream
            if seqs and upstream is not None and layer.ssrc is not None:
                upstream.send_rtcp([rtcp.Nack(upstream.rtcp_ssrc, layer.ssrc, seqs)])
                m.recovery["nack_upstream"] += 1

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
                    if dt is not None and dt.current is not None:
                        self.node.request_keyframe(dt.pending or dt.current, now)
            elif isinstance(p, rtcp.Nack):
                self._on_viewer_nack(p, now)
            elif isinstance(p, TransportFeedback):
                if self.bwe is not None:
                    self.bwe.on_feedback(p, now)
            elif isinstance(p, rtcp.Remb):
                if self.bwe is not None:
                    self.bwe.on_remb(p.bitrate, now, p.ssrcs)
            elif isinstance(p, rtcp.ReceiverReport):
                for block in p.reports:
                    dt = self.downtracks_by_ssrc.get(block.ssrc)
                    if dt is not None:
                        self._viewer_report(dt, block, now)
            if isinstance(p, rtcp.SenderReport):
                for block in p.reports:
                    dt = self.downtracks_by_ssrc.get(block.ssrc)
                    if dt is not None:
                        self._viewer_report(dt, block, now)

    def _viewer_report(self, dt: DownTrack, block: rtcp.ReportBlock, now: float) -> None:
        """A viewer's report block: RTT and loss drive the repair policies."""
        rtt = dt.stats.rtt_from_report(block, now)
        if rtt is not None:
            dt.rtt = rtt
            if dt.responder is not None:
                dt.responder.set_rtt(rtt)
        loss = dt.loss = block.fraction_lost / 256
        if dt.responder is not None:
            dt.responder.set_loss(loss, now)
        if dt.red is not None:
            dt.red.set_loss(loss, now)
        fec = dt.fec
        if fec is not None:
            if rtt is not None:
                fec.set_rtt(rtt)
            before = fec.protection
            fec.set_loss(loss, now)
            if (fec.protection > 0) != (before > 0):
                self.node.metrics.recovery["fec_on" if fec.protection > 0 else "fec_off"] += 1
        if self.bwe is not None:
            self.bwe.on_report(loss, rtt, now)
        self.node.metrics.viewer_loss[dt.kind] = loss

    # --- datagrams out -----------------------------------------------------------------------

    def _send_raw(self, data: bytes) -> None:
        if self.addr is not None and self.state != "closed":
            self.node.send_datagram(data, self.addr, "dtls")

    def send_rtp(self, packet: bytes, kind: str) -> None:
        tx = self._tx
        if tx is None or self.addr is None:
            self.node.metrics.drop("not_connected")
            return
        if self.bwe is not None:
            packet = self.bwe.stamp(packet, self.node.now())  # RTX: a transport seq of its own
        self.node.send_datagram(tx.protect(packet), self.addr, kind)

    def send_rtcp(self, packets: list[rtcp.RtcpPacket]) -> None:
        tx = self._tx
        if tx is None or self.addr is None or not packets:
            return
        self.node.send_datagram(
            tx.protect_rtcp(rtcp.serialize_compound(packets)), self.addr, "rtcp"
        )

    def enable_twcc(self, ext_id: int | None) -> None:
        """Return transport-cc feedback for packets carrying extension `ext_id` (publishers)."""
        if ext_id is None or self.twcc is not None:
            return
        self.twcc_ext_id = ext_id
        self.twcc = FeedbackGenerator(sender_ssrc=self.rtcp_ssrc)
        if self.node.sock is not None:
            self._rx_stamp = RxStamp(self.node.sock)

    def _arm_twcc(self) -> None:
        if self._twcc_handle is not None:
            self._twcc_handle.cancel()
            self._twcc_handle = None
        at = self._twcc_at = self.twcc.get_timer() if self.twcc is not None else None
        if at is not None and self.state != "closed":
            self._twcc_handle = asyncio.get_running_loop().call_at(at, self._on_twcc_timer)

    def _on_twcc_timer(self) -> None:
        self._twcc_handle = None
        twcc = self.twcc
        if twcc is None or self.state == "closed":
            return
        # The media SSRC field is informative only (the feedback covers the whole transport).
        twcc.media_ssrc = next((r.ssrc for r in self.receivers if r.ssrc is not None), 0)
        # uvloop's timers have 1 ms granularity and may fire a hair before `at`.
        now = max(self.node.now(), self._twcc_at or 0.0)
        for feedback in twcc.handle_timer(now):
            self.send_rtcp([feedback])
            self.node.metrics.twcc_feedback += 1
        self._arm_twcc()

    def set_extension_ids(
        self, mid_id: int | None, rid_id: int | None, rrid_id: int | None = None
    ) -> None:
        if mid_id is not None:
            self.mid_ext_id = mid_id
        if rid_id is not None:
            self.rid_ext_id = rid_id
        if rrid_id is not None:
            self.rrid_ext_id = rrid_id

    def add_rtx_ssrc(self, ssrc: int, receiver: Receiver) -> None:
        """`ssrc` carries RTX (RFC 4588) for `receiver`'s stream."""
        receiver.rtx_ssrc = ssrc
        self.rtx_ssrcs[ssrc] = receiver


def fan_out(node: Node, receiver: Receiver, plain: bytes, hdr: RtpHeader, key: bool,
            now: float, red_mode: int = 0) -> None:
    """Forward one accepted packet of `receiver` to its down-tracks (rewrite, FEC, keep in
    History, SRTP protect, send, or for a paced viewer's video, queue in its pacer): to all of them (mode 0), or for a publisher's Opus RED
    stream, the RED packet to viewers with RED (1) or a plain Opus packet made from it to
    viewers without (2). Shared by local publishers (Peer.on_srtp) and cascaded ones
    (sfu.cascade.remote), so an edge's viewers get exactly the local path."""
    m = node.metrics
    kind = receiver.info.kind
    sock = node.sock
    if sock is None:
        return
    red_in = red_mode == 1
    video = kind == "video"
    # The per-viewer steps are spelled out here rather than layered through helper
    # calls: this loop runs once per packet per viewer and dominates the node's CPU.
    sent = sent_bytes = 0
    for dt in receiver.downtracks:
        if red_mode and (dt.red is None) == red_in:
            continue
        out = dt.forward(plain, hdr, key, now)
        if out is None:
            continue
        sink = dt.sink
        tx = sink._tx
        if tx is None or sink.addr is None:
            if sink.local:  # an in-process sink (a recorder): no SRTP, no socket
                sink.write(out, now)
                continue
            m.drop("not_connected")
            continue
        fec = dt.fec
        extra = None
        if fec is not None:
            # Video to a viewer that negotiated red+ulpfec: FEC per policy, protecting
            # the plain packet (as the viewer sees it after RED), which then goes in RED.
            extra = fec.on_packet(out, now)
            if fec.active:
                out = fec.wrap(out)
        if dt.history is not None:
            # Kept by outgoing seq so the viewer's NACKs can be answered.
            dt.history.push((out[2] << 8) | out[3], out, now, hdr.seq)
            dt.responder.on_media(len(out), now)
        elif dt.red is not None:
            out = dt.red_passthrough(out) if red_in else dt.red.encode(out, now)
        bwe = sink.bwe
        if bwe is not None and bwe.pacing and video:
            bwe.pace(dt, out, now)  # leaves in the viewer's next pacing burst
            if extra:  # its FEC right behind it, in the same queue (seq order kept)
                for f in extra:
                    if dt.history is not None:
                        dt.history.push((f[2] << 8) | f[3], f, now)
                    bwe.pace(dt, f, now)
                m.recovery["fec_sent"] += len(extra)
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
        if extra:
            for f in extra:
                if dt.history is not None:
                    dt.history.push((f[2] << 8) | f[3], f, now)
                sink.send_rtp(f, "fec")
            m.recovery["fec_sent"] += len(extra)
    if sent:
        m.packets_out[kind] += sent
        m.bytes_out[kind] += sent_bytes


__all__ = ["Peer", "EXT_MID", "fan_out"]
