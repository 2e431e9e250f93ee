"""Transport-cc feedback codec and the transport-wide sequence number extension.

Vector provenance:
* PION_*: byte strings from pion/rtcp's transport_layer_cc_test.go (TestTransportLayerCC_Marshal
  and _Unmarshal), i.e. what Pion's encoder writes and what its decoder reads. Their deltas are
  given there in microseconds; here they are in 250 us ticks (37000 us -> 148). Some of Pion's
  unmarshal vectors are not used byte for byte because they contradict their own header (the P
  bit set with a padding count that eats receive deltas, or a padding count of 0); those are
  noted where used.
* DRAFT_*: the chunk examples of draft-holmer-rmcat-transport-wide-cc-extensions-01 section
  3.1.3/3.1.4 (also in Pion's chunk tests), wrapped in a feedback message by hand.
* HAND_*: built from the draft's bit layout, each byte explained beside it.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sfu.wire.rtcp import RtcpError, parse_compound, serialize_compound
from sfu.wire.rtp import build_packet, parse_header
from sfu.wire.twcc import (
    TransportFeedback,
    pack_transport_seq,
    read_transport_seq,
    unpack_transport_seq,
)


def parse_one(data: bytes) -> TransportFeedback:
    packets = parse_compound(data)
    assert len(packets) == 1
    assert isinstance(packets[0], TransportFeedback)
    return packets[0]


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


# --- vectors written by Pion's encoder (byte-exact both ways) ---------------------------------

# One received packet, run-length chunk 0x2001 (small delta x1), delta 0x94 = 148 (37 ms),
# then one byte of RFC 3550 padding (P bit, count 1).
PION_EXAMPLE1 = h("afcd0005 fa17fa17 43032fa0 00990001 3de80217 20019401")
# Seven received packets: run-length chunk 0x2007, seven small deltas, 3 bytes of padding.
PION_EXAMPLE4 = h("afcd0007 fa17fa17 193dd8bb 00040007 10636e01 20074c24 24100c0c 10000003")
# Fourteen statuses in a one-bit vector 0xba00 = 1 0 | 1 1 1 0 1 0 0 0 0 0 0 0 0 0.
PION_MARSHAL5 = h("afcd0006 fa17fa17 193dd8bb 0001000e 10636d00 ba00100c 0c100002")
# Twelve statuses, one-bit vector 0xbec0 = 1 0 | 1 1 1 1 1 0 1 1 0 0 0 0 (0 0 unused), base 39956.
PION_MARSHAL6 = h("afcd0007 fa17fa17 43032fa0 9c14000c 75842000 bec0c13f 3b3f5390 3b000003")
# A feedback with no statuses at all (Pion accepts it; so do we).
PION_EXAMPLE7 = h("8fcd0004 9acb0442 00000000 00000000 00000000")

PION_VECTORS = [
    (
        PION_EXAMPLE1,
        TransportFeedback(4195875351, 1124282272, 153, 4057090, 23, [(153, 148)]),
    ),
    (
        PION_EXAMPLE4,
        TransportFeedback(
            4195875351, 423483579, 4, 1074030, 1,
            [(4, 76), (5, 36), (6, 36), (7, 16), (8, 12), (9, 12), (10, 16)],
        ),
    ),
    (
        PION_MARSHAL5,
        TransportFeedback(
            4195875351, 423483579, 1, 1074029, 0,
            [(1, 16), (2, 12), (3, 12), (4, None), (5, 16)] + [(s, None) for s in range(6, 15)],
        ),
    ),
    (
        PION_MARSHAL6,
        TransportFeedback(
            4195875351, 1124282272, 39956, 7701536, 0,
            [
                (39956, 193), (39957, 63), (39958, 59), (39959, 63), (39960, 83), (39961, None),
                (39962, 144), (39963, 59), (39964, None), (39965, None), (39966, None),
                (39967, None),
            ],
        ),
    ),
    (PION_EXAMPLE7, TransportFeedback(2596996162, 0, 0, 0, 0, [])),
]


@pytest.mark.parametrize(("wire", "expected"), PION_VECTORS)
def test_pion_vectors_parse_and_serialize_byte_exact(
    wire: bytes, expected: TransportFeedback
) -> None:
    assert parse_one(wire) == expected
    assert bytes(expected) == wire
    assert expected.serialize() == wire


def test_pion_unmarshal_example6_two_bit_vector_and_run_past_the_status_count() -> None:
    # From Pion's unmarshal test (a real-looking capture: odd SSRCs, fb count 179):
    # status count 9; chunk 0xd552 = 1 1 | 01 01 01 01 01 00 10 (5 small, lost, large) and
    # chunk 0x0030 = run of 48 "not received", of which only 2 are inside the count.
    # Deltas 0x9b 0xaa 0x6a 0xaa 0x7b (small) and 0x0109 (large, 265 = 66.25 ms), pad 1.
    wire = h("afcd0007 9b74f61f 9371dcbc 853c0009 63f916b3 d5520030 9baa6aaa 7b010901")
    fb = parse_one(wire)
    assert fb == TransportFeedback(
        2608133663, 2473712828, 34108, 6551830, 179,
        [
            (34108, 155), (34109, 170), (34110, 106), (34111, 170), (34112, 123),
            (34113, None), (34114, 265), (34115, None), (34116, None),
        ],
    )
    assert parse_one(bytes(fb)) == fb


def test_pion_unmarshal_example3_run_length_chunks_of_large_and_small_deltas() -> None:
    # Pion's vector has the P bit set but no padding (its last byte is a delta, 0x00), which
    # RFC 3550 forbids; with the P bit cleared (0xaf -> 0x8f) it reads: run of 2 large deltas
    # (0x4002) then a run of 4 small ones (0x2004); deltas 0x1ffe 0x1f9a, d0 00 d0 00.
    wire = h("8fcd0007 fa17fa17 193dd8bb 01740006 45b15a40 40022004 1ffe1f9a d000d000")
    fb = parse_one(wire)
    assert fb == TransportFeedback(
        4195875351, 423483579, 372, 4567386, 64,
        [(372, 8190), (373, 8090), (374, 208), (375, 0), (376, 208), (377, 0)],
    )
    assert parse_one(bytes(fb)) == fb
    with pytest.raises(RtcpError):
        parse_one(b"\xaf" + wire[1:])  # as Pion has it: padding count 0 is malformed


@pytest.mark.parametrize(
    "wire",
    [
        # Pion's example8: a run of 3 small deltas but only one delta byte (and padding).
        h("afcd0005 fa17fa17 43032fa0 00990003 3de80217 20039401"),
        # Pion's example9: a run of 2 large deltas but only 1 byte + padding.
        h("afcd0005 fa17fa17 43032fa0 00990002 3de80217 40029401"),
        # Status count 1 but no chunk at all.
        h("8fcd0004 00000001 00000002 00000001 00000000"),
        # Fixed part cut short (12 of 16 bytes).
        h("8fcd0003 00000001 00000002 00000001"),
        # Two-bit vector with the reserved symbol 3 inside the count: 0xf000 = 11 | 11 00 ...
        h("8fcd0005 00000001 00000002 00000001 00000000 f0000000"),
        # Run-length chunk of the reserved symbol: 0x6018 (draft 3.1.3 example 2).
        h("8fcd0005 00000001 00000002 00000001 00000000 60180000"),
        # Eight bytes of junk after the deltas.
        h("8fcd0007 00000001 00000002 00000001 00000000 20010400 00000000 00000000"),
    ],
)
def test_malformed_feedback_raises_rtcp_error(wire: bytes) -> None:
    with pytest.raises(RtcpError):
        parse_compound(wire)


# --- the draft's chunk examples inside whole messages ------------------------------------------


def test_draft_run_length_example_221_lost() -> None:
    # 3.1.3 example 1: 0x00dd = run of 221 "not received". Followed by one received packet
    # (run chunk 0x2001, delta 0x04). Body 16 + 4 + 1 = 21 bytes -> 3 bytes of padding.
    fb = TransportFeedback(1, 2, 100, 0, 0, [(100 + i, None) for i in range(221)] + [(321, 4)])
    wire = h("afcd0006 00000001 00000002 006400de 00000000 00dd2001 04000003")
    assert bytes(fb) == wire
    assert parse_one(wire) == fb


def test_draft_one_bit_vector_example() -> None:
    # 3.1.4 example 1: 0x9f1c = 1 0 | 0 1 1 1 1 1 0 0 0 1 1 1 0 0. Deltas 4, 8, ... 44 for the
    # eight received packets, then 2 bytes of padding.
    symbols = [0, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0]
    fb = TransportFeedback(1, 2, 7, 1, 3, [(7 + i, 4 * i if s else None) for i, s in enumerate(symbols)])
    wire = h("afcd0007 00000001 00000002 0007000e 00000103 9f1c0408 0c101424 282c0002")
    assert bytes(fb) == wire
    assert parse_one(wire) == fb


def test_hand_built_wrap_around_two_bit_vector_and_negative_delta() -> None:
    # base 65533, five statuses crossing 65535 -> 0:
    #   fffd small 10 | fffe lost | ffff large -4 (arrived before fffd) | 0000 small 255 |
    #   0001 large 256 (one tick too big for a small delta)
    # chunk 0xd260 = 1 1 | 01 00 10 01 10 | 00 00 (two unused slots)
    # deltas 0a | fffc | ff | 0100 -> body 24 bytes, no padding. Reference time 0x123456,
    # feedback count 255.
    fb = TransportFeedback(
        0x01020304, 0x05060708, 65533, 0x123456, 255,
        [(65533, 10), (65534, None), (65535, -4), (0, 255), (1, 256)],
    )
    wire = h("8fcd0006 01020304 05060708 fffd0005 123456ff d2600aff fcff0100")
    assert bytes(fb) == wire
    assert parse_one(wire) == fb
    assert [s for s, _ in fb.received()] == [65533, 65535, 0, 1]
    ref = 0x123456 * 0.064
    assert fb.received()[0][1] == pytest.approx(ref + 10 * 0.00025)
    assert fb.received()[-1][1] == pytest.approx(ref + (10 - 4 + 255 + 256) * 0.00025)


def test_encoder_packs_chunks_like_libwebrtc() -> None:
    # Seven equal statuses then a different one: a run chunk (0x2007), then a run of one.
    run: list[tuple[int, int | None]] = [(i, 1) for i in range(7)]
    fb = TransportFeedback(0, 0, 0, 0, 0, [*run, (7, 300)])
    assert bytes(fb)[20:24] == h("2007 4001")
    # Small, lost, 5 small, then a large: no one-bit vector can hold the large delta, so a
    # two-bit vector of the first 7 goes out (0xd155 = 11 | 01 00 01 01 01 01 01) and the
    # large delta starts a new chunk (run of one large, 0x4001).
    statuses = [1, None, 1, 1, 1, 1, 1, 300]
    fb = TransportFeedback(0, 0, 0, 0, 0, list(enumerate(statuses)))
    assert bytes(fb)[20:24] == h("d155 4001")
    # A long run of small deltas then one loss: one run chunk then a two-bit vector.
    fb = TransportFeedback(0, 0, 0, 0, 0, [(i, 1) for i in range(20)] + [(20, None), (21, 1)])
    assert bytes(fb)[20:24] == h("2014 c400")
    # More than 8191 equal statuses need two run chunks.
    fb = TransportFeedback(0, 0, 0, 0, 0, [(i, None) for i in range(9000)] + [(9000, 0)])
    assert bytes(fb)[20:26] == h("1fff 0329 2001")
    assert parse_one(bytes(fb)) == fb


def test_compound_with_receiver_report() -> None:
    from sfu.wire.rtcp import ReceiverReport

    fb = PION_VECTORS[1][1]
    rr = ReceiverReport(5, [])
    assert parse_compound(serialize_compound([rr, fb, fb])) == [rr, fb, fb]


@pytest.mark.parametrize(
    "fb",
    [
        TransportFeedback(0, 0, 0, 1 << 24, 0, []),
        TransportFeedback(0, 0, 0, 0, 256, []),
        TransportFeedback(1 << 32, 0, 0, 0, 0, []),
        TransportFeedback(0, 0, 0, 0, 0, [(0, 40000)]),
        TransportFeedback(0, 0, 0, 0, 0, [(0, -40000)]),
        TransportFeedback(0, 0, 5, 0, 0, [(5, 1), (7, 1)]),  # not consecutive
        TransportFeedback(0, 0, 0, 0, 0, [(i & 0xFFFF, None) for i in range(0x10000)]),
    ],
)
def test_unencodable_feedback_raises(fb: TransportFeedback) -> None:
    with pytest.raises(RtcpError):
        bytes(fb)


# --- properties --------------------------------------------------------------------------------

_delta = st.one_of(
    st.none(), st.integers(0, 255), st.integers(-0x8000, 0x7FFF), st.sampled_from([-1, 256])
)


@st.composite
def feedbacks(draw: st.DrawFn) -> TransportFeedback:
    base = draw(st.integers(0, 0xFFFF))
    statuses = draw(
        st.one_of(
            st.lists(_delta, max_size=60),
            # long runs exercise run-length chunks next to vectors
            st.lists(st.tuples(_delta, st.integers(1, 300)), max_size=6).map(
                lambda runs: [d for d, n in runs for _ in range(n)]
            ),
        )
    )
    return TransportFeedback(
        draw(st.integers(0, 0xFFFFFFFF)),
        draw(st.integers(0, 0xFFFFFFFF)),
        base,
        draw(st.integers(0, 0xFFFFFF)),
        draw(st.integers(0, 0xFF)),
        [((base + i) & 0xFFFF, d) for i, d in enumerate(statuses)],
    )


@given(feedbacks())
def test_round_trip(fb: TransportFeedback) -> None:
    wire = bytes(fb)
    assert len(wire) % 4 == 0
    assert int.from_bytes(wire[2:4], "big") == len(wire) // 4 - 1
    assert parse_one(wire) == fb
    assert bytes(parse_one(wire)) == wire


@given(st.binary(max_size=80))
def test_arbitrary_bodies_raise_only_rtcp_error(body: bytes) -> None:
    body += b"\x00" * (-len(body) % 4)
    wire = bytes([0x8F, 205]) + (len(body) // 4).to_bytes(2, "big") + body
    try:
        fb = parse_one(wire)
    except RtcpError:
        return
    assert len(fb.packets) == int.from_bytes(body[10:12], "big")


# --- the header extension ----------------------------------------------------------------------


def test_pack_unpack_transport_seq() -> None:
    assert pack_transport_seq(0x1234) == b"\x12\x34"
    assert pack_transport_seq(0x10001) == b"\x00\x01"  # modulo 2^16
    assert unpack_transport_seq(b"\xff\xfe") == 0xFFFE
    assert unpack_transport_seq(b"\x01") is None


@pytest.mark.parametrize("ext_id", [3, 14, 15, 200])
def test_read_transport_seq_one_and_two_byte_forms(ext_id: int) -> None:
    # ids 1..14 with short values use the one-byte form (RFC 8285), 15+ the two-byte form.
    elements = [(1, b"0"), (2, b"\x30"), (ext_id, pack_transport_seq(0xBEEF)), (4, b"abcdefgh")]
    pkt = build_packet(payload_type=96, seq=1, timestamp=2, ssrc=3, payload=b"x", extensions=elements)
    hdr = parse_header(pkt)
    assert read_transport_seq(pkt, hdr, ext_id) == 0xBEEF
    assert read_transport_seq(pkt, hdr, 9) is None


def test_read_transport_seq_absent_or_malformed() -> None:
    plain = build_packet(payload_type=96, seq=1, timestamp=2, ssrc=3, payload=b"x")
    assert read_transport_seq(plain, parse_header(plain), 3) is None
    wrong_len = build_packet(
        payload_type=96, seq=1, timestamp=2, ssrc=3, payload=b"x", extensions=[(3, b"\x01\x02\x03")]
    )
    assert read_transport_seq(wrong_len, parse_header(wrong_len), 3) is None
    # One-byte block whose element claims more bytes than the block holds: id 3, length 2,
    # one byte of value left.
    pkt = bytearray(build_packet(payload_type=96, seq=1, timestamp=2, ssrc=3, payload=b""))
    pkt[0] |= 0x10
    pkt += h("bede0001 00000031")  # padding, padding, padding, then id 3 len 2 at the end
    assert read_transport_seq(bytes(pkt), parse_header(bytes(pkt)), 3) is None


def test_uri_matches_the_negotiated_one() -> None:
    from sfu.negotiate import EXT_TRANSPORT_CC
    from sfu.wire.twcc import TRANSPORT_CC_URI

    assert TRANSPORT_CC_URI == EXT_TRANSPORT_CC
