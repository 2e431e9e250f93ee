"""Writing the transport-wide sequence number into outgoing headers (viewer egress)."""

from __future__ import annotations

import pytest

from sfu.wire.rtp import (
    ONE_BYTE_PROFILE,
    TWO_BYTE_PROFILE,
    build_packet,
    iter_extensions,
    pack_extensions,
    parse_header,
    rewrite,
)
from sfu.wire.twcc import (
    NO_EXTENSIONS,
    add_transport_seq,
    read_transport_seq,
    rewrite_with_transport_seq,
    transport_seq_offset,
    write_transport_seq,
)


def _packet(ext: tuple[int, bytes]) -> bytes:
    base = build_packet(payload_type=96, seq=7, timestamp=9, ssrc=1, payload=b"payload")
    return rewrite(base, parse_header(base), payload_type=96, seq=7, timestamp=9, ssrc=1,
                   extensions=ext)


def test_add_to_no_block_makes_a_one_byte_block() -> None:
    pkt = _packet(add_transport_seq(NO_EXTENSIONS, 5, 0xABCD))
    hdr = parse_header(pkt)
    assert hdr.ext_profile == ONE_BYTE_PROFILE
    assert iter_extensions(pkt, hdr) == [(5, b"\xab\xcd")]
    assert read_transport_seq(pkt, hdr, 5) == 0xABCD
    assert pkt[hdr.payload_start:] == b"payload"


def test_add_in_front_of_a_one_byte_block_keeps_its_elements() -> None:
    block = pack_extensions([(3, b"\x01"), (12, b"\x00\x10\x20")])
    ext = add_transport_seq(block, 7, 0x1234)
    assert len(ext[1]) % 4 == 0
    pkt = _packet(ext)
    hdr = parse_header(pkt)
    assert iter_extensions(pkt, hdr) == [(7, b"\x12\x34"), (3, b"\x01"), (12, b"\x00\x10\x20")]
    assert read_transport_seq(pkt, hdr, 7) == 0x1234


def test_add_to_a_two_byte_block() -> None:
    block = pack_extensions([(20, b"x" * 20)])
    assert block[0] == TWO_BYTE_PROFILE
    pkt = _packet(add_transport_seq(block, 3, 0x0102))
    hdr = parse_header(pkt)
    assert iter_extensions(pkt, hdr) == [(3, b"\x01\x02"), (20, b"x" * 20)]


def test_one_byte_form_needs_id_up_to_14() -> None:
    with pytest.raises(ValueError):
        add_transport_seq(NO_EXTENSIONS, 15, 1)


def test_rewrite_the_number_of_a_retransmission() -> None:
    pkt = _packet(add_transport_seq(pack_extensions([(3, b"\x01")]), 7, 100))
    hdr = parse_header(pkt)
    at = transport_seq_offset(pkt, hdr, 7)
    assert at is not None and pkt[at:at + 2] == b"\x00\x64"
    out = write_transport_seq(pkt, hdr, 7, 0x10001)  # taken modulo 2^16
    assert out is not None and len(out) == len(pkt)
    assert read_transport_seq(out, parse_header(out), 7) == 1
    assert iter_extensions(out, parse_header(out))[1] == (3, b"\x01")
    assert write_transport_seq(pkt, hdr, 9, 1) is None  # no such element
    plain = build_packet(payload_type=96, seq=1, timestamp=1, ssrc=1, payload=b"x")
    assert write_transport_seq(plain, parse_header(plain), 7, 1) is None


@pytest.mark.parametrize("elements", [[], [(3, b"\x01")], [(20, b"x" * 20)]])
@pytest.mark.parametrize("csrcs", [[], [0xAABBCCDD]])
@pytest.mark.parametrize("padding", [0, 4])
def test_one_call_rewrite_equals_rewrite_with_added_element(
    elements: list[tuple[int, bytes]], csrcs: list[int], padding: int
) -> None:
    data = build_packet(payload_type=96, seq=7, timestamp=9, ssrc=1, payload=b"payload",
                        marker=True, csrcs=csrcs, padding=padding,
                        extensions=[(1, b"mid")] + elements)
    hdr = parse_header(data)
    ext = pack_extensions(elements) if elements else NO_EXTENSIONS
    expected = rewrite(data, hdr, payload_type=100, seq=0xBEEF, timestamp=0x12345678,
                       ssrc=0x55, extensions=add_transport_seq(ext, 4, 0x10203))
    got = rewrite_with_transport_seq(data, hdr, ext, 100, 0xBEEF, 0x12345678, 0x55, 4, 0x10203)
    assert got == expected
    out = parse_header(got)
    assert out.marker and read_transport_seq(got, out, 4) == 0x0203
    assert got[out.payload_start:out.payload_end] == b"payload"


@pytest.mark.parametrize("padding", [0, 4])
def test_one_call_rewrite_of_a_packet_without_extensions(padding: int) -> None:
    data = build_packet(payload_type=96, seq=7, timestamp=9, ssrc=1, payload=b"payload",
                        padding=padding)
    hdr = parse_header(data)
    expected = rewrite(data, hdr, payload_type=100, seq=1, timestamp=2, ssrc=3,
                       extensions=add_transport_seq(NO_EXTENSIONS, 4, 77))
    assert rewrite_with_transport_seq(data, hdr, NO_EXTENSIONS, 100, 1, 2, 3, 4, 77) == expected
