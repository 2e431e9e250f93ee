"""FecEncoder adaptation and grouping; FecDecoder recovery on every loss pattern."""

from __future__ import annotations

import itertools

import pytest

from sfu.core.fec import FecDecoder, FecEncoder, FecGaps, UlpfecEncoder
from sfu.core.munger import RtpMunger
from sfu.wire import red, ulpfec
from sfu.wire.rtp import build_packet, parse_header

SSRC = 0xABC


def frame(first_seq: int, n: int, ts: int, size: int = 300) -> list[bytes]:
    return [build_packet(payload_type=96, seq=(first_seq + i) & 0xFFFF, timestamp=ts, ssrc=SSRC,
                         marker=i == n - 1, payload=bytes([i + 1]) * (size - 7 * i))
            for i in range(n)]


def encoder(**kw: float) -> FecEncoder:
    return FecEncoder(media_ssrc=SSRC, fec_ssrc=0xFEC, payload_type=120, **kw)  # type: ignore[arg-type]


def test_fec_is_off_while_nack_suffices() -> None:
    e = encoder(rtt=0.05)
    assert e.protection == 0.0
    e.set_loss(0.05, 0.0)  # 5 % at 50 ms RTT: NACK repairs it in time
    assert e.protection == 0.0
    e.set_rtt(0.15)  # a long RTT: now FEC
    assert e.protection == pytest.approx(0.1)
    e.set_rtt(0.05)
    e.set_loss(0.2, 1.0)  # heavy loss: FEC even on a short RTT
    assert e.protection == pytest.approx(0.4)
    e.set_loss(0.9, 2.0)
    assert e.protection == 1.0
    e.set_loss(0.01, 3.0)  # falls slowly (EWMA 0.3 per second)
    assert e.loss == pytest.approx(0.9 + 0.3 * (0.01 - 0.9))
    high = e.loss
    for i in range(1, 11):  # ten lossless reports in 0.1 s (Chromium: one per NACK)
        e.set_loss(0.0, 3.0 + i / 100)
    assert e.loss == pytest.approx(high * 0.7 ** 0.1)
    for t in range(4, 20):
        e.set_loss(0.0, float(t))
    assert e.protection == 0.0


def test_one_frame_one_group_sent_after_the_marker() -> None:
    e = encoder(rtt=0.2)
    e.set_loss(0.2, 0.0)  # protection 0.4: 5 packets -> 2 FEC packets
    pkts = frame(0xFFFE, 5, 3000)
    outs = [e.on_packet(p, 0.0) for p in pkts]
    assert [len(o) for o in outs] == [0, 0, 0, 0, 2]
    hs = [parse_header(p) for p in outs[-1]]
    assert [(h.ssrc, h.payload_type, h.seq, h.timestamp) for h in hs] == [
        (0xFEC, 120, 0, 3000), (0xFEC, 120, 1, 3000)]
    assert e.fec_packets == 2 and e.media_packets == 5


def recover_all(pkts: list[bytes], fecs: list[bytes], lost: set[int]) -> set[int]:
    d = FecDecoder(SSRC)
    got: set[int] = set()
    for i, p in enumerate(pkts):
        if i not in lost:
            d.on_media(p, 0.0)
    for f in fecs:
        for r in d.on_flexfec(f, 0.0):
            got.add(pkts.index(r))  # bytes-identical to the lost original
    return got


def test_every_single_loss_pattern_is_recovered_for_a_group() -> None:
    e = encoder(rtt=0.2, max_protection=0.2)
    e.set_loss(0.05, 0.0)  # protection 0.1: 8 packets -> 1 FEC packet covering all
    pkts = frame(100, 8, 9000)
    fecs = [f for p in pkts for f in e.on_packet(p, 0.0)]
    assert len(fecs) == 1
    for lost in range(8):
        assert recover_all(pkts, fecs, {lost}) == {lost}
    assert recover_all(pkts, fecs, {1, 2}) == set()


def test_interleaving_recovers_every_burst_up_to_the_fec_count() -> None:
    e = encoder(rtt=0.2)
    e.set_loss(0.2, 0.0)  # 10 packets -> 4 FEC packets, packet i in FEC i % 4
    pkts = frame(500, 10, 0)
    fecs = [f for p in pkts for f in e.on_packet(p, 0.0)]
    assert len(fecs) == 4
    for start, length in itertools.product(range(10), range(1, 5)):
        lost = set(range(start, min(10, start + length)))
        assert recover_all(pkts, fecs, lost) == lost, lost


