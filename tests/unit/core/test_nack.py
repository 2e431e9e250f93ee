"""NackGenerator, NackResponder, UpstreamNackAggregator on a virtual clock."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from sfu.core.history import History
from sfu.core.keyframe import KeyframeRequester
from sfu.core.nack import NackGenerator, NackResponder, RtxConfig, UpstreamNackAggregator
from sfu.wire.rtp import build_packet, parse_header
from sfu.wire.rtx import unwrap

ROOT = Path(__file__).resolve().parents[3]


def feed(g: NackGenerator, seqs: list[int], now: float) -> None:
    for s in seqs:
        g.on_packet(s, now)


# --- generator ---------------------------------------------------------------------------


def test_gap_is_nacked_at_once_then_once_per_rtt() -> None:
    g = NackGenerator(rtt=0.1)
    feed(g, [1, 2, 5], 0.0)
    assert g.get_timer() == 0.0
    assert g.handle_timer(0.0) == [3, 4]
    assert g.get_timer() == pytest.approx(0.1)
    assert g.handle_timer(0.05) == []  # within one RTT: never re-request
    assert g.handle_timer(0.1) == [3, 4]
    g.on_packet(3, 0.12, is_retransmission=True)
    assert g.missing == [4] and g.recovered == 1
    assert g.handle_timer(0.2) == [4]
    assert g.requested == 5


def test_delay_holds_back_the_first_request() -> None:
    g = NackGenerator(rtt=0.1, delay=0.02)
    feed(g, [10, 12], 1.0)
    assert g.get_timer() == pytest.approx(1.02)
    assert g.handle_timer(1.01) == []
    g.on_packet(11, 1.015)  # reordered, not lost
    assert g.get_timer() is None and g.requested == 0


def test_sequence_wrap() -> None:
    g = NackGenerator()
    feed(g, [0xFFFE, 1], 0.0)
    assert g.handle_timer(0.0) == [0xFFFF, 0]


def test_gives_up_after_max_retries_and_asks_for_a_keyframe() -> None:
    g = NackGenerator(rtt=0.05, max_retries=3)
    feed(g, [1, 3], 0.0)
    t = 0.0
    asked = 0
    while (nxt := g.get_timer()) is not None:
        t = nxt
        asked += len(g.handle_timer(t))
    assert asked == 3 and g.given_up == 1
    assert t == pytest.approx(0.15)  # the third request had one RTT to be answered
    assert g.take_keyframe_request() is True
    assert g.take_keyframe_request() is False


def test_gives_up_on_packets_older_than_max_age() -> None:
    g = NackGenerator(rtt=0.3, max_retries=100)
    assert g.max_age == pytest.approx(1.2)  # max(1 s, 4 RTT)
    feed(g, [1, 3], 0.0)
    times = []
    while (nxt := g.get_timer()) is not None:
        if g.handle_timer(nxt):
            times.append(round(nxt, 6))
    assert times == [0.0, 0.3, 0.6, 0.9]
    assert g.given_up == 1 and g.keyframe_needed


def test_set_rtt_has_a_floor() -> None:
    g = NackGenerator()
    g.set_rtt(0.0)
    assert g.rtt == 0.01


def test_keyframe_start_drops_older_gaps_without_a_keyframe_request() -> None:
    g = NackGenerator()
    feed(g, [1, 4], 0.0)
    g.on_packet(6, 0.01, is_keyframe=True)  # the decoder restarts at 6: 2, 3, 5 are moot
    assert g.missing == []
    g.on_packet(9, 0.02)
    assert g.missing == [7, 8]
    assert not g.keyframe_needed


def test_huge_jump_clears_and_requests_keyframe() -> None:
    g = NackGenerator(max_window=100)
    feed(g, [1, 500], 0.0)
    assert g.missing == [] and g.take_keyframe_request()


def test_window_trims_old_missing() -> None:
    g = NackGenerator(max_window=10)
    feed(g, [1, 3, 12], 0.0)
    assert g.missing == [2, 4, 5, 6, 7, 8, 9, 10, 11]
    g.on_packet(13, 0.0)  # floor 3: seq 2 falls out
    assert g.missing[0] == 4 and g.given_up == 1 and g.keyframe_needed


def test_give_up_goes_through_the_keyframe_throttle_no_pli_storm() -> None:
    """The documented call sequence: give-ups -> KeyframeRequester -> at most 1 PLI/interval."""
    g = NackGenerator(rtt=0.02, max_retries=1)
    kf = KeyframeRequester(min_interval=0.5)
    plis = 0
    t = 0.0
    seq = 0
    while t < 2.0:
        seq += 2  # every other packet lost: a give-up every packet
        g.on_packet(seq, t)
        while (nxt := g.get_timer()) is not None and nxt <= t:
            g.handle_timer(t)
        if g.take_keyframe_request() and kf.request(t):
            plis += 1
        if (kt := kf.get_timer()) is not None and kt <= t and kf.handle_timer(t):
            plis += 1
        t = round(t + 0.01, 6)
    assert g.given_up > 150
    assert plis == 4  # 0.0x, then one per 0.5 s


# --- responder ---------------------------------------------------------------------------


def media(seq: int, size: int = 100) -> bytes:
    return build_packet(payload_type=96, seq=seq, timestamp=seq * 3000, ssrc=0xAA,
                        payload=bytes(size))


def filled_history(seqs: list[int], now: float = 0.0) -> History:
    h = History(size=64)
    for s in seqs:
        h.push(s, media(s), now, incoming_seq=s + 1000)
    return h


def test_responder_plain_resend_and_per_packet_rate_limit() -> None:
    r = NackResponder(filled_history([1, 2, 3]), rtt=0.1)
    out = r.on_nack([2, 3], 0.05)
    assert [(x.seq, x.data) for x in out] == [(2, media(2)), (3, media(3))]
    assert r.on_nack([2], 0.05 + 0.079) == []  # < 0.8 RTT since the resend
    assert r.suppressed_rate == 1
    assert r.repeated == 0  # a suppressed NACK was not answered, so it is no repeat
    assert [x.seq for x in r.on_nack([2], 0.05 + 0.08)] == [2]
    assert r.resent == 3
    assert r.repeated == 1  # packet 2's first retransmission did not do the job


def test_responder_wraps_in_rtx_with_own_seq_counter() -> None:
    r = NackResponder(filled_history([7, 8]), rtx=RtxConfig(ssrc=0xBB, payload_type=97,
                                                             seq_start=0xFFFF))
    out = r.on_nack([8, 7], 0.0)
    hs = [parse_header(x.data) for x in out if x.data]
    assert [(h.ssrc, h.payload_type, h.seq) for h in hs] == [(0xBB, 97, 0xFFFF), (0xBB, 97, 0)]
    assert unwrap(out[0].data or b"", media_ssrc=0xAA, media_pt=96) == (8, media(8))


def test_missing_upstream_and_unknown() -> None:
    h = History(size=64)
    h.push(10, media(10), 0.0, incoming_seq=500)
    h.push(12, media(12), 0.0, incoming_seq=502)
    r = NackResponder(h)
    out = r.on_nack([11, 9], 0.0)
    assert [(x.seq, x.data, x.upstream_seq) for x in out] == [(11, None, 501), (9, None, None)]
    assert r.missing_upstream == 1 and r.not_found == 1


def test_budget_limits_retransmission_bytes() -> None:
    seqs = list(range(40))
    h = History(size=64)
    for s in seqs:
        h.push(s, media(s, 1000), 0.0)
    # 80 kbit/s * 0.5 s burst = 5000 bytes: four 1012-byte packets, not five
    r = NackResponder(h, min_budget_bps=80_000, budget_fraction=0.1, burst=0.5)
    out = r.on_nack(seqs, 0.0)
    assert len(out) == 4 and r.suppressed_budget == 36
    # refills at 10 kB/s: 0.2 s later two more fit
    assert len(r.on_nack(seqs[10:], 0.2)) == 2


def test_budget_follows_media_rate() -> None:
    r = NackResponder(History(), budget_fraction=0.5, min_budget_bps=1000)
    for i in range(101):
        r.on_media(1250, i * 0.01)  # 1 Mbit/s
    assert r.budget_bps == pytest.approx(500_000, rel=0.02)


# --- upstream aggregation -----------------------------------------------------------------


def test_many_viewers_one_upstream_nack_per_rtt() -> None:
    agg = UpstreamNackAggregator(rtt=0.1)
    assert agg.request([501, 502], 0.0) == [501, 502]
    assert agg.request([501], 0.01) == []  # a second viewer
    assert agg.request([502, 503], 0.05) == [503]
    assert agg.request([501], 0.1) == [501]
    assert agg.deduplicated == 2


def test_aggregator_leaves_seqs_the_generator_chases() -> None:
    g = NackGenerator()
    feed(g, [1, 3], 0.0)
    agg = UpstreamNackAggregator(generator=g)
    assert agg.request([2, 5], 0.0) == [5]


def test_cores_are_sans_io() -> None:
    for rel in ("sfu/core/nack.py", "sfu/core/history.py", "sfu/wire/rtx.py"):
        tree = ast.parse((ROOT / rel).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not {n.split(".")[0] for n in names} & {"asyncio", "socket", "time"}, rel


def test_copies_follow_smoothed_loss_while_the_budget_has_room() -> None:
    h = History(size=64)
    for s in range(10):
        h.push(s, media(s, 100), 0.0)
    r = NackResponder(h, rtx=RtxConfig(0xBB, 97), min_budget_bps=80_000, burst=0.5)
    r.set_loss(0.05, 0.0)  # above dup_loss (4 %): two copies
    out = r.on_nack([1, 2], 0.0)  # 5000-byte bucket, 114-byte RTX: room for copies
    assert [x.seq for x in out] == [1, 1, 2, 2]
    assert len({parse_header(x.data or b"").seq for x in out}) == 4  # own RTX seqs
    r.set_loss(0.2, 0.0)  # heavy loss: three copies
    assert [x.seq for x in r.on_nack([3], 0.0)] == [3, 3, 3]
    # A clean report right after does not drop to one copy at once (reports swing).
    r.set_loss(0.0, 0.0)
    assert r.copies == 3
    for _ in range(40):
        r.set_loss(0.0, 0.0)
    assert r.copies == 1
    assert [x.seq for x in r.on_nack([4], 0.0)] == [4]
