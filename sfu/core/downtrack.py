"""DownTrack: one published track as one subscriber receives it.

It owns the subscriber-facing SSRC, the payload-type and header-extension mapping, and the
seq/timestamp munger. `forward` decides per packet: drop, or the rewritten bytes to send.
Video starts on a keyframe so a subscriber's decoder never sees a stream it cannot decode.

For simulcast it also holds the layer being forwarded (`current`) and the one it waits to
switch to (`pending`, on that layer's next key frame), and the temporal-layer ceiling. The
choice of layer is made elsewhere (sfu.core.layers); a down-track only carries it out, so it
never forwards two layers interleaved and its output stays one continuous stream.
"""

from __future__ import annotations

import random
import struct
from typing import Any

from sfu.core.fec import UlpfecEncoder
from sfu.core.history import History
from sfu.core.munger import RtpMunger
from sfu.core.nack import NackResponder, RtxConfig
from sfu.core.receiver import Receiver
from sfu.core.redundancy import RedEncoder
from sfu.core.rtpstats import SendStats
from sfu.core.vp8munger import Vp8Munger
from sfu.wire import red, rtp
from sfu.wire.abs_send_time import add_abs_send_time
from sfu.wire.rtcp import SenderReport
from sfu.wire.rtp import RtpHeader
from sfu.wire.twcc import NO_EXTENSIONS, rewrite_with_transport_seq
from sfu.wire.vp8 import Vp8Descriptor, write_fields

MAX_TEMPORAL = 3  # VP8 TID is two bits: 3 means "every temporal layer"
SRTP_OVERHEAD = 10  # the SRTP auth tag added after forward (bytes the estimator counts)

_fixed_header = struct.Struct("!BBHII").pack
_FILL = b"\x00\x00\x00\x04"  # RTP padding: three zero bytes and the count