def test_decoder_recovers_when_fec_arrives_before_the_media() -> None:
    pkts = frame(7, 3, 0)
    fec = ulpfec.xor(pkts, [7, 8, 9])
    d = FecDecoder(SSRC)
    assert d.on_fec(fec, 0.0) == []
    assert d.on_media(pkts[0], 0.0) == []
    assert d.on_media(pkts[2], 0.0) == [pkts[1]]
    assert d.recovered == 1 and d.on_media(pkts[1], 0.0) == []


def test_decoder_cascades_through_two_fec_packets() -> None:
    pkts = frame(0, 4, 0)
    d = FecDecoder(SSRC)
    d.on_media(pkts[0], 0.0)
    d.on_fec(ulpfec.xor(pkts[:3], [0, 1, 2]), 0.0)  # missing 1 and 2: not yet
    assert d.on_fec(ulpfec.xor(pkts[2:], [2, 3]), 0.0) == []
    assert sorted(d.on_media(pkts[3], 0.0)) == sorted([pkts[2], pkts[1]])


def test_decoder_ingress_red_ulpfec_as_chromium_sends() -> None:
    pkts = frame(40, 3, 0)
    fec_payload = ulpfec.encode(ulpfec.xor(pkts, [40, 41, 42]))
    fec_pkt = build_packet(payload_type=116, seq=43, timestamp=0, ssrc=SSRC,
                           payload=red.encode(117, fec_payload))
    d = FecDecoder(SSRC)
    wrapped = [red.wrap(p, parse_header(p), 116) for p in pkts]
    assert d.on_red(wrapped[0], 117, 0.0) == [pkts[0]]
    assert d.on_red(fec_pkt, 117, 0.0) == []
    assert d.on_red(wrapped[2], 117, 0.0) == [pkts[2], pkts[1]]


def test_a_late_older_packet_is_not_put_in_a_group() -> None:
    # A retransmission forwarded after newer packets must not make a group's span wrap.
    enc = FecEncoder(media_ssrc=1, fec_ssrc=2, payload_type=118, rtt=0.3)
    enc.set_loss(0.2, 0.0)
    newer = [build_packet(payload_type=96, seq=s, timestamp=9000, ssrc=1, payload=b"x" * 50)
             for s in (10, 11)]
    late = build_packet(payload_type=96, seq=5, timestamp=6000, ssrc=1, payload=b"y" * 50,
                        marker=True)
    for p in newer:
        assert enc.on_packet(p, 0.0) == []
    assert enc.on_packet(late, 0.0) == []  # skipped, no exception
    last = build_packet(payload_type=96, seq=12, timestamp=9000, ssrc=1, payload=b"z" * 50,
                        marker=True)
    assert enc.on_packet(last, 0.0)  # the group 10-12 is protected as usual


def test_ulpfec_in_red_takes_the_seqs_after_the_frame_and_decodes_at_ingress() -> None:
    munger = RtpMunger(90000, seq_start=65_533, ts_start=0)
    enc = UlpfecEncoder(media_ssrc=SSRC, red_pt=116, ulpfec_pt=117, reserve=munger.insert,
                        rtt=0.15)
    enc.set_loss(0.1, 0.0)  # protection 0.2: 5 packets -> 1 FEC packet
    wire: list[bytes] = []
    plain: list[bytes] = []
    for p in frame(7000, 5, 3000) + frame(7005, 5, 6000):
        h = parse_header(p)
        got = munger.rewrite(h.seq, h.timestamp, 0.0)
        assert got is not None
        out = build_packet(payload_type=96, seq=got[0], timestamp=got[1], ssrc=SSRC,
                           marker=h.marker, payload=p[h.payload_start:])
        plain.append(out)
        wire.append(enc.wrap(out))
        wire += enc.on_packet(out, 0.0)
    hs = [parse_header(p) for p in wire]
    # One continuous seq space: 5 media, their FEC, 5 media, their FEC (wrapping at 2^16).
    assert [h.seq for h in hs] == [(65_533 + i) & 0xFFFF for i in range(12)]
    assert all(h.payload_type == 116 for h in hs)
    assert [red.decode(p[h.payload_start:])[1].payload_type for p, h in zip(wire, hs,
            strict=True)] == [96] * 5 + [117] + [96] * 5 + [117]
    assert hs[5].timestamp == 0 and not hs[5].marker and hs[11].timestamp == 3000  # munged ts
    assert enc.fec_packets == 2 and enc.media_packets == 10
    # The ingress decoder (what Chromium does too): any one lost packet per frame comes back.
    for lost in (0, 4, 7):
        d = FecDecoder(SSRC)
        out_plain: list[bytes] = []
        for i, p in enumerate(wire):
            if i != lost + (lost >= 5):
                out_plain += d.on_red(p, 117, 0.0)
        assert sorted(out_plain) == sorted(plain)
        assert d.recovered == 1


