"""RTP retransmission payload format (RFC 4588), session-multiplexed (SSRC-multiplexed) form.

An RTX packet carries a lost media packet on its own SSRC, payload type and sequence space:
the header keeps the original timestamp, marker, CSRCs and header extensions; the payload
starts with the original sequence number (OSN, 2 bytes) followed by the original payload.
Keeping RTX on its own SSRC is what lets a receiver tell a retransmission from a fresh
packet and keep its loss statistics honest (RFC 4588 section 3).

The RTX payload type is negotiated per media payload type with `a=fmtp:<rtx pt> apt=<pt>`
and the RTX SSRC with `a=ssrc-group:FID <media ssrc> <rtx ssrc>`.
"""

from __future__ import annotations

import struct

from sfu.wire.rtp import FIXED_HEADER, RtpError, RtpHeader, parse_header

_fixed = struct.Struct("!BBHII")
_osn = struct.Struct("!H")


def wrap(data: bytes, hdr: RtpHeader, *, rtx_ssrc: int, rtx_pt: int, rtx_seq: int) -> bytes:
    """The RTX packet that retransmits `data` (parsed as `hdr`).

    Padding is not carried over: it only rounded the original packet up and RFC 4588
    section 4 lets the sender choose the RTX packet's own padding.
    """
    b0 = data[0] & 0xDF  # clear P: the original padding is dropped
    b1 = (data[1] & 0x80) | (rtx_pt & 0x7F)
    head = _fixed.pack(b0, b1, rtx_seq & 0xFFFF, hdr.timestamp, rtx_ssrc)
    return b"".join((head, data[FIXED_HEADER : hdr.payload_start], _osn.pack(hdr.seq),
                     data[hdr.payload_start : hdr.payload_end]))


def unwrap(data: bytes, *, media_ssrc: int, media_pt: int) -> tuple[int, bytes]:
    """(original seq, original packet) of an RTX packet. Raises RtpError when malformed.

    The original packet gets `media_ssrc` and `media_pt` back (the receiver knows them from
    the FID group and the apt mapping; RTX does not carry them).
    """
    hdr = parse_header(data)
    if hdr.payload_end - hdr.payload_start < 2:
        raise RtpError("RTX packet too short for an original sequence number")
    (osn,) = _osn.unpack_from(data, hdr.payload_start)
    b0 = data[0] & 0xDF
    b1 = (data[1] & 0x80) | (media_pt & 0x7F)
    head = _fixed.pack(b0, b1, osn, hdr.timestamp, media_ssrc)
    original = b"".join((head, data[FIXED_HEADER : hdr.payload_start],
                         data[hdr.payload_start + 2 : hdr.payload_end]))
    return osn, original


class RtxSequencer:
    """The RTX stream's own sequence counter (RFC 4588: RTX has its own seq space)."""

    __slots__ = ("_next",)

    def __init__(self, start: int) -> None:
        self._next = start & 0xFFFF

    def next(self) -> int:
        seq = self._next
        self._next = (seq + 1) & 0xFFFF
        return seq