class DownTrack:
    """Forwarding state from one Receiver to one subscriber slot."""

    def __init__(
        self,
        *,
        ssrc: int,
        kind: str,
        mid: str,
        clock_rate: int,
        seq_start: int,
        ts_start: int,
    ) -> None:
        self.ssrc = ssrc
        self.kind = kind
        self.mid = mid
        self.clock_rate = clock_rate
        self.munger = RtpMunger(clock_rate, seq_start, ts_start)
        self.stats = SendStats()
        self.receiver: Receiver | None = None
        self.payload_type = -1  # subscriber PT for the bound receiver's codec
        self.ext_map: dict[int, int] = {}
        self.ext_key: tuple[tuple[int, int], ...] = ()
        self.ext_identity = True  # publisher and subscriber use the same ids for the same set
        self.awaiting_keyframe = kind == "video"
        # Until the subscriber's DTLS is up nothing can be sent: a keyframe "forwarded" then
        # would be lost and the subscriber would start on delta frames.
        self.paused = True
        self.dropped_waiting = 0
        self.sink: Any = None  # the subscriber session; the shell sends through it
        self.rtt: float | None = None
        self.loss: float | None = None  # fraction lost in the viewer's last receiver report
        # simulcast and temporal scalability
        self.current: Receiver | None = None  # the layer being forwarded
        self.pending: Receiver | None = None  # the layer to switch to on its next key frame
        self.max_temporal = MAX_TEMPORAL  # the viewer's preference (highest TID wanted)
        self.allocated_temporal: int | None = None  # the bandwidth allocator's TID ceiling
        self.temporal = MAX_TEMPORAL  # the TID ceiling in force (changes at a frame start)
        self.temporal_switches = 0
        self.preferred_rank: int | None = None  # subscriber's choice: 0 = lowest
        self.max_size: tuple[int, int] | None = None  # largest size the client renders
        self.allocated_rank: int | None = None  # the bandwidth allocator's ceiling
        self.vp8: Vp8Munger | None = None
        self.switches = 0
        # loss recovery towards this viewer (configure_repair)
        self.rtx_ssrc: int | None = None  # allocated when the viewer's answer has RTX
        self.history: History | None = None
        self.responder: NackResponder | None = None
        self.red: RedEncoder | None = None
        self.fec: UlpfecEncoder | None = None  # ULPFEC in RED towards the viewer, under loss
        # downlink bandwidth estimation (sfu.core.downlink.Downlink of the viewer's transport):
        # when set, every packet gets the transport-wide sequence number extension (or, for
        # a REMB viewer's video, abs-send-time)
        self.downlink: Any = None
        # abs-send-time id for a REMB viewer's video (its downlink has no transport-cc id)
        self.abs_send_time_id = 0
        # Paced video of a numbered viewer: forward leaves the transport-wide seq to the pacer
        self.number_at_send = False
        # The allocator paused this video (rank -1): distinct from `paused` (DTLS not up).
        self.allocator_paused = False

    @property
    def bound(self) -> bool:
        return self.receiver is not None

    def bind(
        self,
        receiver: Receiver,
        payload_type: int,
        ext_map: dict[int, int],
        publisher_ext_ids: set[int],
        now: float,
    ) -> None:
        """Start forwarding `receiver`'s track on this slot (first bind or a new source).

        The first layer is the primary's; call `request_layer` to pick another.
        """
        if self.munger.has_source:
            # A new source (even after an unbind): continue this slot's seq/ts timeline.
            self._switch_source(now)
        self._leave_layers()
        self.receiver = receiver
        self.current = receiver
        receiver.downtracks.append(self)
        if receiver.codec_name == "VP8" and self.vp8 is None:
            self.vp8 = Vp8Munger(random.randrange(1 << 15), random.randrange(256))
        elif self.vp8 is not None:
            self.vp8.switch_source()
        self.payload_type = payload_type
        self.ext_map = ext_map
        self.ext_key = tuple(sorted(ext_map.items()))
        self.ext_identity = all(k == v for k, v in ext_map.items()) and set(
            ext_map
        ) == publisher_ext_ids
        self.awaiting_keyframe = self.kind == "video"

    def configure_repair(self, *, nack: bool, rtx_pt: int | None, red_pt: int | None,
                         fec: tuple[int, int, int | None] | None = None) -> None:
        """Set up NACK answering (RTX when negotiated), Opus RED, and video FEC (`fec`: the
        viewer's RED, ULPFEC and RED-RTX payload types) for the bound codec.

        With video FEC a packet goes out in RED while FEC protects it (libwebrtc's FEC
        decoder sees only packets that came in RED) and plain otherwise, which costs a clean
        link nothing; History keeps what was sent, and a retransmission of a RED packet goes
        out on the RTX payload type whose apt is RED, as libwebrtc sends it.
        """
        self.history = self.responder = self.red = self.fec = None
        red_video = red_rtx = None
        if fec is not None and self.kind == "video":
            red_video, ulpfec_pt, red_rtx = fec
            self.fec = UlpfecEncoder(media_ssrc=self.ssrc, red_pt=red_video,
                                     ulpfec_pt=ulpfec_pt, reserve=self.munger.insert)
            if self.rtt is not None:
                self.fec.set_rtt(self.rtt)
            if not nack:
                # Without NACK nothing else repairs a loss: FEC from the first few percent.
                self.fec.rtt_threshold = 0.0
        if nack and self.kind == "video":
            self.history = History()
            rtx = None
            if rtx_pt is not None and self.rtx_ssrc is not None:
                rtx = RtxConfig(self.rtx_ssrc, rtx_pt, random.randrange(1 << 16),
                                red_payload_type=red_video, red_rtx_payload_type=red_rtx)
            self.responder = NackResponder(self.history, rtx=rtx)
        if red_pt is not None and self.kind == "audio":
            self.red = RedEncoder(red_pt)

    def skip(self, seq: int, ts: int, now: float) -> bytes | None:
        """Incoming `seq` carries nothing for this viewer (the publisher's FEC, received or
        known lost). Ahead of what was sent its slot is closed (None); behind it, the slot
        is already part of the viewer's sequence, so the packet to send there instead: a
        padding-only one (4 bytes), which receivers take as "nothing missing here"."""
        m = self.munger
        if (self.paused or self.allocator_paused or self.awaiting_keyframe
                or not m.has_source or m.ahead(seq)):
            m.drop(seq)
            return None
        out = m.rewrite(seq, ts, now)
        if out is None:
            return None
        m.drop(seq)  # the slot is taken: nothing else may go out with it
        return _fixed_header(0xA0, self.payload_type, out[0], out[1], self.ssrc) + _FILL

    def red_passthrough(self, out: bytes) -> bytes:
        """`out` (a publisher's Opus RED packet, forwarded under this viewer's Opus PT) with
        the viewer's RED PT, its blocks renumbered when the viewer's Opus PT differs."""
        enc = self.red
        assert enc is not None
        buf = bytearray(out)
        buf[1] = (buf[1] & 0x80) | enc.red_pt
        enc.passed_through += 1
        enc.passthrough_distance = red.set_block_types(buf, rtp.parse_header(out).payload_start,
                                                       self.payload_type)
        return bytes(buf)

    def _switch_source(self, now: float) -> None:
        self.munger.switch_source(now)
        if self.history is not None:
            self.history.new_source()  # older outgoing seqs no longer map upstream

    def resume(self) -> None:
        """The subscriber can receive now: start (again) from a keyframe."""
        self.paused = False
        self.awaiting_keyframe = self.kind == "video"

    def set_allocator_paused(self, paused: bool, now: float) -> None:
        """The bandwidth allocator pauses (rank -1) or resumes this video; resuming restarts
        on a key frame and continues the seq/ts timeline across the gap."""
        if paused == self.allocator_paused:
            return
        self.allocator_paused = paused
        if not paused:
            self.restart_on_keyframe(now)

    def restart_on_keyframe(self, now: float) -> None:
        """Forward nothing until a key frame: of the pending layer (the switch), or of the
        current one; the viewer's seq/ts timeline continues across the gap. The allocator
        sheds an old layer this way when the link narrowed: its packets would only deepen
        the queue the new layer's key frame must cross."""
        self.awaiting_keyframe = self.kind == "video"
        if self.munger.has_source:
            self._switch_source(now)
        if self.vp8 is not None:
            self.vp8.switch_source()

    def shed_for_lower_layer(self, now: float) -> bool:
        """A switch down to a lower layer is pending (the link narrowed): stop the layer in
        force now rather than at the new layer's key frame, so that key frame meets a
        draining queue. True when it did."""
        current, pending, receiver = self.current, self.pending, self.receiver
        if pending is None or current is None or receiver is None or self.awaiting_keyframe:
            return False
        ranked = receiver.ranked()
        if current in ranked and pending in ranked and (
                ranked.index(pending) < ranked.index(current)):
            self.restart_on_keyframe(now)
            return True
        return False

    def unbind(self) -> None:
        self._leave_layers()
        self.receiver = None

    def _leave_layers(self) -> None:
        if self.current is not None and self in self.current.downtracks:
            self.current.downtracks.remove(self)
        if self.pending is not None and self in self.pending.pending:
            self.pending.pending.remove(self)
        self.current = self.pending = None

    def request_layer(self, layer: Receiver) -> bool:
        """Target `layer` of the bound track. True when it needs a key frame to switch."""
        if layer is self.current:
            if self.pending is not None:
                self.pending.pending.remove(self)
                self.pending = None
            return False
        if layer is self.pending:
            return False
        if self.pending is not None:
            self.pending.pending.remove(self)
        self.pending = layer
        layer.pending.append(self)
        return True

    def switch_to(self, layer: Receiver, now: float) -> None:
        """`layer`'s key frame is the packet being handled: forward that layer from here on."""
        if self.current is not None and self in self.current.downtracks:
            self.current.downtracks.remove(self)
        layer.downtracks.append(self)
        self.current = layer
        self.pending = None
        if self.munger.has_source:
            self._switch_source(now)
        if self.vp8 is not None:
            self.vp8.switch_source()
        self.awaiting_keyframe = False
        self.switches += 1

    def forward(self, data: bytes, hdr: RtpHeader, keyframe: bool, now: float) -> bytes | None:
        """The packet to send to the subscriber, or None to drop it."""
        if self.paused or self.allocator_paused:
            return None
        if self.awaiting_keyframe:
            if not keyframe:
                self.dropped_waiting += 1
                return None
            self.awaiting_keyframe = False
        layer = self.current
        d = layer.vp8 if layer is not None and self.vp8 is not None else None
        if d is not None and d.tid is not None:
            if d.begins_frame:
                self._temporal_at_frame(d)
            if d.tid > self.temporal:
                # An upper temporal layer this viewer does not get: close the gaps it leaves.
                self.munger.drop(hdr.seq)
                self.vp8.drop_frame(d)  # type: ignore[union-attr]
                return None
        out = self.munger.rewrite(hdr.seq, hdr.timestamp, now)
        if out is None:
            return None
        seq, ts = out
        # Picture IDs are translated for simulcast and for any temporally layered stream (a
        # dropped frame shifts them; translating from the start keeps them continuous).
        munge_vp8 = d is not None and d.picture_id is not None and (
            d.tid is not None or (layer is not None and layer.simulcast)
        )
        tw = self.downlink
        if tw is not None and not tw.ext_id:
            # A REMB viewer (receive-side estimate): abs-send-time first in the block, set to
            # now; a pacer that sends it later writes the time again (sfu.net.downlink).
            ext = NO_EXTENSIONS
            if hdr.ext_profile:
                ext = self.receiver.remapped_extensions(data, hdr, self.ext_key, self.ext_map)  # type: ignore[union-attr]
            pkt = rtp.rewrite(
                data, hdr, payload_type=self.payload_type, seq=seq, timestamp=ts, ssrc=self.ssrc,
                extensions=add_abs_send_time(ext, self.abs_send_time_id, now),
            )
            if munge_vp8:
                pkt = self._munge_vp8_in(pkt, len(data) - hdr.payload_start, d)  # type: ignore[arg-type]
        elif tw is not None:
            # A numbered transport (downlink estimation): the viewer's extension block with
            # the transport-wide seq in front (Downlink.next_seq and on_sent inlined).
            ext = NO_EXTENSIONS
            if hdr.ext_profile:
                ext = self.receiver.remapped_extensions(data, hdr, self.ext_key, self.ext_map)  # type: ignore[union-attr]
            if self.number_at_send:
                # Paced: the pacer takes the number when the packet leaves (numbers follow
                # the wire order, or the viewer's feedback reads overtaken packets as lost).
                pkt = rewrite_with_transport_seq(data, hdr, ext, self.payload_type, seq, ts,
                                                 self.ssrc, tw.ext_id, 0)
                if munge_vp8:
                    pkt = self._munge_vp8_in(pkt, len(data) - hdr.payload_start, d)  # type: ignore[arg-type]
            else:
                tseq = tw.seq
                tw.seq = (tseq + 1) & 0xFFFF
                pkt = rewrite_with_transport_seq(data, hdr, ext, self.payload_type, seq, ts,
                                                 self.ssrc, tw.ext_id, tseq)
                if munge_vp8:
                    pkt = self._munge_vp8_in(pkt, len(data) - hdr.payload_start, d)  # type: ignore[arg-type]
                tw.sent.append((tseq, len(pkt) + SRTP_OVERHEAD, now, None))
        elif hdr.ext_profile and not self.ext_identity:
            # Viewers with the same id mapping share one re-encoding per packet.
            ext = self.receiver.remapped_extensions(data, hdr, self.ext_key, self.ext_map)  # type: ignore[union-attr]
            pkt = rtp.rewrite(
                data, hdr, payload_type=self.payload_type, seq=seq, timestamp=ts, ssrc=self.ssrc,
                extensions=ext,
            )
            if munge_vp8:
                pkt = self._munge_vp8_in(pkt, len(data) - hdr.payload_start, d)  # type: ignore[arg-type]
        elif munge_vp8:
            # Picture ID and TL0PICIDX continue across layer switches and dropped frames:
            # rewrite only the few descriptor bytes and join once (one payload copy).
            pid, tl0 = self.vp8.translate(d)  # type: ignore[union-attr, arg-type]
            start = hdr.payload_start
            end = start + d.size  # type: ignore[union-attr]
            desc = bytearray(data[start:end])
            write_fields(desc, 0, d, pid, tl0)  # type: ignore[arg-type]
            pkt = b"".join((
                _fixed_header(data[0], (data[1] & 0x80) | self.payload_type, seq, ts, self.ssrc),
                data[12:start], desc, memoryview(data)[end:],
            ))
        else:
            # The common case, inlined: a new fixed header in front of the rest (one copy).
            pkt = _fixed_header(
                data[0], (data[1] & 0x80) | self.payload_type, seq, ts, self.ssrc
            ) + data[12:]
        # RFC 3550 6.4.1: the SR octet count is payload octets (no header, no padding).
        self.stats.on_packet(hdr.payload_size, ts, now)
        return pkt

    def _temporal_at_frame(self, d: Vp8Descriptor) -> None:
        """At the start of a frame, bring the TID ceiling in force to what the preference and
        the allocator allow: down at once; up only on a frame the viewer can decode with
        what it has (a TL0 frame, or a layer-sync frame of a TID it may now have: it refers
        only to TL0), so a newly admitted frame never references one it was not sent."""
        want = self.max_temporal
        cap = self.allocated_temporal
        if cap is not None and cap < want:
            want = cap
        have = self.temporal
        if want == have:
            return
        tid = d.tid or 0
        if want < have or tid == 0 or (d.layer_sync and tid <= want):
            self.temporal = want
            self.temporal_switches += 1

    def _munge_vp8_in(self, pkt: bytes, tail: int, d: Vp8Descriptor) -> bytes:
        """`pkt` with its VP8 picture ID and TL0PICIDX translated; the payload (with its
        descriptor) is the last `tail` bytes, whatever header was built in front of it."""
        pid, tl0 = self.vp8.translate(d)  # type: ignore[union-attr]
        buf = bytearray(pkt)
        write_fields(buf, len(pkt) - tail, d, pid, tl0)
        return bytes(buf)

    def sender_report(self, source: SenderReport) -> SenderReport | None:
        """The publisher's SR translated to this down-track's SSRC and timeline."""
        if self.stats.packet_count == 0 or not self.munger.has_source:
            return None
        return SenderReport(
            ssrc=self.ssrc,
            ntp_timestamp=source.ntp_timestamp,
            rtp_timestamp=self.munger.translate_ts(source.rtp_timestamp),
            packet_count=self.stats.packet_count,
            octet_count=self.stats.octet_count,
            reports=[],
        )