def test_ulpfec_without_room_sends_no_fec_and_off_means_red_only() -> None:
    enc = UlpfecEncoder(media_ssrc=SSRC, red_pt=116, ulpfec_pt=117, reserve=lambda n: None,
                        rtt=0.3)
    pkts = frame(1, 3, 0)
    assert [enc.on_packet(p, 0.0) for p in pkts] == [[], [], []]  # no loss: FEC off
    enc.set_loss(0.3, 0.0)
    assert [enc.on_packet(p, 0.0) for p in pkts] == [[], [], []]  # no seqs to put it in
    assert enc.fec_packets == 0
    with pytest.raises(ValueError):
        UlpfecEncoder(media_ssrc=SSRC, red_pt=116, ulpfec_pt=117, reserve=lambda n: 0,
                      max_group=49)


def test_fec_gaps_closes_only_seqs_between_a_frame_and_the_next() -> None:
    g = FecGaps()
    fec_of = ulpfec.xor(frame(10, 2, 0), [10, 11])
    assert g.on_packet(10, 90, begins_frame=True, picture_id=5) == []
    assert g.on_packet(11, 90, marker=True, picture_id=5) == []  # frame 5 ends
    # 12 lost, 13 an FEC packet that does not protect it: not enough (the pacer may have
    # sent frame 6's media ahead of frame 5's FEC).
    assert g.on_packet(13, 0, fec=fec_of) == []
    # 14 and 15 lost, 16 starts frame 6: everything missing since frame 5 ended was FEC.
    assert g.on_packet(16, 180, begins_frame=True, picture_id=6) == [
        (12, 90), (14, 90), (15, 90)]
    assert g.on_packet(17, 180, marker=True, picture_id=6) == []
    # A gap before a frame that is not the next one may have held a whole frame: kept.
    assert g.on_packet(20, 360, begins_frame=True, picture_id=8) == []
    # A gap inside a frame is media.
    assert g.on_packet(23, 360, marker=True, picture_id=8) == []
    assert g.on_packet(16, 0) == []  # a duplicate changes nothing
    assert g.closed == 3


def test_fec_gaps_a_missing_frame_blocks_until_it_arrives_late() -> None:
    # [frame 1 ends at 30][31 lost: frame 2's only packet][FEC 32][33 lost: FEC][frame 3]
    g = FecGaps()
    g.on_packet(30, 90, begins_frame=True, marker=True, picture_id=1)
    g.on_packet(32, 0, fec=ulpfec.xor(frame(29, 2, 0), [29, 30]))
    assert g.on_packet(34, 270, begins_frame=True, picture_id=3) == []  # 31, 33 unknown
    # 31 comes back (rebuilt or resent): frame 2 ends there, so 33 was FEC.
    assert g.on_packet(31, 180, begins_frame=True, marker=True, picture_id=2) == [(33, 180)]


def test_fec_gaps_picture_id_wraps_and_old_packets_are_ignored() -> None:
    g = FecGaps(window=64)
    g.on_packet(65_535, 0, marker=True, picture_id=0x7FFF)
    assert g.on_packet(1, 0, begins_frame=True, picture_id=0) == [(0, 0)]
    g.on_packet(2, 0, marker=True, picture_id=127, picture_id_bits=7)
    assert g.on_packet(4, 0, begins_frame=True, picture_id=0, picture_id_bits=7) == [(3, 0)]
    for s in range(5, 400):
        g.on_packet(s, 0)
    assert g.on_packet(200, 0, marker=True) == []  # behind the window
    assert len(g._seen) + len(g._closed) <= 2 * 64 + 1


def test_decoder_never_xors_an_rtx_copy_whose_extensions_differ() -> None:
    pkts = frame(60, 3, 0)
    fec_pkt = build_packet(payload_type=116, seq=63, timestamp=0, ssrc=SSRC,
                           payload=red.encode(117, ulpfec.encode(ulpfec.xor(pkts, [60, 61, 62]))))
    wrapped = [red.wrap(p, parse_header(p), 116) for p in pkts]
    # The retransmission of 60 carries an extension the original (and the FEC) did not.
    h0 = parse_header(pkts[0])
    resent = build_packet(payload_type=96, seq=60, timestamp=0, ssrc=SSRC,
                          extensions=[(3, b"\x01\x02")], payload=pkts[0][h0.payload_start:])
    d = FecDecoder(SSRC)
    assert d.on_red(red.wrap(resent, parse_header(resent), 116), 117, 0.0,
                    retransmission=True) == [resent]
    assert d.on_red(wrapped[0], 117, 0.0) == []  # the original, late: already passed on
    assert d.on_red(fec_pkt, 117, 0.0) == []  # 61 and 62 missing, 60 only as RTX: no guess
    assert d.on_red(wrapped[2], 117, 0.0) == [pkts[2]]
    assert d.recovered == 0
