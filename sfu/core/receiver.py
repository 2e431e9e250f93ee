"""Receiver: one published track as the node receives it (one SSRC, one codec).

It keeps the receive statistics that become RTCP receiver reports, notices keyframes, throttles
keyframe requests upstream, and holds the down-tracks that forward its packets. It never sends:
the caller asks it what to do and does the I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sfu.core.fecingress import FecIngress
from sfu.core.keyframe import KeyframeRequester
from sfu.core.nack import NackGenerator, UpstreamNackAggregator
from sfu.core.redundancy import RedRecovery
from sfu.core.rtpstats import ReceiveStats
from sfu.sdp import Codec, Extmap
from sfu.wire.codec import VP8, is_keyframe
from sfu.wire.rtcp import ReportBlock
from sfu.wire.rtp import RtpHeader, remap_extensions
from sfu.wire.vp8 import Vp8Descriptor, keyframe_size, parse_descriptor


@dataclass(slots=True)
class TrackInfo:
    """What subscribers and room clients learn about a published track."""

    track_id: str
    kind: str  # "audio" or "video"
    participant: str
    stream_id: str
    codec: Codec
    extmaps: list[Extmap] = field(default_factory=list)
    # What the track shows, as the publisher labelled it ("camera", "screen", "microphone"),
    # from the room protocol offer's `sources`; None when unlabelled.
    source: str | None = None

    def public(self) -> dict[str, str]:
        out = {
            "track_id": self.track_id,
            "kind": self.kind,
            "participant": self.participant,
            "stream_id": self.stream_id,
            "codec": self.codec.name,
        }
        if self.source is not None:
            out["source"] = self.source
        return out


# Quality order of common simulcast RID names, used until key frames reveal the real sizes.
_RID_RANK = {"q": 0, "h": 1, "f": 2, "low": 0, "mid": 1, "high": 2, "0": 0, "1": 1, "2": 2}
_LMH_RANK = {"l": 0, "m": 1, "h": 2}
LAYER_HORIZON = 0.35  # a layer with no packet for this long is treated as stopped


class Receiver:
    """One incoming RTP stream and the down-tracks fed from it.

    A simulcast track has one Receiver per layer. The first one (layer 0 in SDP order) is the
    track's `primary`: the room routes by it, and its `layers` lists every layer. Down-tracks
    sit in the `downtracks` list of the layer they currently forward, and in `pending` of a
    layer they are waiting to switch to on its next key frame.
    """

    def __init__(
        self,
        info: TrackInfo,
        *,
        layer: int = 0,
        rid: str | None = None,
        keyframe_interval: float = 0.5,
    ) -> None:
        self.info = info
        self.layer = layer
        self.rid = rid
        self.layers: list[Receiver] = [self]
        self.primary: Receiver = self
        self.pending: list[Any] = []
        self.vp8: Vp8Descriptor | None = None  # descriptor of the packet being handled
        self.frame_size: tuple[int, int] | None = None  # from the last VP8 key frame
        # VP8 temporal layers: bytes received per TID (the allocator measures each temporal
        # layer's share from these) and how many TIDs the encoder uses (0: none signalled)
        self.tid_bytes = [0, 0, 0, 0]
        self.temporal_layers = 0
        self.paused = False  # dynacast: no viewer needs this layer
        # loss recovery from the publisher (enable_nack): NACK generator, one upstream NACK
        # however many viewers ask, and the publisher's RTX stream
        self.nack: NackGenerator | None = None
        self.upstream_nacks: UpstreamNackAggregator | None = None
        self.rtx_payload_type: int | None = None
        self.rtx_ssrc: int | None = None
        # RED from the publisher (enable_red): Opus RED passed through, or video RED (+ULPFEC,
        # unwrapped and repaired by `fec_ingress`); RTX of RED packets comes with
        # `red_rtx_payload_type`.
        self.red_payload_type: int | None = None
        self.ulpfec_payload_type: int | None = None
        self.red_rtx_payload_type: int | None = None
        self._fec: FecIngress | None = None
        self.red_recovery: RedRecovery | None = None
        self.ssrc: int | None = None
        self.is_video = info.kind == "video"
        self.codec_name = info.codec.name
        self.payload_type = info.codec.payload_type
        self.stats = ReceiveStats(info.codec.clock_rate)
        self.keyframes = KeyframeRequester(min_interval=keyframe_interval)
        self.downtracks: list[Any] = []  # DownTrack (typed loosely: it imports this module)
        self.last_keyframe_at: float | None = None
        # a key frame asked for before a PLI could be addressed (no SSRC or publisher yet)
        self.keyframe_wanted_at: float | None = None
        self.last_packet_at: float | None = None
        self.last_sr: tuple[int, int] | None = None  # (ntp, rtp timestamp) of the last SR
        self._ext_packet: bytes | None = None
        self._ext_cache: dict[tuple[tuple[int, int], ...], tuple[int, bytes]] = {}
        self.upstream: Any = None  # the publishing session; the shell sends PLI/RR through it
        # Cascade (sfu.cascade.feed): told of every packet accepted, after loss recovery,
        # as (plain packet, header, is a late retransmission, now); None when not relayed.
        self.relay: Callable[[bytes, RtpHeader, bool, float], None] | None = None

    def on_rtp(self, data: bytes, hdr: RtpHeader, now: float) -> bool:
        """Account for one packet; returns True when it starts a keyframe."""
        self.stats.on_packet(hdr.seq, hdr.timestamp, now, len(data))
        self.last_packet_at = now
        return self.inspect(data, hdr, now)

    def accept(self, data: bytes, hdr: RtpHeader, now: float, *, late: bool) -> bool:
        """One media packet to forward (from the publisher, or relayed over the cascade):
        accounted, a pending layer promoted on its keyframe, and the NACK generator told.
        Returns whether the down-tracks may start on it. A `late` copy (a retransmission)
        never starts one: what follows it on the wire is newer, so a decoder would get a
        broken key frame."""
        key = self.on_rtp(data, hdr, now)
        if late:
            key = False
        elif key and self.pending:
            self.promote_pending(now)
        if self.nack is not None:
            self.nack.on_packet(hdr.seq, now, is_keyframe=key, is_retransmission=late)
        return key

    def account(self, hdr: RtpHeader, size: int, now: float) -> None:
        """Receive statistics only: a packet as it came over the wire (RED, FEC), whose
        media, if any, goes through `inspect` once unwrapped."""
        self.stats.on_packet(hdr.seq, hdr.timestamp, now, size)
        self.last_packet_at = now

    def inspect(self, data: bytes, hdr: RtpHeader, now: float) -> bool:
        """A plain media packet's codec-level facts; True when it starts a keyframe."""
        if not self.is_video:
            return False
        payload = memoryview(data)[hdr.payload_start : hdr.payload_end]
        if self.codec_name == VP8:
            d = self.vp8 = parse_descriptor(payload)
            if d is not None and d.tid is not None:
                self.tid_bytes[d.tid] += len(data)
                if d.tid >= self.temporal_layers:
                    self.temporal_layers = d.tid + 1
            key = d is not None and d.begins_frame and len(payload) > d.size and not (
                payload[d.size] & 0x01
            )
            if key and d is not None:
                self.frame_size = keyframe_size(payload, d) or self.frame_size
        else:
            key = is_keyframe(self.codec_name, payload)
        if key:
            self.last_keyframe_at = now
            self.keyframes.keyframe_received(now)
        return key

    def enable_nack(self, rtx_payload_type: int | None) -> None:
        """The publisher answers NACKs (on RTX when `rtx_payload_type` is set)."""
        self.nack = NackGenerator()
        self.upstream_nacks = UpstreamNackAggregator(generator=self.nack)
        self.rtx_payload_type = rtx_payload_type

    def enable_red(self, red_pt: int, ulpfec_pt: int | None, red_rtx_pt: int | None) -> None:
        """The publisher sends RED (`red_pt`), with ULPFEC inside it when `ulpfec_pt` is set
        (video: rebuilt here), and retransmits RED packets with `red_rtx_pt`."""
        self.red_payload_type = red_pt
        self.ulpfec_payload_type = ulpfec_pt
        self.red_rtx_payload_type = red_rtx_pt
        if not self.is_video:
            self.red_recovery = RedRecovery()

    def fec_ingress(self, ssrc: int) -> FecIngress:
        """RED/ULPFEC handling of this video stream (made on its first RED packet: the SSRC
        may be learnt only then)."""
        ing = self._fec
        if ing is None or ing.ssrc != ssrc:
            ing = self._fec = FecIngress(ssrc, self.ulpfec_payload_type)
        return ing

    def is_rtx_payload_type(self, pt: int) -> bool:
        return pt == self.rtx_payload_type or (pt == self.red_rtx_payload_type
                                               and pt is not None)

    # --- simulcast -----------------------------------------------------------------------

    @property
    def simulcast(self) -> bool:
        return len(self.primary.layers) > 1

    def add_layer(self, layer: Receiver) -> None:
        """Attach another simulcast layer of this (primary) receiver's track."""
        layer.primary = self
        layer.upstream = self.upstream
        if self.nack is not None:
            layer.enable_nack(self.rtx_payload_type)
        if self.red_payload_type is not None:
            layer.enable_red(self.red_payload_type, self.ulpfec_payload_type,
                             self.red_rtx_payload_type)
        self.layers.append(layer)

    def available(self, now: float) -> bool:
        return self.last_packet_at is not None and now - self.last_packet_at < LAYER_HORIZON

    def ranked(self) -> list[Receiver]:
        """The track's layers from lowest to highest quality."""
        layers = self.primary.layers
        if len(layers) == 1:
            return layers
        if all(la.frame_size is not None for la in layers):
            return sorted(layers, key=lambda la: (la.frame_size or (0, 0)), reverse=False)
        rids = [la.rid for la in layers]
        table = _LMH_RANK if set(rids) == set(_LMH_RANK) else _RID_RANK
        if all(r is not None and r.lower() in table for r in rids):
            return sorted(layers, key=lambda la: table[(la.rid or "").lower()])
        return list(layers)

    def promote_pending(self, now: float) -> None:
        """This layer's key frame arrived: down-tracks waiting for it switch now."""
        waiting, self.pending = self.pending, []
        for dt in waiting:
            dt.switch_to(self, now)

    def remapped_extensions(
        self, data: bytes, hdr: RtpHeader, key: tuple[tuple[int, int], ...], id_map: dict[int, int]
    ) -> tuple[int, bytes]:
        """The packet's extension block renumbered for `id_map`, computed once per packet."""
        if self._ext_packet is not data:
            self._ext_packet = data
            self._ext_cache.clear()
        block = self._ext_cache.get(key)
        if block is None:
            block = self._ext_cache[key] = remap_extensions(data, hdr, id_map)
        return block

    def on_sender_report(self, ntp: int, rtp_ts: int, now: float) -> None:
        self.stats.on_sender_report(ntp, now)
        self.last_sr = (ntp, rtp_ts)

    def rtp_timestamp_at(self, now: float) -> int | None:
        """The RTP timestamp this stream would carry at ``now`` (same clock as ``on_rtp``):
        the newest packet's timestamp plus the time since it arrived, in clock-rate units.
        None before the first packet. Used to stamp a pinned product card with the video
        frame on screen at the pin instant."""
        stats = self.stats
        if self.last_packet_at is None or stats.packets == 0:
            return None
        clock = self.info.codec.clock_rate
        arrived = stats._last_arrival / clock
        elapsed = max(0.0, now - arrived)
        return (stats._last_ts + round(elapsed * clock)) % (1 << 32)

    def request_keyframe(self, now: float) -> bool:
        """A subscriber (or a join) wants a keyframe: True if a PLI must go upstream now."""
        if not self.is_video:
            return False
        return self.keyframes.request(now)

    def report_block(self, now: float) -> ReportBlock | None:
        if self.ssrc is None or self.stats.packets == 0:
            return None
        return self.stats.report_block(self.ssrc, now)
