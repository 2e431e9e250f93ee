"""DownTrack: one published track as one subscriber receives it.

It owns the subscriber-facing SSRC, the payload-type and header-extension mapping, and the
seq/timestamp munger. `forward` decides per packet: drop, or the rewritten bytes to send.
Video starts on a keyframe so a subscriber's decoder never sees a stream it cannot decode.
"""

from __future__ import annotations

import struct
from typing import Any

from sfu.core.munger import RtpMunger
from sfu.core.receiver import Receiver
from sfu.core.rtpstats import SendStats
from sfu.wire import rtp
from sfu.wire.rtcp import SenderReport
from sfu.wire.rtp import RtpHeader

_fixed_header = struct.Struct("!BBHII").pack


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
        """Start forwarding `receiver` on this slot (first bind or a new source)."""
        if self.munger.has_source:
            # A new source (even after an unbind): continue this slot's seq/ts timeline.
            self.munger.switch_source(now)
        self.receiver = receiver
        self.payload_type = payload_type
        self.ext_map = ext_map
        self.ext_key = tuple(sorted(ext_map.items()))
        self.ext_identity = all(k == v for k, v in ext_map.items()) and set(
            ext_map
        ) == publisher_ext_ids
        self.awaiting_keyframe = self.kind == "video"

    def resume(self) -> None:
        """The subscriber can receive now: start (again) from a keyframe."""
        self.paused = False
        self.awaiting_keyframe = self.kind == "video"

    def unbind(self) -> None:
        self.receiver = None

    def forward(self, data: bytes, hdr: RtpHeader, keyframe: bool, now: float) -> bytes | None:
        """The packet to send to the subscriber, or None to drop it."""
        if self.paused:
            return None
        if self.awaiting_keyframe:
            if not keyframe:
                self.dropped_waiting += 1
                return None
            self.awaiting_keyframe = False
        out = self.munger.rewrite(hdr.seq, hdr.timestamp, now)
        if out is None:
            return None
        seq, ts = out
        if hdr.ext_profile and not self.ext_identity:
            # Viewers with the same id mapping share one re-encoding per packet.
            ext = self.receiver.remapped_extensions(data, hdr, self.ext_key, self.ext_map)  # type: ignore[union-attr]
            pkt = rtp.rewrite(
                data, hdr, payload_type=self.payload_type, seq=seq, timestamp=ts, ssrc=self.ssrc,
                extensions=ext,
            )
        else:
            # The common case, inlined: a new fixed header in front of the rest (one copy).
            pkt = _fixed_header(
                data[0], (data[1] & 0x80) | self.payload_type, seq, ts, self.ssrc
            ) + data[12:]
        # RFC 3550 6.4.1: the SR octet count is payload octets (no header, no padding).
        self.stats.on_packet(hdr.payload_size, ts, now)
        return pkt

    def sender_report(self, source: SenderReport) -> SenderReport | None:
        """The publisher's SR translated to this down-track's SSRC and timeline."""
        if self.stats.packet_count == 0:
            return None
        return SenderReport(
            ssrc=self.ssrc,
            ntp_timestamp=source.ntp_timestamp,
            rtp_timestamp=self.munger.translate_ts(source.rtp_timestamp),
            packet_count=self.stats.packet_count,
            octet_count=self.stats.octet_count,
            reports=[],
        )
