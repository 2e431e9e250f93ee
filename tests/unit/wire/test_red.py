"""RFC 2198 RED payload codec against the RFC's own layout."""

from __future__ import annotations

import pytest

from sfu.wire import red
from sfu.wire.rtp import build_packet, parse_header


def test_rfc2198_section3_example_bytes() -> None:
    # RFC 2198 section 3's figure: a redundant LPC block (PT 7, 14 bytes) then the DVI4
    # primary (PT 5). Offset 160 = one 20 ms frame at 8 kHz.
    lpc = bytes(range(14))
    dvi = bytes(84)
    payload = red.encode(5, dvi, [red.RedBlock(7, 160, lpc)])
    # F=1 | PT 7 -> 0x87; 160 << 10 | 14 -> 0x02800E; F=0 | PT 5 -> 0x05
    assert payload[:5] == bytes([0x87, 0x02, 0x80, 0x0E, 0x05])
    assert payload[5:19] == lpc and payload[19:] == dvi
    assert red.decode(payload) == ([red.RedBlock(7, 160, lpc)], red.RedBlock(5, 0, dvi))


def test_rfc2198_section4_primary_only_is_one_byte_header() -> None:
    assert red.encode(0, b"PCMU") == b"\x00PCMU"
    assert red.decode(b"\x00PCMU") == ([], red.RedBlock(0, 0, b"PCMU"))


def test_two_redundant_blocks_keep_order_and_max_fields() -> None:
    blocks = [red.RedBlock(111, red.MAX_OFFSET, b"a" * red.MAX_BLOCK), red.RedBlock(111, 960, b"")]
    payload = red.encode(111, b"p", blocks)
    assert payload[:4] == bytes([0xEF, 0xFF, 0xFF, 0xFF])  # F|111, offset and length all ones
    assert payload[4:9] == bytes([0xEF, 0x0F, 0x00, 0x00, 0x6F])  # 960 << 10 = 0x0F0000, len 0
    assert red.decode(payload) == (blocks, red.RedBlock(111, 0, b"p"))


@pytest.mark.parametrize("bad", [b"", b"\x87\x02", b"\x87\x02\x80\x0e\x05abc", b"\x87\x02\x80\x0e"])
def test_malformed_payloads_raise(bad: bytes) -> None:
    with pytest.raises(red.RedError):
        red.decode(bad)


def test_encode_rejects_out_of_range_fields() -> None:
    with pytest.raises(red.RedError):
        red.encode(111, b"", [red.RedBlock(111, 1 << 14, b"")])
    with pytest.raises(red.RedError):
        red.encode(111, b"", [red.RedBlock(111, 0, bytes(1024))])


def test_wrap_unwrap_and_primary_packet() -> None:
    pkt = build_packet(payload_type=111, seq=9, timestamp=10_000, ssrc=5, payload=b"opus",
                       marker=True, extensions=[(1, b"\x30")])
    h = parse_header(pkt)
    out = red.wrap(pkt, h, 63, [red.RedBlock(111, 960, b"old")])
    oh = parse_header(out)
    assert (oh.payload_type, oh.seq, oh.timestamp, oh.marker) == (63, 9, 10_000, True)
    assert red.unwrap(out, oh) == [(111, 9040, b"old"), (111, 10_000, b"opus")]
    assert red.primary_packet(out, oh) == pkt


def test_set_block_types_renumbers_every_block_and_counts_the_redundant_ones() -> None:
    payload = red.encode(111, b"p", [red.RedBlock(111, 960, b"a"), red.RedBlock(111, 480, b"b")])
    buf = bytearray(b"\x00" * 12 + payload)
    assert red.set_block_types(buf, 12, 109) == 2
    blocks, primary = red.decode(bytes(buf[12:]))
    assert [b.payload_type for b in blocks] == [109, 109] and primary.payload_type == 109
    assert [(b.timestamp_offset, b.data) for b in blocks] == [(960, b"a"), (480, b"b")]
    with pytest.raises(red.RedError):
        red.set_block_types(bytearray(b"\x80\x00\x00\x00"), 0, 109)  # headers never end
