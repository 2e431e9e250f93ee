"""RTCP codec: owns the byte layout of RTCP packets and compound packets.

Covers sender/receiver reports, SDES (CNAME only), BYE (RFC 3550), generic NACK
and PLI (RFC 4585), FIR (RFC 5104), REMB (draft-alvestrand-rmcat-remb) and
transport-cc feedback (`sfu.wire.twcc.TransportFeedback`).
Anything else is kept as `UnknownRtcp` so it can be forwarded byte-exact.
Also owns the NTP timestamp helpers used by sender reports.

Parsing never raises anything but `RtcpError` on bad input. Encoding raises
`RtcpError` when a field does not fit its wire width instead of silently
truncating it, because a truncated SSRC or counter is a bug worth seeing.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sized
from dataclasses import dataclass

from sfu.wire.rtcperror import RtcpError
from sfu.wire.twcc import TransportFeedback

PT_SR = 200
PT_RR = 201
PT_SDES = 202
PT_BYE = 203
PT_RTPFB = 205
PT_PSFB = 206
FMT_NACK = 1
FMT_PLI = 1
FMT_FIR = 4
FMT_AFB = 15
FMT_TWCC = 15  # RTPFB transport-cc feedback (sfu.wire.twcc)
SDES_CNAME = 1

_NTP_UNIX_OFFSET = 2_208_988_800  # seconds from 1900-01-01 to 1970-01-01
_MAX_COUNT = 31  # RC/SC are 5-bit fields
_HEADER = struct.Struct("!BBH")
_U32 = struct.Struct("!I")
_TWO_U32 = struct.Struct("!II")
_SR_INFO = struct.Struct("!IQIII")
_REPORT_BLOCK = struct.Struct("!IIIIII")
_NACK_ITEM = struct.Struct("!HH")
_FIR_ITEM = struct.Struct("!IB3x")
_REMB_ID = b"REMB"


def _pack(st: struct.Struct, *values: int) -> bytes:
    try:
        return st.pack(*values)
    except struct.error as exc:
        raise RtcpError(f"cannot encode {values}: {exc}") from None


def _need(body: bytes, size: int, what: str) -> None:
    if len(body) < size:
        raise RtcpError(f"{what}: need {size} bytes of body, have {len(body)}")


def _count(items: Sized, what: str) -> int:
    if len(items) > _MAX_COUNT:
        raise RtcpError(f"{what}: {len(items)} items exceed the 5-bit count; split the packet")
    return len(items)


def _header(count: int, packet_type: int, body: bytes) -> bytes:
    if not 0 <= count <= _MAX_COUNT:
        raise RtcpError(f"count/fmt {count} does not fit in 5 bits")
    padded = False
    if len(body) % 4:
        # Only UnknownRtcp bodies can be unaligned (their padding was stripped on
        # parse); re-adding minimal padding keeps them byte-exact on the way out.
        pad = 4 - len(body) % 4
        body = body + b"\x00" * (pad - 1) + bytes([pad])
        padded = True
    first = 0x80 | (0x20 if padded else 0) | count
    return _pack(_HEADER, first, packet_type, len(body) // 4) + body


@dataclass(slots=True)
class ReportBlock:
    """One reception report block (RFC 3550 6.4.1); not a packet on its own."""

    ssrc: int
    fraction_lost: int
    packets_lost: int
    highest_seq: int
    jitter: int
    lsr: int
    dlsr: int

    def __bytes__(self) -> bytes:
        lost = max(-(1 << 23), min((1 << 23) - 1, self.packets_lost))
        # A fraction outside 0..255 overflows the 32-bit word, so _pack rejects it.
        word = self.fraction_lost << 24 | (lost & 0xFFFFFF)
        return _pack(
            _REPORT_BLOCK, self.ssrc, word, self.highest_seq, self.jitter, self.lsr, self.dlsr
        )

    @classmethod
    def _parse(cls, body: bytes, offset: int) -> ReportBlock:
        ssrc, word, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(body, offset)
        lost = word & 0xFFFFFF
        if lost & 0x800000:
            lost -= 1 << 24
        return cls(ssrc, word >> 24, lost, highest, jitter, lsr, dlsr)


def _parse_blocks(body: bytes, offset: int, count: int) -> list[ReportBlock]:
    return [ReportBlock._parse(body, offset + 24 * i) for i in range(count)]


@dataclass(slots=True)
class SenderReport:
    """SR, PT=200. Profile-specific extensions after the blocks are dropped on parse."""

    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: list[ReportBlock]

    def __bytes__(self) -> bytes:
        count = _count(self.reports, "SR report blocks")
        info = _pack(
            _SR_INFO,
            self.ssrc,
            self.ntp_timestamp,
            self.rtp_timestamp,
            self.packet_count,
            self.octet_count,
        )
        return _header(count, PT_SR, info + b"".join(bytes(r) for r in self.reports))

    @classmethod
    def _parse(cls, count: int, body: bytes) -> SenderReport:
        _need(body, 24 + 24 * count, f"SR with {count} report blocks")
        ssrc, ntp, rtp_ts, packets, octets = _SR_INFO.unpack_from(body, 0)
        return cls(ssrc, ntp, rtp_ts, packets, octets, _parse_blocks(body, 24, count))


@dataclass(slots=True)
class ReceiverReport:
    """RR, PT=201."""

    ssrc: int
    reports: list[ReportBlock]

    def __bytes__(self) -> bytes:
        count = _count(self.reports, "RR report blocks")
        body = _pack(_U32, self.ssrc) + b"".join(bytes(r) for r in self.reports)
        return _header(count, PT_RR, body)

    @classmethod
    def _parse(cls, count: int, body: bytes) -> ReceiverReport:
        _need(body, 4 + 24 * count, f"RR with {count} report blocks")
        return cls(_U32.unpack_from(body, 0)[0], _parse_blocks(body, 4, count))


@dataclass(slots=True)
class Sdes:
    """SDES, PT=202, as (ssrc, cname) chunks.

    Parsing skips non-CNAME items; a chunk without CNAME yields "". CNAME text
    is decoded with errors="replace" because a bad CNAME should not cost us the
    rest of the compound packet.
    """

    chunks: list[tuple[int, str]]

    def __bytes__(self) -> bytes:
        count = _count(self.chunks, "SDES chunks")
        out = bytearray()
        for ssrc, cname in self.chunks:
            text = cname.encode()
            if len(text) > 0xFF:
                raise RtcpError(f"CNAME of {len(text)} bytes exceeds 255")
            chunk = _pack(_U32, ssrc) + bytes([SDES_CNAME, len(text)]) + text
            # At least one null octet ends the item list, then pad to a word.
            out += chunk + b"\x00" * (4 - len(chunk) % 4)
        return _header(count, PT_SDES, bytes(out))

    @classmethod
    def _parse(cls, count: int, body: bytes) -> Sdes:
        chunks: list[tuple[int, str]] = []
        pos = 0
        for _ in range(count):
            _need(body, pos + 4, f"SDES chunk {len(chunks)}")
            ssrc = _U32.unpack_from(body, pos)[0]
            pos += 4
            cname: str | None = None
            while True:
                if pos >= len(body):
                    raise RtcpError(f"SDES chunk for ssrc {ssrc} has no terminating null item")
                item = body[pos]
                if item == 0:
                    pos = (pos + 4) & ~3
                    break
                if pos + 2 > len(body) or pos + 2 + body[pos + 1] > len(body):
                    raise RtcpError(f"SDES item type {item} truncated")
                end = pos + 2 + body[pos + 1]
                if item == SDES_CNAME and cname is None:
                    cname = body[pos + 2 : end].decode("utf-8", errors="replace")
                pos = end
            chunks.append((ssrc, cname or ""))
        return cls(chunks)


@dataclass(slots=True)
class Bye:
    """BYE, PT=203. An optional reason string is ignored on parse and never sent."""

    ssrcs: list[int]

    def __bytes__(self) -> bytes:
        count = _count(self.ssrcs, "BYE ssrcs")
        return _header(count, PT_BYE, b"".join(_pack(_U32, s) for s in self.ssrcs))

    @classmethod
    def _parse(cls, count: int, body: bytes) -> Bye:
        _need(body, 4 * count, f"BYE with {count} ssrcs")
        return cls([_U32.unpack_from(body, 4 * i)[0] for i in range(count)])


def sort_seqs(seqs: Iterable[int]) -> list[int]:
    """Deduplicate 16-bit sequence numbers and order them as they were sent.

    Ordering is by signed distance from the first element, so a run crossing
    65535 -> 0 stays in sending order. Runs wider than 2^15 are ambiguous.
    """
    items = list(dict.fromkeys(seqs))
    for seq in items:
        if not 0 <= seq <= 0xFFFF:
            raise RtcpError(f"sequence number {seq} does not fit in 16 bits")
    if not items:
        return []
    ref = items[0]
    return sorted(items, key=lambda s: ((s - ref + 0x8000) & 0xFFFF) - 0x8000)


@dataclass(slots=True)
class Nack:
    """Generic NACK, PT=205 FMT=1. `lost` is normalised with `sort_seqs` on construction."""

    sender_ssrc: int
    media_ssrc: int
    lost: list[int]

    def __post_init__(self) -> None:
        self.lost = sort_seqs(self.lost)

    def __bytes__(self) -> bytes:
        pairs: list[tuple[int, int]] = []
        for seq in self.lost:
            if pairs:
                pid, blp = pairs[-1]
                distance = (seq - pid) & 0xFFFF
                if 1 <= distance <= 16:
                    pairs[-1] = (pid, blp | 1 << (distance - 1))
                    continue
            pairs.append((seq, 0))
        body = _pack(_TWO_U32, self.sender_ssrc, self.media_ssrc)
        body += b"".join(_NACK_ITEM.pack(pid, blp) for pid, blp in pairs)
        return _header(FMT_NACK, PT_RTPFB, body)

    @classmethod
    def _parse(cls, body: bytes) -> Nack:
        _need(body, 8, "NACK")
        if (len(body) - 8) % 4:
            raise RtcpError(f"NACK FCI of {len(body) - 8} bytes is not a whole number of items")
        sender, media = _TWO_U32.unpack_from(body, 0)
        lost: list[int] = []
        for offset in range(8, len(body), 4):
            pid, blp = _NACK_ITEM.unpack_from(body, offset)
            lost.append(pid)
            lost.extend((pid + bit + 1) & 0xFFFF for bit in range(16) if blp >> bit & 1)
        return cls(sender, media, lost)


@dataclass(slots=True)
class Pli:
    """Picture Loss Indication, PT=206 FMT=1."""

    sender_ssrc: int
    media_ssrc: int

    def __bytes__(self) -> bytes:
        return _header(FMT_PLI, PT_PSFB, _pack(_TWO_U32, self.sender_ssrc, self.media_ssrc))

    @classmethod
    def _parse(cls, body: bytes) -> Pli:
        _need(body, 8, "PLI")
        sender, media = _TWO_U32.unpack_from(body, 0)
        return cls(sender, media)


@dataclass(slots=True)
class Fir:
    """Full Intra Request, PT=206 FMT=4; entries are (media ssrc, command seq nr)."""

    sender_ssrc: int
    entries: list[tuple[int, int]]

    def __bytes__(self) -> bytes:
        # RFC 5104 4.3.1.2: the common-header media SSRC SHALL be 0; targets live in the FCI.
        body = _pack(_TWO_U32, self.sender_ssrc, 0)
        body += b"".join(_pack(_FIR_ITEM, ssrc, seq_nr) for ssrc, seq_nr in self.entries)
        return _header(FMT_FIR, PT_PSFB, body)

    @classmethod
    def _parse(cls, body: bytes) -> Fir:
        _need(body, 8, "FIR")
        if (len(body) - 8) % 8:
            raise RtcpError(f"FIR FCI of {len(body) - 8} bytes is not a whole number of entries")
        entries = [_FIR_ITEM.unpack_from(body, off) for off in range(8, len(body), 8)]
        return cls(_U32.unpack_from(body, 0)[0], [(ssrc, nr) for ssrc, nr in entries])


@dataclass(slots=True)
class Remb:
    """REMB, PT=206 FMT=15. The bitrate is sent as an 18-bit mantissa and 6-bit
    exponent, so values above 2^18 bps lose their low bits (rounded down)."""

    sender_ssrc: int
    bitrate: int
    ssrcs: list[int]

    def __bytes__(self) -> bytes:
        if self.bitrate < 0:
            raise RtcpError(f"REMB bitrate {self.bitrate} is negative")
        if len(self.ssrcs) > 0xFF:
            raise RtcpError(f"REMB with {len(self.ssrcs)} ssrcs exceeds 255")
        exp, mantissa = 0, self.bitrate
        while mantissa >= 1 << 18:
            mantissa >>= 1
            exp += 1
        if exp > 63:
            raise RtcpError(f"REMB bitrate {self.bitrate} too large for a 6-bit exponent")
        body = _pack(_TWO_U32, self.sender_ssrc, 0) + _REMB_ID
        body += _U32.pack(len(self.ssrcs) << 24 | exp << 18 | mantissa)
        body += b"".join(_pack(_U32, s) for s in self.ssrcs)
        return _header(FMT_AFB, PT_PSFB, body)

    @classmethod
    def _parse(cls, body: bytes) -> Remb:
        _need(body, 16, "REMB")
        word = _U32.unpack_from(body, 12)[0]
        num = word >> 24
        _need(body, 16 + 4 * num, f"REMB with {num} ssrcs")
        ssrcs = [_U32.unpack_from(body, 16 + 4 * i)[0] for i in range(num)]
        bitrate = (word & 0x3FFFF) << (word >> 18 & 0x3F)
        return cls(_U32.unpack_from(body, 0)[0], bitrate, ssrcs)


@dataclass(slots=True)
class UnknownRtcp:
    """Any other RTCP packet (XR, APP, TMMBR, ...), body without header or padding."""

    packet_type: int
    fmt: int
    body: bytes

    def __bytes__(self) -> bytes:
        if not 0 <= self.packet_type <= 0xFF:
            raise RtcpError(f"packet type {self.packet_type} does not fit in 8 bits")
        return _header(self.fmt, self.packet_type, self.body)


RtcpPacket = (
    SenderReport | ReceiverReport | Sdes | Bye | Nack | Pli | Fir | Remb | TransportFeedback
    | UnknownRtcp
)


def _parse_one(count: int, packet_type: int, body: bytes) -> RtcpPacket:
    if packet_type == PT_SR:
        return SenderReport._parse(count, body)
    if packet_type == PT_RR:
        return ReceiverReport._parse(count, body)
    if packet_type == PT_SDES:
        return Sdes._parse(count, body)
    if packet_type == PT_BYE:
        return Bye._parse(count, body)
    if packet_type == PT_RTPFB and count == FMT_NACK:
        return Nack._parse(body)
    if packet_type == PT_RTPFB and count == FMT_TWCC:
        return TransportFeedback.parse(body)
    if packet_type == PT_PSFB:
        if count == FMT_PLI:
            return Pli._parse(body)
        if count == FMT_FIR:
            return Fir._parse(body)
        if count == FMT_AFB and body[8:12] == _REMB_ID:
            return Remb._parse(body)
    return UnknownRtcp(packet_type, count, body)


def parse_compound(data: bytes) -> list[RtcpPacket]:
    """Parse every packet of a compound RTCP packet.

    RFC 3550's "first packet must be SR/RR" rule is not enforced: reduced-size
    RTCP (RFC 5506) sends feedback on its own.
    """
    if not data:
        raise RtcpError("empty RTCP packet")
    data = bytes(data)
    packets: list[RtcpPacket] = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < 4:
            raise RtcpError(f"truncated RTCP header at offset {pos}: {len(data) - pos} bytes left")
        first, packet_type, words = _HEADER.unpack_from(data, pos)
        if first >> 6 != 2:
            raise RtcpError(f"bad RTCP version {first >> 6} at offset {pos}")
        end = pos + 4 + 4 * words
        if end > len(data):
            raise RtcpError(
                f"RTCP length field ({words} words) at offset {pos} runs past the "
                f"{len(data)}-byte buffer"
            )
        body = data[pos + 4 : end]
        if first & 0x20:
            pad = body[-1] if body else 0
            if pad == 0 or pad > len(body):
                raise RtcpError(f"bad RTCP padding count {pad} for a {len(body)}-byte body")
            body = body[:-pad]
        try:
            packets.append(_parse_one(first & 0x1F, packet_type, body))
        except (struct.error, IndexError) as exc:  # belt and braces behind the explicit checks
            raise RtcpError(f"malformed RTCP packet type {packet_type}: {exc}") from None
        pos = end
    return packets


def serialize_compound(packets: Iterable[RtcpPacket]) -> bytes:
    """Concatenate packets into one compound packet; ordering is the caller's job."""
    return b"".join(bytes(p) for p in packets)


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 demultiplexing: RTCP packet types 192..223 sit where RTP has M=1, PT 64..95."""
    return len(data) >= 2 and 192 <= data[1] <= 223


def ntp_from_unix(t: float) -> int:
    """64-bit NTP timestamp (32.32 fixed point since 1900) for a Unix time in seconds."""
    seconds = math.floor(t)
    fraction = round((t - seconds) * (1 << 32))
    return (((seconds + _NTP_UNIX_OFFSET) << 32) + fraction) & 0xFFFF_FFFF_FFFF_FFFF


def unix_from_ntp(ntp: int) -> float:
    """Unix time in seconds for a 64-bit NTP timestamp (era 0, i.e. before 2036)."""
    return (ntp >> 32) - _NTP_UNIX_OFFSET + (ntp & 0xFFFF_FFFF) / (1 << 32)


def ntp_middle32(ntp: int) -> int:
    """Middle 32 bits of an NTP timestamp: the LSR/DLSR unit of report blocks (1/65536 s)."""
    return (ntp >> 16) & 0xFFFF_FFFF
