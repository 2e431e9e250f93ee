"""What the forwarder needs to know about a payload without decoding it: is it a keyframe start.

VP8 payload descriptor (RFC 7741) and H.264 NAL unit headers (RFC 6184). Audio never needs a
keyframe, so `is_keyframe` is only asked for video codecs.
"""

from __future__ import annotations

VP8 = "VP8"
H264 = "H264"
OPUS = "OPUS"


def vp8_descriptor_size(payload: bytes | memoryview) -> int:
    """Length of the VP8 payload descriptor, or -1 if truncated."""
    n = len(payload)
    if n < 1:
        return -1
    pos = 1
    if payload[0] & 0x80:  # X: extension byte follows
        if n < 2:
            return -1
        ext = payload[1]
        pos = 2
        if ext & 0x80:  # I: picture id
            if n <= pos:
                return -1
            pos += 2 if payload[pos] & 0x80 else 1
        if ext & 0x40:  # L: TL0PICIDX
            pos += 1
        if ext & 0x30:  # T or K: TID/KEYIDX byte
            pos += 1
    return pos if pos <= n else -1


def vp8_is_keyframe(payload: bytes | memoryview) -> bool:
    """True on the first packet of a VP8 key frame (S=1, PID=0, P=0 in the payload header)."""
    if len(payload) < 2:
        return False
    b0 = payload[0]
    if not b0 & 0x10 or b0 & 0x07:  # not the start of partition 0
        return False
    pos = vp8_descriptor_size(payload)
    if pos < 0 or pos >= len(payload):
        return False
    return not payload[pos] & 0x01


def _h264_nal_is_key(nal_type: int) -> bool:
    # An IDR slice, or the SPS that Chromium and most encoders put right before it.
    return nal_type in (5, 7)


def h264_is_keyframe(payload: bytes | memoryview) -> bool:
    """True when the packet starts an IDR access unit (single NAL, STAP-A or FU-A start)."""
    n = len(payload)
    if n < 1:
        return False
    nal_type = payload[0] & 0x1F
    if 1 <= nal_type <= 23:
        return _h264_nal_is_key(nal_type)
    if nal_type == 24:  # STAP-A: 16-bit size then NAL unit, repeated
        pos = 1
        while pos + 2 < n:
            size = (payload[pos] << 8) | payload[pos + 1]
            pos += 2
            if size == 0 or pos + size > n:
                return False
            if _h264_nal_is_key(payload[pos] & 0x1F):
                return True
            pos += size
        return False
    if nal_type == 28:  # FU-A: start bit and the original NAL type
        return n >= 2 and bool(payload[1] & 0x80) and _h264_nal_is_key(payload[1] & 0x1F)
    return False


def is_keyframe(codec: str, payload: bytes | memoryview) -> bool:
    """Keyframe start test by codec name (upper-case, as in SDP rtpmap)."""
    if codec == VP8:
        return vp8_is_keyframe(payload)
    if codec == H264:
        return h264_is_keyframe(payload)
    return False
