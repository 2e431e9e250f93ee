"""FlexFEC (draft-ietf-payload-flexible-fec-scheme-03, "flexfec-03"), single protected SSRC.

FlexFEC carries the same XOR parity as ULPFEC (`sfu.wire.ulpfec`) but on its own SSRC and
sequence space (`a=rtpmap:<pt> flexfec-03/90000`, `a=ssrc-group:FEC-FR <media> <fec>`), so a
forwarding node can add FEC without renumbering the media stream it already rewrote, which
ULPFEC (sharing the media seq space) would force. The repair payload, flexible mask form
(R=0, F=0):

    R F P X CC (8) | M PT recovery (8) | length recovery (16)
    TS recovery (32)
    SSRCCount (8) | reserved (24)
    SSRC (32)
    SN base (16) | k | mask bits 0-14
    [k | mask bits 15-45]            when the first k is 0
    [k | mask bits 46-108 (63 bits)] when the second k is 0
    repair payload (XOR of the bytes after the 12-byte headers)

Mask bit i set means seq `SN base + i` is protected; a k bit of 1 ends the mask.
"""

from __future__ import annotations

import struct

from sfu.wire.rtp import build_packet, parse_header
from sfu.wire.ulpfec import FecError, FecPacket

MAX_SPAN = 109
_head = struct.Struct("!BBHIBBHIH")  # through SN base
_MASK_PARTS = ((15, 2), (31, 4), (63, 8))  # (mask bits, bytes incl. the k bit)


def encode(fec: FecPacket, media_ssrc: int) -> bytes:
    """The FlexFEC repair payload for `fec` protecting `media_ssrc`."""
    base = min(fec.seqs, key=lambda s: (s - fec.seqs[0]) & 0xFFFF)
    offsets = sorted((s - base) & 0xFFFF for s in fec.seqs)
    if offsets[-1] >= MAX_SPAN:
        raise FecError(f"protected seqs span {offsets[-1] + 1} > {MAX_SPAN}")
    out = bytearray(_head.pack(fec.bits0 & 0x3F, fec.bits1, fec.length, fec.ts, 1, 0, 0,
                               media_ssrc, base))
    start = 0
    for i, (nbits, nbytes) in enumerate(_MASK_PARTS):
        last = offsets[-1] < start + nbits or i == len(_MASK_PARTS) - 1
        word = (1 << (8 * nbytes - 1)) if last else 0
        for o in offsets:
            if start <= o < start + nbits:
                word |= 1 << (nbits - 1 - (o - start))
        out += word.to_bytes(nbytes, "big")
        start += nbits
        if last:
            break
    return bytes(out) + fec.payload


def decode(payload: bytes | memoryview) -> tuple[int, FecPacket]:
    """(protected SSRC, FecPacket) of a FlexFEC repair payload. Raises FecError."""
    view = memoryview(payload)
    if len(view) < _head.size + 2:
        raise FecError(f"FlexFEC payload too short ({len(view)} bytes)")
    b0, b1, length, ts, count, _, _, ssrc, base = _head.unpack_from(view)
    if b0 & 0xC0:
        raise FecError("FlexFEC R/F bits set: only the flexible mask form is supported")
    if count != 1:
        raise FecError(f"FlexFEC protecting {count} SSRCs is not supported")
    pos = _head.size
    seqs: list[int] = []
    start = 0
    for nbits, nbytes in _MASK_PARTS:
        if pos + nbytes > len(view):
            raise FecError("FlexFEC mask truncated")
        word = int.from_bytes(view[pos : pos + nbytes], "big")
        pos += nbytes
        for i in range(nbits):
            if word >> (nbits - 1 - i) & 1:
                seqs.append((base + start + i) & 0xFFFF)
        start += nbits
        if word >> (8 * nbytes - 1):
            break
    if not seqs:
        raise FecError("FlexFEC mask protects nothing")
    return ssrc, FecPacket(seqs, b0 & 0x3F, b1, ts, length, bytes(view[pos:]))


def packet(fec: FecPacket, *, media_ssrc: int, fec_ssrc: int, payload_type: int, seq: int,
           timestamp: int) -> bytes:
    """A whole FlexFEC RTP packet (its own SSRC and seq; timestamp per the draft: the
    newest protected packet's is a fine choice)."""
    return build_packet(payload_type=payload_type, seq=seq, timestamp=timestamp, ssrc=fec_ssrc,
                        payload=encode(fec, media_ssrc))


def parse_packet(data: bytes) -> tuple[int, FecPacket]:
    """(protected SSRC, FecPacket) of a whole FlexFEC RTP packet."""
    hdr = parse_header(data)
    return decode(memoryview(data)[hdr.payload_start : hdr.payload_end])


