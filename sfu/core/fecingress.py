"""FecIngress: one publisher video stream sent as RED with ULPFEC, back to plain media.

Chromium sends every video packet in RED once red+ulpfec is answered, with ULPFEC packets
(RED blocks of the ulpfec payload type) in the same SSRC and seq space. Per packet this
decides, without I/O, what the shell does:

* `Forward` steps: plain media packets to hand to the down-tracks, in order: the packet's
  own primary, then any packet the FEC decoder rebuilt with it (flagged `recovered`; never a
  key frame start, since newer packets already went out);
* `Skip` steps: publisher seqs that carry nothing for viewers, the FEC packet's own and any
  lost FEC seqs `FecGaps` identifies, each to be closed (or padded) in every viewer's seq
  space BEFORE the next `Forward`, so a gap ahead closes instead of leaving a hole.

It also keeps the stream's NACK generator (the Receiver's) in step: rebuilt seqs and FEC
seqs are not missing any more, and the wire packet itself counts as received.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from sfu.core.fec import FecDecoder, FecGaps
from sfu.core.nack import NackGenerator
from sfu.wire import ulpfec
from sfu.wire.rtp import RtpHeader, parse_header
from sfu.wire.ulpfec import FecPacket
from sfu.wire.vp8 import Vp8Descriptor


class PacketInspector(Protocol):
    """What FecIngress needs of the Receiver: its codec look at a plain packet (True when it
    starts a key frame), which leaves the packet's VP8 descriptor in `vp8`."""

    vp8: Vp8Descriptor | None

    def inspect(self, data: bytes, hdr: RtpHeader, now: float) -> bool: ...


@dataclass(slots=True)
class Forward:
    data: bytes
    hdr: RtpHeader
    keyframe: bool
    recovered: bool


@dataclass(slots=True)
class Skip:
    seqs: list[tuple[int, int]]  # (publisher seq, a timestamp for a padding packet)
    lost: int  # how many of them were lost FEC packets


@dataclass(slots=True)
class Actions:
    steps: list[Forward | Skip] = field(default_factory=list)
    fec: bool = False  # the packet was an FEC packet
    keyframe: bool = False  # its primary starts a key frame


class FecIngress:
    """RED (+ULPFEC) from one publisher SSRC. Counters: `fec_in`, `recovered`, `lost_fec`."""

    def __init__(self, ssrc: int, ulpfec_pt: int | None) -> None:
        self.ssrc = ssrc
        self.ulpfec_pt = ulpfec_pt
        self.decoder = FecDecoder(ssrc)
        self.gaps = FecGaps()
        self.fec_in = 0
        self.recovered = 0
        self.lost_fec = 0

    def on_packet(self, data: bytes, hdr: RtpHeader, retransmission: bool, now: float, *,
                  inspect: PacketInspector, nack: NackGenerator | None) -> Actions:
        """Raises RtpError (RedError, FecError) when the RED or FEC payload is malformed."""
        start, end = hdr.payload_start, hdr.payload_end
        fec: FecPacket | None = None
        if end > start and data[start] == self.ulpfec_pt:
            # ULPFEC: always a primary-only RED block (F bit clear), never forwarded.
            fec = ulpfec.decode(memoryview(data)[start + 1 : end])
            outs = self.decoder.on_fec(fec, now)
        else:
            outs = self.decoder.on_red(data, -1, now, retransmission)
        act = Actions(fec=fec is not None)
        if fec is not None:
            self.fec_in += 1
            lost = self.gaps.on_packet(hdr.seq, hdr.timestamp, fec=fec)
            self._skip(act, [*lost, (hdr.seq, hdr.timestamp)], len(lost), nack, now)
        for i, pkt in enumerate(outs):
            ph = parse_header(pkt)
            primary = i == 0 and fec is None
            key = inspect.inspect(pkt, ph, now)
            if primary:
                key = key and not retransmission
                act.keyframe = key
            else:
                key = False
                self.recovered += 1
                if nack is not None:
                    nack.on_packet(ph.seq, now, is_retransmission=True)
            d = inspect.vp8
            lost = self.gaps.on_packet(
                ph.seq, ph.timestamp, marker=ph.marker,
                begins_frame=d is not None and d.begins_frame,
                picture_id=d.picture_id if d is not None else None,
                picture_id_bits=d.picture_id_bits if d is not None else 15)
            if lost:
                self._skip(act, lost, len(lost), nack, now)
            act.steps.append(Forward(pkt, ph, key, not primary))
        if nack is not None:
            nack.on_packet(hdr.seq, now, is_keyframe=act.keyframe,
                           is_retransmission=retransmission)
        return act

    def _skip(self, act: Actions, seqs: list[tuple[int, int]], lost: int,
              nack: NackGenerator | None, now: float) -> None:
        self.lost_fec += lost
        act.steps.append(Skip(seqs, lost))
        if nack is not None:
            for seq, _ in seqs:
                nack.on_packet(seq, now)  # nobody resends FEC: never NACK it
