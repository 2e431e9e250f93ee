"""RTP payload for redundant audio data, RED (RFC 2198), as Chromium negotiates it.

Chromium offers `a=rtpmap:<pt> red/48000/2` with `a=fmtp:<pt> <opus pt>/<opus pt>` and puts
earlier Opus payloads in front of the current one. The payload is a list of block headers
then the blocks' data in the same order, the primary (newest) last:

    redundant block header (4 bytes): F=1 | block PT (7) | timestamp offset (14) | length (10)
    primary block header   (1 byte) : F=0 | block PT (7)

The offset is how much earlier (in RTP clock units) the redundant data's timestamp is than
the packet's; 14 bits at 48 kHz is 341 ms, so only recent frames can ride along, and a
block is at most 1023 bytes. ULPFEC (RFC 5109) travels in RED too, as a primary-only
packet whose block PT is the ulpfec PT.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sfu.wire.rtp import RtpError, RtpHeader

MAX_OFFSET = (1 << 14) - 1
MAX_BLOCK = (1 << 10) - 1


class RedError(RtpError):
    """A RED payload that does not follow RFC 2198."""


@dataclass(slots=True, frozen=True)
class RedBlock:
    """One encoding in a RED payload; `timestamp_offset` is 0 for the primary."""

    payload_type: int
    timestamp_offset: int
    data: bytes


def encode(primary_pt: int, primary: bytes, redundant: Sequence[RedBlock] = ()) -> bytes:
    """A RED payload: `redundant` blocks (oldest first, as they are sent) then the primary."""
    head = bytearray()
    for b in redundant:
        if not 0 <= b.timestamp_offset <= MAX_OFFSET:
            raise RedError(f"timestamp offset {b.timestamp_offset} does not fit 14 bits")
        if len(b.data) > MAX_BLOCK:
            raise RedError(f"redundant block of {len(b.data)} bytes does not fit 10 bits")
        word = 0x8000_0000 | (b.payload_type & 0x7F) << 24 | b.timestamp_offset << 10 | len(b.data)
        head += word.to_bytes(4, "big")
    head.append(primary_pt & 0x7F)
    return b"".join([bytes(head), *(b.data for b in redundant), primary])


def decode(payload: bytes | memoryview) -> tuple[list[RedBlock], RedBlock]:
    """(redundant blocks oldest first, primary block). Raises RedError when malformed."""
    view = memoryview(payload)
    n = len(view)
    pos = 0
    headers: list[tuple[int, int, int]] = []
    while True:
        if pos >= n:
            raise RedError("RED payload ends inside its block headers")
        b = view[pos]
        if not b & 0x80:
            primary_pt = b & 0x7F
            pos += 1
            break
        if pos + 4 > n:
            raise RedError("RED block header truncated")
        word = int.from_bytes(view[pos : pos + 4], "big")
        headers.append(((word >> 24) & 0x7F, (word >> 10) & MAX_OFFSET, word & MAX_BLOCK))
        pos += 4
    blocks: list[RedBlock] = []
    for pt, offset, length in headers:
        if pos + length > n:
            raise RedError("RED block runs past the end of the payload")
        blocks.append(RedBlock(pt, offset, bytes(view[pos : pos + length])))
        pos += length
    return blocks, RedBlock(primary_pt, 0, bytes(view[pos:]))


def wrap(data: bytes, hdr: RtpHeader, red_pt: int, redundant: Sequence[RedBlock] = ()) -> bytes:
    """The RTP packet `data` re-sent as RED: same header but PT `red_pt`, payload in RED."""
    b1 = (data[1] & 0x80) | (red_pt & 0x7F)
    payload = encode(hdr.payload_type, data[hdr.payload_start : hdr.payload_end], redundant)
    b0 = data[0] & 0xDF  # the padding of the original does not apply to the new payload
    return bytes((b0, b1)) + data[2 : hdr.payload_start] + payload


def unwrap(data: bytes, hdr: RtpHeader) -> list[tuple[int, int, bytes]]:
    """(payload type, RTP timestamp, payload) of every encoding in RED packet `data`,
    oldest first, primary last. Raises RedError when malformed."""
    redundant, primary = decode(memoryview(data)[hdr.payload_start : hdr.payload_end])
    ts = hdr.timestamp
    out = [(b.payload_type, (ts - b.timestamp_offset) & 0xFFFF_FFFF, b.data) for b in redundant]
    out.append((primary.payload_type, ts, primary.data))
    return out


def primary_packet(data: bytes, hdr: RtpHeader) -> bytes:
    """The packet without RED: header with the primary's PT, payload the primary block.

    For a viewer that did not negotiate RED while the publisher sends it.
    """
    _, primary = decode(memoryview(data)[hdr.payload_start : hdr.payload_end])
    b0 = data[0] & 0xDF
    b1 = (data[1] & 0x80) | primary.payload_type
    return bytes((b0, b1)) + data[2 : hdr.payload_start] + primary.data


def set_block_types(buf: bytearray, start: int, payload_type: int) -> int:
    """Give every block of the RED payload at `buf[start:]` `payload_type` (a RED stream
    passed on to a receiver that numbers the codec differently); returns the number of
    redundant blocks. Raises RedError when the headers run past the end."""
    pos = start
    n = len(buf)
    blocks = 0
    while True:
        if pos >= n:
            raise RedError("RED payload ends inside its block headers")
        b = buf[pos]
        buf[pos] = (b & 0x80) | (payload_type & 0x7F)
        if not b & 0x80:
            return blocks
        blocks += 1
        pos += 4


def header_size(blocks: int) -> int:
    """Bytes of RED block headers for `blocks` redundant encodings plus the primary."""
    return 4 * blocks + 1


