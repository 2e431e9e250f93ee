"""VP8 payload descriptor fields (RFC 7741 section 4.2) and the key frame header's frame size.

The forwarder reads the temporal layer (TID), picture ID and TL0PICIDX of each packet and
rewrites picture ID and TL0PICIDX in place, so a viewer sees one continuous VP8 stream across
simulcast switches and dropped temporal layers. Nothing here decodes video.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Vp8Descriptor:
    """Where the optional fields sit in one packet's payload (offsets from payload start)."""

    start_of_partition: bool  # S bit
    partition_id: int
    picture_id: int | None
    picture_id_offset: int  # -1 when absent
    picture_id_bits: int  # 7 or 15
    tl0picidx: int | None
    tl0_offset: int
    tid: int | None  # temporal layer id, None when the T bit is clear
    layer_sync: bool  # Y bit
    size: int  # descriptor length; the VP8 payload header follows

    @property
    def begins_frame(self) -> bool:
        return self.start_of_partition and self.partition_id == 0


def parse_descriptor(payload: bytes | memoryview) -> Vp8Descriptor | None:
    """The descriptor of one VP8 RTP payload, or None when truncated."""
    n = len(payload)
    if n < 1:
        return None
    b0 = payload[0]
    pos = 1
    pid_off = tl0_off = -1
    pid_bits = 0
    picture_id = tl0 = tid = None
    sync = False
    if b0 & 0x80:
        if n < 2:
            return None
        x = payload[1]
        pos = 2
        if x & 0x80:  # I
            if pos >= n:
                return None
            pid_off = pos
            if payload[pos] & 0x80:
                if pos + 1 >= n:
                    return None
                picture_id = ((payload[pos] & 0x7F) << 8) | payload[pos + 1]
                pid_bits = 15
                pos += 2
            else:
                picture_id = payload[pos] & 0x7F
                pid_bits = 7
                pos += 1
        if x & 0x40:  # L
            if pos >= n:
                return None
            tl0_off = pos
            tl0 = payload[pos]
            pos += 1
        if x & 0x30:  # T or K
            if pos >= n:
                return None
            if x & 0x20:
                tid = payload[pos] >> 6
                sync = bool(payload[pos] & 0x20)
            pos += 1
    if pos > n:
        return None
    return Vp8Descriptor(
        start_of_partition=bool(b0 & 0x10),
        partition_id=b0 & 0x07,
        picture_id=picture_id,
        picture_id_offset=pid_off,
        picture_id_bits=pid_bits,
        tl0picidx=tl0,
        tl0_offset=tl0_off,
        tid=tid,
        layer_sync=sync,
        size=pos,
    )


def write_fields(
    buf: bytearray, offset: int, d: Vp8Descriptor, picture_id: int | None, tl0picidx: int | None
) -> None:
    """Overwrite picture ID and TL0PICIDX in `buf`, whose payload starts at `offset`.

    The field widths stay as they are, so the packet length never changes.
    """
    if picture_id is not None and d.picture_id_offset >= 0:
        at = offset + d.picture_id_offset
        if d.picture_id_bits == 15:
            pid = picture_id & 0x7FFF
            buf[at] = 0x80 | (pid >> 8)
            buf[at + 1] = pid & 0xFF
        else:
            buf[at] = picture_id & 0x7F
    if tl0picidx is not None and d.tl0_offset >= 0:
        buf[offset + d.tl0_offset] = tl0picidx & 0xFF


def keyframe_size(payload: bytes | memoryview, d: Vp8Descriptor) -> tuple[int, int] | None:
    """(width, height) from a key frame's first packet (RFC 6386 9.1), else None."""
    at = d.size
    if len(payload) < at + 10 or payload[at] & 0x01:
        return None
    if payload[at + 3 : at + 6] != b"\x9d\x01\x2a":
        return None
    width = (payload[at + 6] | (payload[at + 7] << 8)) & 0x3FFF
    height = (payload[at + 8] | (payload[at + 9] << 8)) & 0x3FFF
    return width, height
