"""RTCP codec: RFC byte layouts, round trips, compound parsing, malformed input."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sfu.wire.rtcp import (
    Bye,
    Fir,
    Nack,
    Pli,
    ReceiverReport,
    Remb,
    ReportBlock,
    RtcpError,
    RtcpPacket,
    Sdes,
    SenderReport,
    UnknownRtcp,
    is_rtcp,
    ntp_from_unix,
    ntp_middle32,
    parse_compound,
    serialize_compound,
    sort_seqs,
    unix_from_ntp,
)

BLOCK = ReportBlock(
    ssrc=0x55667788,
    fraction_lost=0x40,
    packets_lost=5,
    highest_seq=0x00010010,
    jitter=0x20,
    lsr=0x12345678,
    dlsr=0x00010000,
)
BLOCK_BYTES = bytes.fromhex(
    "55667788"  # ssrc of source
    "40000005"  # fraction lost | cumulative lost (24-bit)
    "00010010"  # extended highest seq: 1 cycle, seq 16
    "00000020"  # jitter
    "12345678"  # LSR
    "00010000"  # DLSR (1 s)
)


def parse_one(data: bytes) -> RtcpPacket:
    packets = parse_compound(data)
    assert len(packets) == 1
    return packets[0]


# --- hand-built vectors against the RFC layouts ---------------------------------


def test_sender_report_layout() -> None:
    wire = (
        bytes.fromhex(
            "81c8000c"  # V=2 P=0 RC=1, PT=200, length 12 words (52 bytes total)
            "11223344"  # SSRC of sender
            "83aa7e80"  # NTP seconds
            "80000000"  # NTP fraction (0.5 s)
            "000003e8"  # RTP timestamp
            "0000000a"  # sender's packet count
            "00000320"  # sender's octet count
        )
        + BLOCK_BYTES
    )
    sr = SenderReport(
        ssrc=0x11223344,
        ntp_timestamp=0x83AA7E80_80000000,
        rtp_timestamp=1000,
        packet_count=10,
        octet_count=800,
        reports=[BLOCK],
    )
    assert bytes(sr) == wire
    assert parse_one(wire) == sr


def test_receiver_report_layout_with_negative_loss() -> None:
    wire = bytes.fromhex(
        "81c90007"  # V=2 RC=1 PT=201 length 7
        "0a0b0c0d"  # SSRC of packet sender
        "01020304"  # SSRC of source
        "00ffffff"  # fraction 0, cumulative lost -1 (duplicates)
        "0000ffff"
        "00000000"
        "00000000"
        "00000000"
    )
    rr = ReceiverReport(0x0A0B0C0D, [ReportBlock(0x01020304, 0, -1, 0xFFFF, 0, 0, 0)])
    assert bytes(rr) == wire
    assert parse_one(wire) == rr


def test_pli_layout() -> None:
    wire = bytes.fromhex("81ce0002 00000001 00000002")
    assert bytes(Pli(1, 2)) == wire
    assert parse_one(wire) == Pli(1, 2)


def test_fir_layout() -> None:
    wire = bytes.fromhex(
        "84ce0004"  # FMT=4 PT=206 length 4
        "00000001"  # sender SSRC
        "00000000"  # media SSRC, SHALL be 0
        "0000abcd"  # FCI: target SSRC
        "07000000"  # FCI: command seq nr 7, reserved
    )
    assert bytes(Fir(1, [(0xABCD, 7)])) == wire
    assert parse_one(wire) == Fir(1, [(0xABCD, 7)])


def test_nack_layout() -> None:
    wire = bytes.fromhex(
        "81cd0003"  # FMT=1 PT=205 length 3
        "00000001"  # sender SSRC
        "00000002"  # media SSRC
        "00640005"  # PID 100, BLP bits 0 and 2 -> 101, 103
    )
    nack = Nack(1, 2, [100, 101, 103])
    assert bytes(nack) == wire
    assert parse_one(wire) == nack


def test_nack_across_sequence_wrap() -> None:
    nack = Nack(1, 2, [65534, 65535, 0, 1])
    # One PID+BLP pair: PID 65534, then +1, +2, +3 -> bits 0..2.
    assert bytes(nack)[12:] == bytes.fromhex("fffe0007")
    assert parse_one(bytes(nack)) == Nack(1, 2, [65534, 65535, 0, 1])


def test_nack_splits_pairs_beyond_16_and_sorts_input() -> None:
    nack = Nack(1, 2, [28, 10, 10, 65530])
    assert nack.lost == [65530, 10, 28]
    # 65530 -> 10 is exactly 16 apart (last BLP bit); 10 -> 28 is 18, a new pair.
    assert bytes(nack)[12:] == bytes.fromhex("fffa8000 001c0000")
    assert parse_one(bytes(nack)) == nack


def test_sort_seqs_rejects_out_of_range() -> None:
    with pytest.raises(RtcpError):
        sort_seqs([70000])


def test_remb_layout_and_mantissa_precision() -> None:
    remb = Remb(sender_ssrc=1, bitrate=1_234_567, ssrcs=[0xAA, 0xBB])
    wire = bytes(remb)
    # 1_234_567 >> 3 = 154320 fits 18 bits: exp 3, mantissa 0x25AD0.
    assert wire == bytes.fromhex("8fce0006 00000001 00000000 52454d42 020e5ad0 000000aa 000000bb")
    parsed = parse_one(wire)
    assert parsed == Remb(1, 154320 << 3, [0xAA, 0xBB])


# --- round trips ----------------------------------------------------------------

ROUND_TRIP: list[RtcpPacket] = [
    SenderReport(1, ntp_from_unix(1_700_000_000.25), 90000, 5, 500, []),
    SenderReport(1, 2**64 - 1, 2**32 - 1, 2**32 - 1, 0, [BLOCK, BLOCK]),
    ReceiverReport(7, []),
    ReceiverReport(7, [BLOCK] * 31),
    Sdes([(1, "alice@example"), (2, ""), (3, "x" * 255), (4, "näme")]),
    Sdes([]),
    Bye([]),
    Bye([1, 2, 3]),
    Nack(1, 2, [5]),
    Nack(1, 2, list(range(0, 40, 3))),
    Pli(0xFFFFFFFF, 0),
    Fir(9, []),
    Fir(9, [(1, 0), (2, 255)]),
    Remb(3, 0, []),
    Remb(3, 250_000, [1]),
    UnknownRtcp(205, 3, bytes(range(20))),  # TMMBR (transport-cc has its own codec now)
    UnknownRtcp(207, 0, b"\x00\x00\x00\x01" * 3),  # XR
    UnknownRtcp(206, 15, b"\x00" * 8 + b"NOPE"),  # app-layer FB that is not REMB
]


@pytest.mark.parametrize("packet", ROUND_TRIP, ids=lambda p: type(p).__name__)
def test_round_trip(packet: RtcpPacket) -> None:
    wire = bytes(packet)
    assert len(wire) % 4 == 0
    assert int.from_bytes(wire[2:4], "big") == len(wire) // 4 - 1
    assert parse_one(wire) == packet
    assert bytes(parse_one(wire)) == wire


def test_compound_round_trip_of_everything() -> None:
    wire = serialize_compound(ROUND_TRIP)
    assert parse_compound(wire) == ROUND_TRIP


def test_unknown_packet_with_padding_round_trips_byte_exact() -> None:
    # APP packet: 6 body bytes + 2 padding bytes, P bit set.
    wire = bytes.fromhex("a0cc0002 616263646566 0002")
    parsed = parse_one(wire)
    assert parsed == UnknownRtcp(204, 0, b"abcdef")
    assert bytes(parsed) == wire


def test_report_block_clamps_packets_lost_to_24_bits() -> None:
    high = ReceiverReport(1, [ReportBlock(2, 0, 10_000_000, 0, 0, 0, 0)])
    low = ReceiverReport(1, [ReportBlock(2, 0, -10_000_000, 0, 0, 0, 0)])
    parsed_high = parse_one(bytes(high))
    parsed_low = parse_one(bytes(low))
    assert isinstance(parsed_high, ReceiverReport) and isinstance(parsed_low, ReceiverReport)
    assert parsed_high.reports[0].packets_lost == 2**23 - 1
    assert parsed_low.reports[0].packets_lost == -(2**23)


@pytest.mark.parametrize(
    "packet",
    [
        Pli(2**32, 0),
        ReceiverReport(1, [BLOCK] * 32),
        Bye(list(range(32))),
        Sdes([(1, "x" * 256)]),
        Fir(1, [(1, 256)]),
        ReceiverReport(1, [ReportBlock(1, 256, 0, 0, 0, 0, 0)]),
        ReceiverReport(1, [ReportBlock(1, -1, 0, 0, 0, 0, 0)]),
        Remb(1, -1, []),
        UnknownRtcp(205, 32, b""),
    ],
)
def test_unencodable_fields_raise(packet: RtcpPacket) -> None:
    with pytest.raises(RtcpError):
        bytes(packet)


# --- compound and SDES parsing --------------------------------------------------


def test_compound_sr_then_sdes() -> None:
    wire = bytes.fromhex(
        "80c80006"  # SR, RC=0, length 6
        "00001234"
        "83aa7e8000000000"
        "00000064"
        "00000001"
        "000000a0"
        "81ca0003"  # SDES, SC=1, length 3
        "00001234"  # chunk SSRC
        "0103616263"  # CNAME "abc"
        "000000"  # null item + pad to 32 bits
    )
    sr, sdes = parse_compound(wire)
    assert sr == SenderReport(0x1234, 0x83AA7E80 << 32, 100, 1, 160, [])
    assert sdes == Sdes([(0x1234, "abc")])
    assert serialize_compound([sr, sdes]) == wire


def test_sdes_skips_other_items_and_chunks_without_cname() -> None:
    wire = bytes.fromhex(
        "82ca0006"  # SC=2, length 6
        "00000001"
        "02026e6e"  # NAME "nn"
        "010178"  # CNAME "x"
        "0600"  # TOOL ""
        "000000"  # null item, padding
        "00000002"
        "0501ff"  # LOC, no CNAME in this chunk
        "00"  # null item (already aligned after)
    )
    assert parse_one(wire) == Sdes([(1, "x"), (2, "")])


def test_padding_on_last_packet_of_compound() -> None:
    rr = bytes(ReceiverReport(5, []))
    pli = bytes.fromhex("a1ce0003 00000001 00000002 00000004")
    assert parse_compound(rr + pli) == [ReceiverReport(5, []), Pli(1, 2)]


# --- malformed input ------------------------------------------------------------

VALID_COMPOUND = serialize_compound(
    [SenderReport(1, 2, 3, 4, 5, [BLOCK]), Sdes([(1, "cname")]), Nack(1, 2, [1, 3, 40])]
)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\x80\xc8\x00", "truncated RTCP header"),
        (bytes(Pli(1, 2)) + b"\x80", "truncated RTCP header"),
        (bytes.fromhex("81c90007") + bytes(8), "runs past"),
        (bytes.fromhex("80c9ffff"), "runs past"),
        (bytes.fromhex("41c90001") + bytes(4), "version 1"),
        (bytes.fromhex("01c90001") + bytes(4), "version 0"),
        (bytes.fromhex("81c90001") + bytes(4), "RR with 1 report blocks"),
        (bytes.fromhex("81c80006") + bytes(24), "SR with 1 report blocks"),
        (bytes.fromhex("80c80000"), "SR"),
        (bytes.fromhex("81ce0000"), "PLI"),
        (bytes.fromhex("84ce0003") + bytes(12), "FIR FCI"),
        (bytes.fromhex("81cd0001") + bytes(4), "NACK"),
        (bytes.fromhex("a1cd0003") + bytes(10) + b"\x00\x02", "NACK FCI"),
        (bytes.fromhex("83cb0002") + bytes(8), "BYE with 3 ssrcs"),
        (bytes.fromhex("81ca0001") + b"\x00\x00\x00\x01", "no terminating null"),
        (bytes.fromhex("81ca0002") + b"\x00\x00\x00\x01\x01\x09ab", "truncated"),
        (bytes.fromhex("82ca0002") + b"\x00\x00\x00\x01\x00\x00\x00\x00", "SDES chunk 1"),
        (bytes.fromhex("8fce0004") + bytes(8) + b"REMB\x02\x00\x00\x00", "REMB with 2"),
        (bytes.fromhex("a0c90001") + b"\x00\x00\x00\x05", "padding count 5"),
        (bytes.fromhex("a0c90001") + b"\x00\x00\x00\x00", "padding count 0"),
        (bytes.fromhex("a0c90000"), "padding count 0"),
    ],
)
def test_malformed_raises_rtcp_error(data: bytes, message: str) -> None:
    with pytest.raises(RtcpError, match=message):
        parse_compound(data)


def test_every_truncation_inside_a_packet_is_rejected() -> None:
    boundaries = {0}
    for packet in parse_compound(VALID_COMPOUND):
        boundaries.add(max(boundaries) + len(bytes(packet)))
    assert len(boundaries) == 4
    for cut in range(len(VALID_COMPOUND)):
        if cut in boundaries and cut:
            assert len(parse_compound(VALID_COMPOUND[:cut])) == sorted(boundaries).index(cut)
            continue
        with pytest.raises(RtcpError):
            parse_compound(VALID_COMPOUND[:cut])


def test_random_corruption_raises_only_rtcp_error() -> None:
    rng = random.Random(1234)
    for _ in range(3000):
        data = bytearray(VALID_COMPOUND)
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            parse_compound(bytes(data))
        except RtcpError:
            pass


@given(st.binary(max_size=120))
def test_arbitrary_bytes_raise_only_rtcp_error(data: bytes) -> None:
    try:
        packets = parse_compound(b"\x80" + data)  # valid version, so parsing goes deeper
    except RtcpError:
        return
    assert all(isinstance(p, RtcpPacket) for p in packets)


# --- demux and NTP --------------------------------------------------------------


@pytest.mark.parametrize(
    ("second_byte", "expected"),
    [
        (200, True),
        (192, True),
        (223, True),
        (206, True),
        (191, False),
        (224, False),
        (0x60, False),
        (0xE0, False),
        (0x80 | 111, False),
    ],
)
def test_is_rtcp(second_byte: int, expected: bool) -> None:
    assert is_rtcp(bytes([0x80, second_byte, 0, 1])) is expected


def test_is_rtcp_short_input() -> None:
    assert not is_rtcp(b"")
    assert not is_rtcp(b"\x80")


def test_ntp_helpers() -> None:
    assert ntp_from_unix(0.0) == 2_208_988_800 << 32
    assert ntp_from_unix(1.5) == (2_208_988_801 << 32) | 0x8000_0000
    t = 1_700_000_000.123456
    assert unix_from_ntp(ntp_from_unix(t)) == pytest.approx(t, abs=1e-6)
    assert ntp_middle32(0x1122_3344_5566_7788) == 0x3344_5566
