from sfu.core.allocator import Allocator
from sfu.core.downtrack import DownTrack
from sfu.core.receiver import Receiver, TrackInfo
from sfu.sdp import Codec

VP8 = Codec(96, "VP8", 90000, 1, {}, [])
OPUS = Codec(111, "OPUS", 48000, 2)


def _video(ssrc: int) -> DownTrack:
    info = TrackInfo(f"v{ssrc}", "video", "p", "s", VP8)
    primary = Receiver(info, layer=0, rid="q")
    for i, rid in ((1, "h"), (2, "f")):
        primary.add_layer(Receiver(info, layer=i, rid=rid))
    dt = DownTrack(ssrc=ssrc, kind="video", mid="1", clock_rate=90000, seq_start=1, ts_start=0)
    dt.bind(primary, 96, {}, set(), 0.0)
    return dt


def _audio(ssrc: int) -> DownTrack:
    r = Receiver(TrackInfo(f"a{ssrc}", "audio", "p", "s", OPUS))
    dt = DownTrack(ssrc=ssrc, kind="audio", mid="0", clock_rate=48000, seq_start=1, ts_start=0)
    dt.bind(r, 111, {}, set(), 0.0)
    return dt


def test_audio_first_video_paused_when_starved() -> None:
    a = Allocator()
    v, au = _video(1), _audio(2)
    a.add_track(v)
    a.add_track(au)
    alloc = a.update(100_000, 0.0)  # audio 64k + q 150k does not fit
    assert v.allocated_rank == -1
    assert alloc.ranks[2] == 0  # audio kept
    assert alloc.allocated == 64_000
    assert alloc.deficient


def test_priority_orders_video() -> None:
    a = Allocator()
    cam, screen = _video(1), _video(2)
    a.add_track(cam, priority=2)
    a.add_track(screen, priority=1)
    a.update(64_000 + 150_000 + 600_000, 0.0)
    assert cam.allocated_rank == 1  # q for both first, then cam upgraded to h
    assert screen.allocated_rank == 0
    a2 = Allocator()
    cam2, screen2 = _video(3), _video(4)
    a2.add_track(cam2, priority=2)
    a2.add_track(screen2, priority=1)
    a2.update(200_000, 0.0)
    assert cam2.allocated_rank == 0 and screen2.allocated_rank == -1


def test_hysteresis_no_oscillation_around_threshold() -> None:
    a = Allocator(up_hold=2.0)
    v = _video(1)
    a.add_track(v)
    a.update(300_000, 0.0)
    assert v.allocated_rank == 0
    # estimate wobbling around the h layer's bitrate (500k): never above 500k x 1.15 long enough
    for i in range(1, 600):
        est = 560_000 if i % 2 else 480_000
        a.update(est, i * 0.1)
    assert a.changes(v) == 0
    assert v.allocated_rank == 0


def test_up_after_hold_down_at_once_and_flap_backoff() -> None:
    a = Allocator(up_hold=2.0)
    v = _video(1)
    a.add_track(v)
    a.update(300_000, 0.0)
    t = 0.0
    while v.allocated_rank == 0:
        t += 0.1
        a.update(700_000, t)
    assert 1.9 <= t <= 2.2
    # A deep drop (under 0.8 x the h in force, and under 0.8 x the q allocated before the
    # up-switch): down at once
    a.update(100_000, t + 0.1)
    assert v.allocated_rank == 0
    # flapped: the next up waits twice as long
    start = t + 0.1
    t = start
    while v.allocated_rank == 0:
        t += 0.1
        a.update(700_000, t)
    assert t - start >= 3.9


def test_no_estimate_means_no_ceiling() -> None:
    a = Allocator()
    v = _video(1)
    a.add_track(v)
    alloc = a.update(None, 0.0)
    assert v.allocated_rank == 2
    assert not alloc.deficient


def test_a_layer_paused_by_dynacast_counts_at_least_its_nominal_rate() -> None:
    a = Allocator()
    v = _video(1)
    a.add_track(v)
    h = v.receiver.ranked()[1]  # type: ignore[union-attr]
    h.stats._bytes = 0
    a.layer_bitrates(v, 0.0)
    h.stats._bytes = 12_500  # 100 kbit/s over the first second (a ramp-up moment)
    assert a.layer_bitrates(v, 1.0)[1] == 100_000
    h.paused = True  # dynacast stopped it: no new bytes
    assert a.layer_bitrates(v, 2.0)[1] == 500_000  # not the decaying/stale measurement
    h.paused = False
    assert a.layer_bitrates(v, 2.5)[1] < 500_000  # running again: measured


def test_probe_goal_is_the_estimate_that_lets_the_top_layer_up() -> None:
    a = Allocator()
    v, au = _video(1), _audio(2)
    a.add_track(v)
    a.add_track(au)
    alloc = a.update(1.7e6, 0.0)  # covers audio + f (1.564M) but not with the up margin
    assert alloc.desired == 64_000 + 1.5e6
    assert alloc.probe_goal == alloc.desired * a.up_margin
    for i in range(1, 40):  # an estimate at `desired` never lets f up ...
        a.update(alloc.desired * 1.05, i * 0.1)
    assert v.allocated_rank == 1
    for i in range(40, 80):  # ... one at the probe goal does, after the hold
        a.update(alloc.probe_goal, i * 0.1)
    assert v.allocated_rank == 2


