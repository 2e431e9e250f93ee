"""Forward error correction by XOR parity (RFC 5109): the ULPFEC packet format and the math.

An FEC packet protects a set of media packets of one SSRC: its fields are the XOR of theirs,
so when exactly one of the set is lost, XORing the FEC packet with the others gives it back.
This module holds the math shared by both FEC formats the node speaks (`FecPacket`, `xor`,
`recover`) and the RFC 5109 wire format, as Chromium sends and decodes it inside RED
(`a=rtpmap:<pt> ulpfec/90000`, the FEC payload as a primary-only RED block):

    FEC header (10 bytes):
        E | L | P X CC recovery (6) | M PT recovery (8) | SN base (16)
        TS recovery (32)
        length recovery (16)
    level 0 header (4 or 8 bytes):
        protection length (16) | mask (16 bits, or 48 when L=1)
    level 0 payload: XOR of the protected packets' bytes after the 12-byte fixed header,
        each zero-padded to the longest (= protection length).

Mask bit i (most significant first) set means seq `SN base + i` is protected. Only level 0
(full protection of every byte) is used: unequal protection buys little for video frames
whose every byte the decoder needs.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sfu.wire.rtp import FIXED_HEADER, RtpError

FEC_HEADER = 10
MASK_SHORT = 16
MASK_LONG = 48

_fec_hdr = struct.Struct("!BBHIH")
_fixed = struct.Struct("!BBHII")


class FecError(RtpError):
    """A malformed FEC packet."""


@dataclass(slots=True)
class FecPacket:
    """An FEC packet's content, independent of its wire format.

    `bits0`/`bits1`: XOR of the protected packets' first two header bytes (P, X, CC, M, PT;
    the version bits are masked off); `ts`, `length` (XOR of the lengths after the fixed
    header) and `payload` (XOR of those bytes, padded to the longest).
    """

    seqs: list[int]
    bits0: int
    bits1: int
    ts: int
    length: int
    payload: bytes


def xor(packets: Sequence[bytes], seqs: Sequence[int]) -> FecPacket:
    """The parity of `packets` (plain RTP, one SSRC) whose seqs are `seqs`."""
    if not packets or len(packets) != len(seqs):
        raise ValueError("need one seq per packet and at least one packet")
    width = max(len(p) - FIXED_HEADER for p in packets)
    acc = 0
    bits0 = bits1 = ts = length = 0
    for p in packets:
        b0, b1, _, pts, _ = _fixed.unpack_from(p)
        bits0 ^= b0 & 0x3F
        bits1 ^= b1
        ts ^= pts
        body = p[FIXED_HEADER:]
        length ^= len(body)
        # int XOR is the fastest bytewise XOR in pure Python; left-aligned by padding right.
        acc ^= int.from_bytes(body, "big") << (8 * (width - len(body)))
    return FecPacket(list(seqs), bits0, bits1, ts, length, acc.to_bytes(width, "big"))


def recover(fec: FecPacket, have: dict[int, bytes], ssrc: int) -> tuple[int, bytes] | None:
    """(seq, packet) of the one protected packet missing from `have`, or None when not
    exactly one is missing (nothing to do, or the loss is beyond this FEC packet)."""
    missing = [s for s in fec.seqs if s not in have]
    if len(missing) != 1:
        return None
    width = len(fec.payload)
    acc = int.from_bytes(fec.payload, "big")
    bits0, bits1, ts, length = fec.bits0, fec.bits1, fec.ts, fec.length
    for s in fec.seqs:
        if s == missing[0]:
            continue
        p = have[s]
        b0, b1, _, pts, _ = _fixed.unpack_from(p)
        body = p[FIXED_HEADER:]
        if len(body) > width:
            return None  # not the packet this FEC protected (seq reuse): do not guess
        bits0 ^= b0 & 0x3F
        bits1 ^= b1
        ts ^= pts
        length ^= len(body)
        acc ^= int.from_bytes(body, "big") << (8 * (width - len(body)))
    if length > width:
        return None
    body = acc.to_bytes(width, "big")[:length]
    seq = missing[0]
    return seq, _fixed.pack(0x80 | bits0, bits1, seq, ts, ssrc) + body


# --- RFC 5109 wire format --------------------------------------------------------------------


def encode(fec: FecPacket) -> bytes:
    """The ULPFEC payload (FEC header, level 0 header, level 0 payload) for `fec`."""
    base = min(fec.seqs, key=lambda s: (s - fec.seqs[0]) & 0xFFFF)
    offsets = [(s - base) & 0xFFFF for s in fec.seqs]
    if max(offsets) >= MASK_LONG:
        raise FecError(f"protected seqs span {max(offsets) + 1} > {MASK_LONG}")
    long_mask = max(offsets) >= MASK_SHORT
    bits = MASK_LONG if long_mask else MASK_SHORT
    mask = 0
    for o in offsets:
        mask |= 1 << (bits - 1 - o)
    b0 = (0x40 if long_mask else 0) | fec.bits0
    head = _fec_hdr.pack(b0, fec.bits1, base, fec.ts, fec.length)
    level = len(fec.payload).to_bytes(2, "big") + mask.to_bytes(bits // 8, "big")
    return head + level + fec.payload


def decode(payload: bytes | memoryview) -> FecPacket:
    """The FecPacket in a ULPFEC payload. Raises FecError when malformed."""
    view = memoryview(payload)
    if len(view) < FEC_HEADER + 4:
        raise FecError(f"ULPFEC payload too short ({len(view)} bytes)")
    b0, b1, base, ts, length = _fec_hdr.unpack_from(view)
    if b0 & 0x80:
        raise FecError("ULPFEC E bit set (reserved extension)")
    bits = MASK_LONG if b0 & 0x40 else MASK_SHORT
    level_end = FEC_HEADER + 2 + bits // 8
    if len(view) < level_end:
        raise FecError("ULPFEC level 0 header truncated")
    prot = int.from_bytes(view[FEC_HEADER : FEC_HEADER + 2], "big")
    mask = int.from_bytes(view[FEC_HEADER + 2 : level_end], "big")
    data = bytes(view[level_end:])
    if len(data) != prot:
        raise FecError(f"ULPFEC protection length {prot} != payload {len(data)}")
    seqs = [(base + i) & 0xFFFF for i in range(bits) if mask >> (bits - 1 - i) & 1]
    if not seqs:
        raise FecError("ULPFEC mask protects nothing")
    return FecPacket(seqs, b0 & 0x3F, b1, ts, length, data)


def interleaved_groups(count: int, fec_count: int) -> Iterable[list[int]]:
    """Indexes 0..count-1 split over `fec_count` FEC packets round-robin.

    Interleaving (packet i goes to FEC i % fec_count) spreads a burst of consecutive losses
    over different FEC packets, each of which can repair one.
    """
    for j in range(fec_count):
        yield list(range(j, count, fec_count))
