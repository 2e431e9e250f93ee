"""History: bounded by count and age, keyed by outgoing seq, with the incoming mapping."""

from __future__ import annotations

import pytest

from sfu.core.history import History


def test_get_returns_the_packet_until_overwritten_or_too_old() -> None:
    h = History(size=4, max_age=1.0)
    for i in range(6):
        h.push(100 + i, bytes([i]), now=i * 0.1)
    assert h.get(101, 0.6) is None  # slot reused by 105
    e = h.get(103, 0.6)
    assert e is not None and e.data == b"\x03" and e.seq == 103
    assert h.get(103, 0.3 + 1.0) is not None
    assert h.get(103, 0.3 + 1.0001) is None  # older than max_age
    assert h.get(200, 0.6) is None


def test_seq_wrap_and_bytes_accounting() -> None:
    h = History(size=8)
    h.push(0xFFFF, b"ab", 0.0)
    h.push(0, b"cde", 0.0)
    assert h.get(0xFFFF, 0.0) is not None and h.get(0, 0.0) is not None
    assert h.bytes_stored == 5 and len(h) == 2


def test_incoming_seq_follows_the_current_mapping_only() -> None:
    h = History(size=64)
    for out_seq, in_seq in [(10, 1000), (11, 1001), (13, 1003)]:  # 12 never arrived
        h.push(out_seq, b"x", 0.0, incoming_seq=in_seq)
    assert h.incoming_seq(12) == 1002
    assert h.incoming_seq(14) is None  # not assigned yet
    h.new_source()
    h.push(14, b"x", 0.0, incoming_seq=5000)  # source switch: a new delta
    assert h.incoming_seq(12) is None
    h.push(16, b"x", 0.0, incoming_seq=5002)
    assert h.incoming_seq(15) == 5001


def test_incoming_seq_keeps_earlier_offsets_of_the_same_source() -> None:
    # The node's FEC packets take outgoing seqs 3 and 4, and a closed gap (incoming 1007,
    # the publisher's FEC) shifts later packets back by one.
    h = History(size=64)
    for out_seq, in_seq in [(0, 1000), (1, 1001), (2, 1002), (5, 1003), (6, 1004)]:
        h.push(out_seq, b"x", 0.0, incoming_seq=in_seq)
    h.push(3, b"fec", 0.0)
    h.push(4, b"fec", 0.0)
    h.push(8, b"x", 0.0, incoming_seq=1006)
    h.push(9, b"x", 0.0, incoming_seq=1008)
    assert [h.incoming_seq(s) for s in (1, 5, 6, 7, 8, 9)] == [1001, 1003, 1004, 1005, 1006,
                                                                1008]
    h.push(2, b"late", 0.0, incoming_seq=1002)  # a late packet: the offsets stay
    assert h.incoming_seq(9) == 1008 and h.incoming_seq(1) == 1001
    assert h.incoming_seq(10) is None  # not sent yet


def test_size_must_be_power_of_two() -> None:
    with pytest.raises(ValueError):
        History(size=1000)
