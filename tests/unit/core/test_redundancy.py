"""RedEncoder: adaptive distance and encoding; RedDecoder dedup."""

from __future__ import annotations

import pytest

from sfu.core.redundancy import RedDecoder, RedEncoder, RedRecovery
from sfu.wire import red
from sfu.wire.rtp import build_packet, parse_header

RED, OPUS = 63, 111


def opus(i: int, size: int = 80) -> bytes:
    return build_packet(payload_type=OPUS, seq=i, timestamp=(960 * i) & 0xFFFF_FFFF, ssrc=1,
                        payload=bytes([i & 0xFF]) * size)


def blocks_of(data: bytes) -> list[tuple[int, int, bytes]]:
    return red.unwrap(data, parse_header(data))


def test_distance_policy() -> None:
    e = RedEncoder(RED, max_distance=8, target_residual=0.005)
    assert [e.distance_for(p) for p in (0.0, 0.004, 0.02, 0.1, 0.2, 0.5, 0.7, 1.0)] == [
        0, 0, 1, 2, 3, 7, 8, 8]


def test_clean_link_sends_primary_only_with_one_byte_overhead() -> None:
    e = RedEncoder(RED)
    e.set_loss(0.0, 0.0)
    outs = [e.encode(opus(i), i * 0.02) for i in range(10)]
    assert all(len(blocks_of(o)) == 1 for o in outs)
    assert e.overhead_bytes == 10  # the primary's 1-byte block header


def test_heavy_loss_carries_the_last_n_payloads_in_order() -> None:
    e = RedEncoder(RED)
    e.set_loss(0.5, 0.0)
    assert e.distance == 7
    outs = [e.encode(opus(i), i * 0.02) for i in range(10)]
    b = blocks_of(outs[9])
    assert [ts // 960 for _, ts, _ in b] == [2, 3, 4, 5, 6, 7, 8, 9]
    assert b[0][2] == bytes([2]) * 80 and b[-1][2] == bytes([9]) * 80
    assert [len(blocks_of(o)) for o in outs[:3]] == [1, 2, 3]  # history fills up


def test_loss_rises_at_once_and_falls_slowly() -> None:
    e = RedEncoder(RED, smoothing=0.5)
    e.set_loss(0.5, 0.0)
    e.set_loss(0.0, 1.0)
    assert e.loss == pytest.approx(0.25) and e.distance == 3
    for t in range(2, 12):
        e.set_loss(0.0, float(t))
    assert e.distance == 0


def test_max_packet_drops_oldest_copies() -> None:
    e = RedEncoder(RED, max_packet=12 + 1 + 300 + 2 * (4 + 300))
    e.set_loss(0.9, 0.0)
    outs = [e.encode(opus(i, 300), i * 0.02) for i in range(6)]
    assert [ts // 960 for _, ts, _ in blocks_of(outs[5])] == [3, 4, 5]
    assert all(len(o) <= e.max_packet for o in outs)


def test_publisher_red_is_passed_through() -> None:
    e = RedEncoder(RED)
    p = red.wrap(opus(1), parse_header(opus(1)), RED, [])
    assert e.encode(p, 0.0) is p and e.passed_through == 1


def test_decoder_recovers_each_timestamp_once_under_every_loss_pattern_of_two() -> None:
    """Distance 2: any run of at most two lost packets is fully recovered."""
    e = RedEncoder(RED, initial_distance=2, max_distance=2)
    sent = [e.encode(opus(i), i * 0.02) for i in range(8)]
    for a in range(2, 6):
        for lost in ({a}, {a, a + 1}):
            d = RedDecoder()
            got: list[int] = []
            for i, pkt in enumerate(sent):
                if i in lost:
                    continue
                got += [ts // 960 for _, ts, _, _ in d.decode(pkt, 0.0)]
            assert sorted(got) == list(range(8)), lost
            assert len(got) == 8 and d.recovered == len(lost)


def _opus(seq: int, ts: int, payload: bytes) -> bytes:
    return build_packet(payload_type=111, seq=seq, timestamp=ts, ssrc=7, payload=payload,
                        extensions=[(1, b"\x30")])


def test_red_recovery_rebuilds_uplink_losses_for_viewers_without_red() -> None:
    enc = RedEncoder(63, initial_distance=2)
    plain = [_opus(100 + i, 960 * i, bytes([i]) * (20 + i)) for i in range(6)]
    wire = [enc.encode(p, 0.0) for p in plain]
    rec = RedRecovery()
    got: list[bytes] = []
    for i, w in enumerate(wire):
        if i in (2, 3):
            continue  # lost on the uplink
        got += rec.on_packet(w, parse_header(w))
    # 102 and 103 come back from 104's and 105's redundancy, each once, oldest first.
    assert [parse_header(p).seq for p in got] == [100, 101, 102, 103, 104, 105]
    assert got == plain  # byte for byte: header, extensions, timestamp, payload
    assert rec.recovered == 2
    assert rec.on_packet(wire[5], parse_header(wire[5])) == []  # a duplicate
