"""Transport-wide congestion control: the feedback message and the sequence-number extension.

Owns the byte layout of draft-holmer-rmcat-transport-wide-cc-extensions-01:

* the RTP header extension (URI `TRANSPORT_CC_URI`) carrying a 16-bit big-endian transport-wide
  sequence number that the sender stamps on every packet of the transport;
* the feedback message, RTPFB PT=205 FMT=15, that the receiver returns:

    sender SSRC | media SSRC | base seq (16) | status count (16) | reference time (24, signed in
    the draft, kept unsigned here, units of 64 ms) | feedback packet count (8) | status chunks |
    receive deltas | padding

  Status chunks are 16 bits each: a run-length chunk (0 | symbol:2 | run:13), a one-bit status
  vector (1 0 | 14 symbols of 1 bit: 0 not received, 1 small delta) or a two-bit status vector
  (1 1 | 7 symbols of 2 bits: 0 not received, 1 small delta, 2 large or negative delta,
  3 reserved). A small delta is 1 unsigned byte, a large delta 2 signed bytes, both in 250 us.
  The first received packet's delta is relative to reference time * 64 ms, every other one to
  the previous received packet of the message.

`TransportFeedback` models the message as the list of packets it reports; which chunks carry the
statuses is an encoding detail (the encoder packs them the way libwebrtc does, so Chrome and Pion
read what we send as they read each other's). Parsing raises only `RtcpError`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from sfu.wire.rtcperror import RtcpError
from sfu.wire.rtp import ONE_BYTE_PROFILE, TWO_BYTE_PROFILE, TWO_BYTE_PROFILE_MASK, RtpHeader

TRANSPORT_CC_URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
PT_RTPFB = 205
FMT_TWCC = 15

DELTA_UNIT = 0.000250  # seconds per receive-delta tick
REFERENCE_UNIT = 0.064  # seconds per reference-time tick
TICKS_PER_REFERENCE = 256  # 64 ms / 250 us
MAX_STATUS_COUNT = 0xFFFF
MAX_RUN_LENGTH = 0x1FFF
SMALL_DELTA_MAX = 0xFF
LARGE_DELTA_MIN = -0x8000
LARGE_DELTA_MAX = 0x7FFF

# Status symbols (two-bit vector values; the one-bit vector uses the first two).
NOT_RECEIVED = 0
SMALL_DELTA = 1
LARGE_DELTA = 2
_RESERVED = 3

_FIXED = struct.Struct("!IIHHI")  # ssrcs, base seq, status count, reference time << 8 | fb count
_HEADER = struct.Struct("!BBH")
_U16 = struct.Struct("!H")
_I16 = struct.Struct("!h")
_ONE_BIT_CAPACITY = 14
_TWO_BIT_CAPACITY = 7


@dataclass(slots=True)
class TransportFeedback:
    """One transport-cc feedback message.

    `packets` lists every transport sequence number the message covers, in order from
    `base_seq`: (seq, delta) with delta the receive delta in 250 us ticks (see the module
    docstring for what it is relative to), or None for a packet not received.
    """

    sender_ssrc: int
    media_ssrc: int
    base_seq: int
    reference_time: int  # 24 bits, multiples of 64 ms
    fb_pkt_count: int  # 8 bits, wraps
    packets: list[tuple[int, int | None]] = field(default_factory=list)

    @property
    def status_count(self) -> int:
        return len(self.packets)

    def received(self) -> list[tuple[int, float]]:
        """(seq, arrival time in seconds on the feedback sender's clock) of received packets."""
        ticks = self.reference_time * TICKS_PER_REFERENCE
        out: list[tuple[int, float]] = []
        for seq, delta in self.packets:
            if delta is not None:
                ticks += delta
                out.append((seq, ticks * DELTA_UNIT))
        return out

    # --- encoding --------------------------------------------------------------------------

    def serialize(self) -> bytes:
        """The whole RTCP packet (header, body, padding). Raises RtcpError if a field does not fit."""
        count = len(self.packets)
        if count > MAX_STATUS_COUNT:
            raise RtcpError(f"transport-cc with {count} statuses exceeds 16 bits; split it")
        if not 0 <= self.reference_time <= 0xFFFFFF:
            raise RtcpError(f"reference time {self.reference_time} does not fit in 24 bits")
        if not 0 <= self.fb_pkt_count <= 0xFF:
            raise RtcpError(f"feedback packet count {self.fb_pkt_count} does not fit in 8 bits")
        if not 0 <= self.base_seq <= 0xFFFF:
            raise RtcpError(f"base sequence number {self.base_seq} does not fit in 16 bits")
        symbols: list[int] = []
        deltas = bytearray()
        for i, (seq, delta) in enumerate(self.packets):
            if seq != (self.base_seq + i) & 0xFFFF:
                raise RtcpError(
                    f"packet {i} has seq {seq}, expected {(self.base_seq + i) & 0xFFFF}: "
                    "packets must be consecutive from base_seq"
                )
            if delta is None:
                symbols.append(NOT_RECEIVED)
            elif 0 <= delta <= SMALL_DELTA_MAX:
                symbols.append(SMALL_DELTA)
                deltas.append(delta)
            elif LARGE_DELTA_MIN <= delta <= LARGE_DELTA_MAX:
                symbols.append(LARGE_DELTA)
                deltas += _I16.pack(delta)
            else:
                raise RtcpError(f"receive delta {delta} (x250 us) does not fit in 16 bits")
        try:
            fixed = _FIXED.pack(
                self.sender_ssrc,
                self.media_ssrc,
                self.base_seq,
                count,
                self.reference_time << 8 | self.fb_pkt_count,
            )
        except struct.error as exc:
            raise RtcpError(f"cannot encode transport-cc header: {exc}") from None
        body = fixed + _encode_chunks(symbols) + deltas
        # RFC 3550 padding (P bit, last octet = count), as libwebrtc and Pion write it.
        pad = -len(body) % 4
        first = 0x80 | FMT_TWCC
        if pad:
            body += b"\x00" * (pad - 1) + bytes([pad])
            first |= 0x20
        return _HEADER.pack(first, PT_RTPFB, len(body) // 4) + body

    def __bytes__(self) -> bytes:
        return self.serialize()

    # --- decoding --------------------------------------------------------------------------

    @classmethod
    def parse(cls, body: bytes) -> TransportFeedback:
        """Decode the body of a PT=205 FMT=15 packet (after the 4-byte header, padding removed).

        Up to 3 trailing bytes are tolerated (zero padding written without the P bit).
        Symbols of the last chunk beyond the status count are ignored, as the draft allows.
        """
        n = len(body)
        if n < _FIXED.size:
            raise RtcpError(f"transport-cc: need {_FIXED.size} bytes of body, have {n}")
        sender, media, base, count, word = _FIXED.unpack_from(body, 0)
        symbols: list[int] = []
        pos = _FIXED.size
        while len(symbols) < count:
            if pos + 2 > n:
                raise RtcpError(
                    f"transport-cc: status chunks end after {len(symbols)} of {count} statuses"
                )
            chunk = body[pos] << 8 | body[pos + 1]
            pos += 2
            if not chunk & 0x8000:
                run = min(chunk & MAX_RUN_LENGTH, count - len(symbols))
                symbols.extend([chunk >> 13 & 0x3] * run)
            elif not chunk & 0x4000:
                symbols.extend(chunk >> shift & 0x1 for shift in range(13, -1, -1))
            else:
                symbols.extend(chunk >> shift & 0x3 for shift in range(12, -1, -2))
        packets: list[tuple[int, int | None]] = []
        for i in range(count):
            symbol = symbols[i]
            seq = (base + i) & 0xFFFF
            if symbol == NOT_RECEIVED:
                packets.append((seq, None))
            elif symbol == SMALL_DELTA:
                if pos >= n:
                    raise RtcpError(f"transport-cc: receive delta of seq {seq} truncated")
                packets.append((seq, body[pos]))
                pos += 1
            elif symbol == LARGE_DELTA:
                if pos + 2 > n:
                    raise RtcpError(f"transport-cc: large receive delta of seq {seq} truncated")
                packets.append((seq, _I16.unpack_from(body, pos)[0]))
                pos += 2
            else:
                raise RtcpError(f"transport-cc: reserved status symbol for seq {seq}")
        if n - pos > 3:
            raise RtcpError(f"transport-cc: {n - pos} unexpected bytes after the receive deltas")
        return cls(sender, media, base, word >> 8, word & 0xFF, packets)


def _run_chunk(symbol: int, run: int) -> bytes:
    return _U16.pack(symbol << 13 | run)


def _vector_chunk(symbols: list[int]) -> bytes:
    """A one-bit vector when every symbol fits in a bit and there are more than 7, else two-bit."""
    word = 0
    if len(symbols) > _TWO_BIT_CAPACITY:
        for s in symbols[:_ONE_BIT_CAPACITY]:
            word = word << 1 | s
        word <<= _ONE_BIT_CAPACITY - min(len(symbols), _ONE_BIT_CAPACITY)
        return _U16.pack(0x8000 | word)
    for s in symbols:
        word = word << 2 | s
    word <<= 2 * (_TWO_BIT_CAPACITY - len(symbols))
    return _U16.pack(0xC000 | word)


def _encode_chunks(symbols: list[int]) -> bytes:
    """Pack status symbols into chunks with libwebrtc's greedy rule (transport_feedback.cc
    LastChunk): grow the open chunk while a two-bit vector (7), a one-bit vector (14, no large
    deltas) or a run (8191 equal symbols) can still hold it; when it cannot, emit a run if all
    symbols are equal, a one-bit vector if it holds 14, else a two-bit vector of the first 7
    and keep the rest open."""
    out = bytearray()
    buf: list[int] = []  # the open chunk's first (up to 14) symbols
    size = 0
    all_same = True
    has_large = False
    for s in symbols:
        if not (
            size < _TWO_BIT_CAPACITY
            or (size < _ONE_BIT_CAPACITY and not has_large and s != LARGE_DELTA)
            or (size < MAX_RUN_LENGTH and all_same and buf[0] == s)
        ):
            if all_same:
                out += _run_chunk(buf[0], size)
                buf, size = [], 0
            elif size == _ONE_BIT_CAPACITY:
                out += _vector_chunk(buf)
                buf, size = [], 0
            else:
                out += _vector_chunk(buf[:_TWO_BIT_CAPACITY])
                buf = buf[_TWO_BIT_CAPACITY:size]
                size = len(buf)
            all_same = all(x == buf[0] for x in buf)
            has_large = LARGE_DELTA in buf
        if size < _ONE_BIT_CAPACITY:
            buf.append(s)
        size += 1
        all_same = all_same and s == buf[0]
        has_large = has_large or s == LARGE_DELTA
    if size:
        out += _run_chunk(buf[0], size) if all_same else _vector_chunk(buf)
    return bytes(out)


# --- the transport-wide sequence number header extension -------------------------------------


def pack_transport_seq(seq: int) -> bytes:
    """The extension element's value: the sequence number modulo 2^16, big-endian."""
    return _U16.pack(seq & 0xFFFF)


def unpack_transport_seq(value: bytes) -> int | None:
    """The sequence number in an element's value, or None when it is not 2 bytes long."""
    if len(value) != 2:
        return None
    return value[0] << 8 | value[1]


def read_transport_seq(data: bytes, hdr: RtpHeader, ext_id: int) -> int | None:
    """The transport-wide sequence number of a packet, or None when it carries none.

    A specialised `rtp.get_extension` (via `transport_seq_offset`): it walks the extension
    block in place and builds no list, because it runs on every packet a publisher sends.
    Malformed blocks read as None.
    """
    at = transport_seq_offset(data, hdr, ext_id)
    return None if at is None else data[at] << 8 | data[at + 1]


NO_EXTENSIONS: tuple[int, bytes] = (0, b"")
_ONE_BYTE_ELEMENT = struct.Struct("!BHx").pack  # id/len, seq, one padding byte
_TWO_BYTE_ELEMENT = struct.Struct("!BBH").pack  # id, len, seq


def add_transport_seq(ext: tuple[int, bytes], ext_id: int, seq: int) -> tuple[int, bytes]:
    """An extension block (profile, body padded to 32 bits, as `rtp.pack_extensions` returns)
    with the transport-wide sequence number element put first.

    The element is built in front of the existing (already padded) body: 4 bytes in the
    two-byte form, and in the one-byte form 3 bytes plus one padding byte, which RFC 8285
    allows between elements. So the body is never decoded: one small concatenation per
    packet and viewer. One-byte form needs `ext_id` in 1..14 (ValueError otherwise).
    """
    profile, body = ext
    if profile & TWO_BYTE_PROFILE_MASK == TWO_BYTE_PROFILE:
        if not 1 <= ext_id <= 255:
            raise ValueError(f"extension id {ext_id} out of range")
        return profile, _TWO_BYTE_ELEMENT(ext_id, 2, seq & 0xFFFF) + body
    if not 1 <= ext_id <= 14:
        raise ValueError(f"extension id {ext_id} does not fit the one-byte form (1..14)")
    return ONE_BYTE_PROFILE, _ONE_BYTE_ELEMENT((ext_id << 4) | 1, seq & 0xFFFF) + body


def transport_seq_offset(data: bytes | bytearray, hdr: RtpHeader, ext_id: int) -> int | None:
    """Offset in `data` of the 2-byte value of the transport-wide seq element, or None."""
    profile = hdr.ext_profile
    pos, end = hdr.ext_start, hdr.ext_end
    if profile == ONE_BYTE_PROFILE:
        while pos < end:
            b = data[pos]
            if b == 0:
                pos += 1
                continue
            if b >> 4 == 15:
                return None
            length = (b & 0x0F) + 1
            if b >> 4 == ext_id:
                return pos + 1 if length == 2 and pos + 3 <= end else None
            pos += 1 + length
    elif profile & TWO_BYTE_PROFILE_MASK == TWO_BYTE_PROFILE:
        while pos < end:
            i = data[pos]
            if i == 0:
                pos += 1
                continue
            if pos + 2 > end:
                return None
            length = data[pos + 1]
            if i == ext_id:
                return pos + 2 if length == 2 and pos + 4 <= end else None
            pos += 2 + length
    return None


def write_transport_seq(packet: bytes, hdr: RtpHeader, ext_id: int, seq: int) -> bytes | None:
    """A copy of `packet` whose transport-wide seq element carries `seq` (a retransmission
    keeps its original's element and must get a number of its own), or None when the packet
    has no such element."""
    at = transport_seq_offset(packet, hdr, ext_id)
    if at is None:
        return None
    return b"".join((packet[:at], _U16.pack(seq & 0xFFFF), packet[at + 2:]))


_HEAD_ONE = struct.Struct("!BBHIIHHBHx").pack  # fixed header, 0xBEDE block header, element, pad
_HEAD_TWO = struct.Struct("!BBHIIHHBBH").pack  # fixed header, two-byte block header, element
_FIXED_HEADER = struct.Struct("!BBHII").pack
_BLOCK_HEADER = struct.Struct("!HH").pack


def rewrite_with_transport_seq(
    data: bytes, hdr: RtpHeader, ext: tuple[int, bytes], payload_type: int, seq: int,
    timestamp: int, ssrc: int, ext_id: int, transport_seq: int,
) -> bytes:
    """`rtp.rewrite(..., extensions=add_transport_seq(ext, ext_id, transport_seq))` in one
    struct call and one join: the per-packet, per-viewer rewrite of a numbered transport.

    `ext` is the block the viewer gets without the number (the publisher's, renumbered);
    marker bit, CSRCs, payload and padding are kept. Positional arguments: it runs once per
    packet per viewer. One-byte form needs `ext_id` in 1..14 (the negotiation ensures it).
    """
    profile, body = ext
    b0 = data[0] | 0x10
    b1 = (data[1] & 0x80) | payload_type
    tseq = transport_seq & 0xFFFF
    if not body and hdr.csrc_end == 12 and not hdr.ext_profile:
        # No extensions and no CSRCs in or out (the payload follows the fixed header).
        return _HEAD_ONE(b0, b1, seq, timestamp, ssrc, ONE_BYTE_PROFILE, 1, (ext_id << 4) | 1,
                         tseq) + data[12:]
    two = profile & TWO_BYTE_PROFILE_MASK == TWO_BYTE_PROFILE
    words = (len(body) >> 2) + 1
    if hdr.csrc_end == 12:
        if two:
            head = _HEAD_TWO(b0, b1, seq, timestamp, ssrc, profile, words, ext_id, 2, tseq)
        else:
            head = _HEAD_ONE(b0, b1, seq, timestamp, ssrc, ONE_BYTE_PROFILE, words,
                             (ext_id << 4) | 1, tseq)
    else:
        profile, element = add_transport_seq((profile, b""), ext_id, tseq)
        head = b"".join((_FIXED_HEADER(b0, b1, seq, timestamp, ssrc), data[12:hdr.csrc_end],
                         _BLOCK_HEADER(profile, words), element))
    return b"".join((head, body, memoryview(data)[hdr.payload_start:]))
