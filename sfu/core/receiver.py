"""Receiver: one published track as the node receives it (one SSRC, one codec).

It keeps the receive statistics that become RTCP receiver reports, notices keyframes, throttles
keyframe requests upstream, and holds the down-tracks that forward its packets. It never sends:
the caller asks it what to do and does the I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sfu.core.keyframe import KeyframeRequester
from sfu.core.rtpstats import ReceiveStats
from sfu.sdp import Codec, Extmap
from sfu.wire.codec import is_keyframe
from sfu.wire.rtcp import ReportBlock
from sfu.wire.rtp import RtpHeader, remap_extensions


@dataclass(slots=True)
class TrackInfo:
    """What subscribers and room clients learn about a published track."""

    track_id: str
    kind: str  # "audio" or "video"
    participant: str
    stream_id: str
    codec: Codec
    extmaps: list[Extmap] = field(default_factory=list)

    def public(self) -> dict[str, str]:
        return {
            "track_id": self.track_id,
            "kind": self.kind,
            "participant": self.participant,
            "stream_id": self.stream_id,
            "codec": self.codec.name,
        }


class Receiver:
    """One incoming RTP stream and the down-tracks fed from it."""

    def __init__(self, info: TrackInfo, *, keyframe_interval: float = 0.5) -> None:
        self.info = info
        self.ssrc: int | None = None
        self.is_video = info.kind == "video"
        self.codec_name = info.codec.name
        self.payload_type = info.codec.payload_type
        self.stats = ReceiveStats(info.codec.clock_rate)
        self.keyframes = KeyframeRequester(min_interval=keyframe_interval)
        self.downtracks: list[Any] = []  # DownTrack (typed loosely: it imports this module)
        self.last_keyframe_at: float | None = None
        self.last_packet_at: float | None = None
        self.last_sr: tuple[int, int] | None = None  # (ntp, rtp timestamp) of the last SR
        self._ext_packet: bytes | None = None
        self._ext_cache: dict[tuple[tuple[int, int], ...], tuple[int, bytes]] = {}
        self.upstream: Any = None  # the publishing session; the shell sends PLI/RR through it

    def on_rtp(self, data: bytes, hdr: RtpHeader, now: float) -> bool:
        """Account for one packet; returns True when it starts a keyframe."""
        self.stats.on_packet(hdr.seq, hdr.timestamp, now, len(data))
        self.last_packet_at = now
        if not self.is_video:
            return False
        key = is_keyframe(self.codec_name, memoryview(data)[hdr.payload_start : hdr.payload_end])
        if key:
            self.last_keyframe_at = now
            self.keyframes.keyframe_received(now)
        return key

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

    def request_keyframe(self, now: float) -> bool:
        """A subscriber (or a join) wants a keyframe: True if a PLI must go upstream now."""
        if not self.is_video:
            return False
        return self.keyframes.request(now)

    def report_block(self, now: float) -> ReportBlock | None:
        if self.ssrc is None or self.stats.packets == 0:
            return None
        return self.stats.report_block(self.ssrc, now)