def test_a_shallow_dip_moves_down_only_once_it_lasts() -> None:
    a = Allocator(up_hold=2.0, down_hold=1.0, shallow_dip=0.8)
    v = _video(1)
    a.add_track(v)
    a.update(700_000, 0.0)
    assert v.allocated_rank == 1  # first allocation: h
    # A key frame's delay spike: GCC cuts to 0.85 x the acknowledged rate, then its probe
    # restores the estimate. h stays.
    a.update(440_000, 0.1)
    a.update(440_000, 0.9)
    assert v.allocated_rank == 1
    a.update(700_000, 1.0)
    a.update(440_000, 1.5)  # a new dip starts its own clock
    a.update(440_000, 2.4)
    assert v.allocated_rank == 1
    a.update(440_000, 2.5)  # lasted 1 s: down
    assert v.allocated_rank == 0
    assert a.changes(v) == 1


def _temporal(dt: DownTrack) -> None:
    """Make every layer of `dt`'s track look like libvpx with three temporal layers."""
    for layer in dt.receiver.ranked():  # type: ignore[union-attr]
        layer.temporal_layers = 3


def test_temporal_steps_fill_the_gap_between_layers() -> None:
    a = Allocator(temporal_steps=True)
    v, au = _video(1), _audio(2)
    _temporal(v)
    a.add_track(v)
    a.add_track(au)
    steps = [(s.rank, s.tid) for s in a.steps(v, 0.0)]
    # q at 7.5/15/30 fps; h and f never under half the frame rate
    assert steps == [(0, 0), (0, 1), (0, 3), (1, 1), (1, 3), (2, 1), (2, 3)]
    rates = [s.rate for s in a.steps(v, 0.0)]
    assert rates == [60_000, 90_000, 150_000, 300_000, 500_000, 900_000, 1_500_000]
    # 1.2 Mbit/s: f at 15 fps (0.9M with the up margin + audio fits), not h at 0.5M
    alloc = a.update(1.2e6, 0.0)
    assert (v.allocated_rank, v.allocated_temporal) == (2, 1)
    assert alloc.allocated == 64_000 + 900_000
    # a starved link keeps q at 7.5 fps instead of pausing
    a2 = Allocator(temporal_steps=True)
    v2 = _video(3)
    _temporal(v2)
    a2.add_track(v2)
    a2.update(80_000, 0.0)
    assert (v2.allocated_rank, v2.allocated_temporal) == (0, 0)


def test_a_dip_that_keeps_deepening_goes_down_before_the_hold() -> None:
    a = Allocator(up_hold=2.0, down_hold=1.0, shallow_dip=0.8)
    v = _video(1)
    a.add_track(v)
    a.update(700_000, 0.0)
    assert v.allocated_rank == 1
    a.update(450_000, 0.1)  # shallow (>= 0.8 x 500k): held
    assert v.allocated_rank == 1
    a.update(440_000, 0.2)  # within 5 % of where the dip started: still held
    assert v.allocated_rank == 1
    a.update(420_000, 0.3)  # under 0.95 x 450k: a narrowing link, not a key frame's spike
    assert v.allocated_rank == 0


def test_a_shallow_dip_holds_a_temporal_step_too() -> None:
    a = Allocator(down_hold=1.0, shallow_dip=0.8, temporal_steps=True)
    v = _video(1)
    _temporal(v)
    a.add_track(v)
    a.update(700_000, 0.0)
    assert (v.allocated_rank, v.allocated_temporal) == (1, None)
    a.update(450_000, 0.1)  # h at 15 fps would fit; the dip may be a key frame's spike
    assert (v.allocated_rank, v.allocated_temporal) == (1, None)
    a.update(450_000, 1.1)
    assert (v.allocated_rank, v.allocated_temporal) == (1, 1)


def test_measured_temporal_shares_replace_the_default_split() -> None:
    a = Allocator(temporal_steps=True)
    v = _video(1)
    _temporal(v)
    a.add_track(v)
    q = v.receiver.ranked()[0]  # type: ignore[union-attr]
    a.temporal_shares(q, 0.0)
    q.tid_bytes[:3] = [5_000, 2_500, 2_500]  # 50/25/25 % over the next second
    assert a.temporal_shares(q, 1.0) == (0.5, 0.75, 1.0)


def test_without_temporal_steps_a_layered_track_is_one_step_per_layer() -> None:
    a = Allocator()  # the node's default
    v = _video(1)
    _temporal(v)
    a.add_track(v)
    assert [(s.rank, s.tid) for s in a.steps(v, 0.0)] == [(0, 3), (1, 3), (2, 3)]
    a.update(1.2e6, 0.0)
    assert (v.allocated_rank, v.allocated_temporal) == (1, None)


def test_a_collapse_just_after_an_up_switch_is_measured_against_the_old_allocation() -> None:
    a = Allocator(up_hold=2.0, down_hold=1.0, shallow_dip=0.8)
    v = _video(1)
    a.add_track(v)
    a.update(300_000, 0.0)
    assert v.allocated_rank == 0  # q: 150k
    t = 0.0
    while v.allocated_rank == 0:
        t += 0.1
        a.update(700_000, t)
    # The new layer's key frame: GCC cuts to 0.85 x what was acknowledged (q's rate).
    a.update(200_000, t + 0.2)  # far under h, but >= 0.8 x the 150k allocated before
    assert v.allocated_rank == 1
    a.update(700_000, t + 0.8)  # the drop probe restores the estimate
    a.update(700_000, t + 3.0)
    assert v.allocated_rank == 1 and a.changes(v) == 1
    # Long after the switch the same collapse is a deep cut: down at once.
    a.update(200_000, t + 3.1)
    assert v.allocated_rank == 0
