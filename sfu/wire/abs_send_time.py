"""The abs-send-time RTP header extension (http://www.webrtc.org/experiments/rtp-hdrext/
abs-send-time): 24 bits, the send time in seconds as 6.18 fixed point, wrapping every 64 s.

A receive-side estimator (REMB: libwebrtc's, aiortc's `RemoteBitrateEstimator`) compares
the send-time deltas it carries with arrival deltas, so the value must be the time the packet
really left. The node builds the element when it rewrites the packet (`add_abs_send_time`,
first in the extension block, with the time of the rewrite) and, when a pacer sends it later,
writes the time again (`stamp`): one three-byte patch per packet, no header walk.
"""

from __future__ import annotations

import struct

from sfu.wire.rtp import ONE_BYTE_PROFILE, TWO_BYTE_PROFILE, TWO_BYTE_PROFILE_MASK

URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
_TWO_BYTE_ELEMENT = struct.Struct("!BB3sxxx")  # id, length 3, value, padding to 32 bits


def value(now: float) -> int:
    """`now` (seconds, any clock) as the 24-bit 6.18 fixed-point abs-send-time."""
    return int(now * (1 << 18)) & 0xFFFFFF


def add_abs_send_time(ext: tuple[int, bytes], ext_id: int,
                      now: float = 0.0) -> tuple[int, bytes]:
    """An extension block (profile, body padded to 32 bits) with an abs-send-time element for
    `now` in front of the existing body (which is never decoded). One-byte form needs
    `ext_id` in 1..14, two-byte form 1..255 (ValueError otherwise)."""
    profile, body = ext
    v = value(now)
    three = bytes(((v >> 16) & 0xFF, (v >> 8) & 0xFF, v & 0xFF))
    if profile & TWO_BYTE_PROFILE_MASK == TWO_BYTE_PROFILE:
        if not 1 <= ext_id <= 255:
            raise ValueError(f"extension id {ext_id} out of range")
        return profile, _TWO_BYTE_ELEMENT.pack(ext_id, 3, three) + body
    if not 1 <= ext_id <= 14:
        raise ValueError(f"extension id {ext_id} does not fit the one-byte form (1..14)")
    return ONE_BYTE_PROFILE, bytes(((ext_id << 4) | 2,)) + three + body


def leading_offset(packet: bytes | bytearray) -> int | None:
    """Offset of the value of the first extension element (where `add_abs_send_time` put
    it), or None when the packet has no extension block."""
    if len(packet) < 12 or not packet[0] & 0x10:
        return None
    off = 12 + 4 * (packet[0] & 0x0F)
    if len(packet) < off + 8:
        return None
    profile = (packet[off] << 8) | packet[off + 1]
    return off + 5 if profile == ONE_BYTE_PROFILE else off + 6


def stamp(packet: bytes, now: float) -> bytes:
    """`packet` with the leading abs-send-time element set to `now`."""
    at = leading_offset(packet)
    if at is None:
        return packet
    v = value(now)
    return b"".join((packet[:at], bytes(((v >> 16) & 0xFF, (v >> 8) & 0xFF, v & 0xFF)),
                     packet[at + 3:]))


def read(packet: bytes, ext_id: int) -> int | None:
    """The abs-send-time value of `packet` if its leading element is `ext_id` (tests)."""
    at = leading_offset(packet)
    if at is None:
        return None
    off = 12 + 4 * (packet[0] & 0x0F)
    profile = (packet[off] << 8) | packet[off + 1]
    element_id = packet[off + 4] >> 4 if profile == ONE_BYTE_PROFILE else packet[off + 4]
    if element_id != ext_id:
        return None
    return (packet[at] << 16) | (packet[at + 1] << 8) | packet[at + 2]
