"""RTP packet header codec (RFC 3550) with one- and two-byte header extensions (RFC 8285).

The forwarding path never builds packet objects: `parse_header` reads the fixed header and the
extension block's position with one `struct` call, and `rewrite` writes a new header in front of
the untouched payload. Extension IDs are remapped per subscriber with `remap_extensions`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

RTP_VERSION = 2
FIXED_HEADER = 12
ONE_BYTE_PROFILE = 0xBEDE
TWO_BYTE_PROFILE_MASK = 0xFFF0
TWO_BYTE_PROFILE = 0x1000

_fixed = struct.Struct("!BBHII")
_ext_hdr = struct.Struct("!HH")


class RtpError(ValueError):
    """A datagram that is not a well-formed RTP packet."""


@dataclass(slots=True)
class RtpHeader:
    """Where the parts of one RTP packet sit; offsets index into the original buffer."""

    marker: bool
    payload_type: int
    seq: int
    timestamp: int
    ssrc: int
    csrc_end: int  # offset just after the CSRC list
    ext_profile: int  # 0 when the packet has no extension block
    ext_start: int  # offset of the extension data (after the 4-byte block header)
    ext_end: int
    payload_start: int
    payload_end: int  # excludes padding

    @property
    def payload_size(self) -> int:
        return self.payload_end - self.payload_start


def parse_header(data: bytes) -> RtpHeader:
    """Validate and locate the parts of an RTP packet. Raises RtpError on malformed input."""
    n = len(data)
    if n < FIXED_HEADER:
        raise RtpError(f"RTP packet too short ({n} bytes)")
    b0, b1, seq, ts, ssrc = _fixed.unpack_from(data)
    if b0 >> 6 != RTP_VERSION:
        raise RtpError(f"RTP version {b0 >> 6} is not 2")
    pos = FIXED_HEADER + 4 * (b0 & 0x0F)
    if pos > n:
        raise RtpError("RTP CSRC list runs past the end of the packet")
    csrc_end = pos
    ext_profile = ext_start = ext_end = 0
    if b0 & 0x10:
        if pos + 4 > n:
            raise RtpError("RTP extension header truncated")
        ext_profile, words = _ext_hdr.unpack_from(data, pos)
        ext_start = pos + 4
        ext_end = ext_start + 4 * words
        if ext_end > n:
            raise RtpError("RTP extension block runs past the end of the packet")
        pos = ext_end
    end = n
    if b0 & 0x20:
        pad = data[-1]
        if pad == 0 or pos + pad > n:
            raise RtpError("RTP padding length is invalid")
        end = n - pad
    return RtpHeader(
        marker=bool(b1 & 0x80),
        payload_type=b1 & 0x7F,
        seq=seq,
        timestamp=ts,
        ssrc=ssrc,
        csrc_end=csrc_end,
        ext_profile=ext_profile,
        ext_start=ext_start,
        ext_end=ext_end,
        payload_start=pos,
        payload_end=end,
    )


def iter_extensions(data: bytes, hdr: RtpHeader) -> list[tuple[int, bytes]]:
    """Decode the header extension elements as (id, value). Raises RtpError when malformed."""
    out: list[tuple[int, bytes]] = []
    if not hdr.ext_profile:
        return out
    pos, end = hdr.ext_start, hdr.ext_end
    if hdr.ext_profile == ONE_BYTE_PROFILE:
        while pos < end:
            b = data[pos]
            if b == 0:  # padding between elements
                pos += 1
                continue
            ext_id, length = b >> 4, (b & 0x0F) + 1
            if ext_id == 15:  # reserved: stop parsing (RFC 8285 4.2)
                break
            pos += 1
            if pos + length > end:
                raise RtpError(f"one-byte extension {ext_id} runs past the block")
            out.append((ext_id, bytes(data[pos : pos + length])))
            pos += length
    elif hdr.ext_profile & TWO_BYTE_PROFILE_MASK == TWO_BYTE_PROFILE:
        while pos < end:
            ext_id = data[pos]
            if ext_id == 0:
                pos += 1
                continue
            if pos + 2 > end:
                raise RtpError("two-byte extension header truncated")
            length = data[pos + 1]
            pos += 2
            if pos + length > end:
                raise RtpError(f"two-byte extension {ext_id} runs past the block")
            out.append((ext_id, bytes(data[pos : pos + length])))
            pos += length
    return out


def get_extension(data: bytes, hdr: RtpHeader, ext_id: int) -> bytes | None:
    """Value of one extension element, or None."""
    for i, value in iter_extensions(data, hdr):
        if i == ext_id:
            return value
    return None


def pack_extensions(elements: Iterable[tuple[int, bytes]]) -> tuple[int, bytes]:
    """Encode elements as an extension block: (profile, data padded to 32 bits).

    One-byte form when every id is 1..14 and every value 1..16 bytes, two-byte otherwise.
    An empty list gives (0, b"") meaning "no extension block".
    """
    items = list(elements)
    if not items:
        return 0, b""
    if all(1 <= i <= 14 and 1 <= len(v) <= 16 for i, v in items):
        profile = ONE_BYTE_PROFILE
        body = b"".join(bytes([(i << 4) | (len(v) - 1)]) + v for i, v in items)
    else:
        if any(not 1 <= i <= 255 or len(v) > 255 for i, v in items):
            raise ValueError("extension id or length out of range for two-byte form")
        profile = TWO_BYTE_PROFILE
        body = b"".join(bytes([i, len(v)]) + v for i, v in items)
    body += b"\x00" * (-len(body) % 4)
    return profile, body


def remap_extensions(
    data: bytes, hdr: RtpHeader, id_map: Mapping[int, int]
) -> tuple[int, bytes]:
    """Re-encode the extension block keeping only ids in `id_map`, renumbered to its values."""
    kept = [(id_map[i], v) for i, v in iter_extensions(data, hdr) if i in id_map]
    return pack_extensions(kept)


def rewrite(
    data: bytes,
    hdr: RtpHeader,
    *,
    payload_type: int,
    seq: int,
    timestamp: int,
    ssrc: int,
    extensions: tuple[int, bytes] | None = None,
) -> bytes:
    """A copy of the packet with a new PT/seq/ts/SSRC and, optionally, a new extension block.

    The marker bit, CSRCs, payload and padding are kept as they are. The payload is copied
    once (into the result); SRTP wants `bytes`, so no further copy is needed.
    """
    b0 = data[0]
    b1 = (data[1] & 0x80) | payload_type
    if extensions is None:
        return _fixed.pack(b0, b1, seq, timestamp, ssrc) + memoryview(data)[FIXED_HEADER:]
    profile, body = extensions
    b0 = (b0 | 0x10) if profile else (b0 & 0xEF)
    head = _fixed.pack(b0, b1, seq, timestamp, ssrc) + data[FIXED_HEADER : hdr.csrc_end]
    if profile:
        head += _ext_hdr.pack(profile, len(body) // 4) + body
    return head + memoryview(data)[hdr.payload_start :]


def build_packet(
    *,
    payload_type: int,
    seq: int,
    timestamp: int,
    ssrc: int,
    payload: bytes,
    marker: bool = False,
    extensions: Iterable[tuple[int, bytes]] = (),
    csrcs: Iterable[int] = (),
    padding: int = 0,
) -> bytes:
    """Serialise a whole RTP packet (used by tests, the bench and generated packets)."""
    csrc_list = list(csrcs)
    profile, body = pack_extensions(extensions)
    b0 = (RTP_VERSION << 6) | len(csrc_list)
    if profile:
        b0 |= 0x10
    if padding:
        b0 |= 0x20
    out = bytearray(_fixed.pack(b0, (0x80 if marker else 0) | payload_type, seq, timestamp, ssrc))
    for c in csrc_list:
        out += struct.pack("!I", c)
    if profile:
        out += _ext_hdr.pack(profile, len(body) // 4) + body
    out += payload
    if padding:
        out += b"\x00" * (padding - 1) + bytes([padding])
    return bytes(out)


def seq_newer(a: int, b: int) -> bool:
    """True when 16-bit sequence number a comes after b (RFC 1982 serial arithmetic)."""
    return a != b and ((a - b) & 0xFFFF) < 0x8000
