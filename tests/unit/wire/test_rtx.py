"""RFC 4588 RTX wrap/unwrap."""

from __future__ import annotations

import pytest

from sfu.wire.rtp import RtpError, build_packet, parse_header
from sfu.wire.rtx import RtxSequencer, unwrap, wrap


def test_wrap_puts_osn_first_and_keeps_timestamp_marker_and_extensions() -> None:
    pkt = build_packet(payload_type=96, seq=0xFFFE, timestamp=123456, ssrc=0x11,
                       payload=b"\xaa\xbb\xcc", marker=True, extensions=[(3, b"\x01\x02")])
    out = wrap(pkt, parse_header(pkt), rtx_ssrc=0x22, rtx_pt=97, rtx_seq=5)
    h = parse_header(out)
    assert (h.payload_type, h.seq, h.ssrc, h.timestamp, h.marker) == (97, 5, 0x22, 123456, True)
    assert out[h.payload_start:h.payload_end] == b"\xff\xfe\xaa\xbb\xcc"
    assert out[12:h.payload_start] == pkt[12:parse_header(pkt).payload_start]
    assert len(out) == len(pkt) + 2


def test_unwrap_restores_the_original_packet_exactly() -> None:
    pkt = build_packet(payload_type=96, seq=777, timestamp=9, ssrc=0x11, payload=b"xyz",
                       extensions=[(1, b"\x05")], csrcs=[42])
    out = wrap(pkt, parse_header(pkt), rtx_ssrc=0x22, rtx_pt=97, rtx_seq=1)
    osn, original = unwrap(out, media_ssrc=0x11, media_pt=96)
    assert osn == 777 and original == pkt


def test_padding_is_dropped_on_wrap() -> None:
    pkt = build_packet(payload_type=96, seq=1, timestamp=2, ssrc=3, payload=b"ab", padding=4)
    out = wrap(pkt, parse_header(pkt), rtx_ssrc=4, rtx_pt=97, rtx_seq=0)
    assert not out[0] & 0x20
    assert unwrap(out, media_ssrc=3, media_pt=96)[1] == build_packet(
        payload_type=96, seq=1, timestamp=2, ssrc=3, payload=b"ab")


def test_unwrap_rejects_packet_without_osn() -> None:
    with pytest.raises(RtpError):
        unwrap(build_packet(payload_type=97, seq=1, timestamp=2, ssrc=3, payload=b"a"),
               media_ssrc=1, media_pt=96)


def test_sequencer_wraps() -> None:
    s = RtxSequencer(0xFFFF)
    assert [s.next(), s.next(), s.next()] == [0xFFFF, 0, 1]
