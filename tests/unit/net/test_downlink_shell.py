"""ViewerDownlink (the node side of a viewer's estimate) with a fake peer and node."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace
from typing import Any

from sfu.core.downtrack import DownTrack
from sfu.net.downlink import ViewerDownlink
from sfu.wire.rtp import build_packet, parse_header, rewrite
from sfu.wire.twcc import read_transport_seq


class FakeNode:
    def __init__(self) -> None:
        self.metrics = SimpleNamespace(bwe=Counter())
        self.reselected: list[DownTrack] = []
        self.keyframes: list[Any] = []

    def reselect(self, dt: DownTrack, now: float) -> None:
        self.reselected.append(dt)

    def request_keyframe(self, layer: Any, now: float) -> None:
        self.keyframes.append(layer)

    def now(self) -> float:
        return 0.0


def _shell() -> tuple[ViewerDownlink, FakeNode]:
    node = FakeNode()
    peer = SimpleNamespace(node=node, slots=[], state="connected", _tx=None, addr=None)
    return ViewerDownlink(peer, 6, "null"), node  # type: ignore[arg-type]


def _dt() -> DownTrack:
    dt = DownTrack(ssrc=1, kind="video", mid="0", clock_rate=90000, seq_start=1, ts_start=0)
    dt.resume()
    return dt


def test_stamp_gives_a_retransmission_its_own_number() -> None:
    shell, _ = _shell()
    shell.core.seq = 41
    original = build_packet(payload_type=97, seq=3, timestamp=1, ssrc=2, payload=b"\x00\x05x",
                            extensions=[(6, b"\x00\x07"), (2, b"\x01")])
    out = shell.stamp(original, 1.0)
    assert read_transport_seq(out, parse_header(out), 6) == 41
    assert shell.core.seq == 42 and shell.core.sent[-1][0] == 41
    plain = build_packet(payload_type=97, seq=3, timestamp=1, ssrc=2, payload=b"x")
    assert shell.stamp(plain, 1.0) == plain  # nothing to renumber: no number taken
    assert shell.core.seq == 42


def test_no_pause_without_probing_keeps_the_lowest_layer() -> None:
    shell, node = _shell()  # no RTX stream: cannot probe
    dt = _dt()
    dt.allocated_rank = -1
    shell._apply(dt, 1.0)
    assert not dt.allocator_paused and node.reselected == [dt]
    assert node.metrics.bwe["pause_avoided"] == 1


def test_pause_and_resume_with_probing() -> None:
    shell, node = _shell()
    dt = _dt()
    shell._probe_stream = lambda: dt  # type: ignore[method-assign]
    dt.allocated_rank = -1
    shell._apply(dt, 1.0)
    assert dt.allocator_paused and node.metrics.bwe["video_paused"] == 1
    dt.allocated_rank = 0
    shell._apply(dt, 2.0)
    assert not dt.allocator_paused and dt.awaiting_keyframe
    assert node.reselected == [dt] and node.metrics.bwe["video_resumed"] == 1


class FakeTx:
    def protect(self, packet: bytes) -> bytes:
        return packet


class ManualScheduler:
    """PaceScheduler's interface on a virtual clock: the test runs what is due."""

    def __init__(self) -> None:
        self.at: dict[Any, float] = {}

    def arm(self, client: Any, at: float | None) -> None:
        if at is None:
            self.at.pop(client, None)
        else:
            self.at[client] = at

    def cancel(self, client: Any) -> None:
        self.at.pop(client, None)

    def due(self, client: Any) -> float | None:
        return self.at.get(client)


def _paced_shell(estimate: float) -> tuple[ViewerDownlink, ManualScheduler, list[tuple[float, bytes]]]:
    wire: list[tuple[float, bytes]] = []
    clock = [0.0]
    node = FakeNode()
    node.send_datagram = lambda data, addr, kind: wire.append((clock[0], data))  # type: ignore[attr-defined]
    peer = SimpleNamespace(node=node, slots=[], state="connected", _tx=FakeTx(),
                           addr=("127.0.0.1", 9))
    sched = ManualScheduler()
    shell = ViewerDownlink(peer, 6, "remb", scheduler=sched)  # type: ignore[arg-type]
    shell.clock = clock  # type: ignore[attr-defined]
    _congest(shell, estimate, 0.0)
    assert not shell.pacing  # no trusted estimate yet: the forward loop sends at once
    shell.reallocate(1.0)
    assert shell.pacing
    return shell, sched, wire


def _congest(shell: ViewerDownlink, estimate: float, now: float) -> None:
    """REMBs that signal congestion (falling, below what is sent), so the last one caps."""
    shell.core.estimator.set_send_rate(4 * estimate, now - 0.5)
    shell.core.on_remb(2 * estimate, now - 0.5)
    shell.core.on_remb(estimate, now)
    assert shell.core.estimator.target_bitrate == estimate


def _numbered(dt: DownTrack, shell: ViewerDownlink, i: int) -> bytes:
    """What DownTrack.forward builds for a paced, numbered viewer: the transport-wide seq
    element first, its value left to the pacer."""
    assert dt.number_at_send
    return build_packet(payload_type=96, seq=i, timestamp=0, ssrc=1, payload=bytes(1188),
                        extensions=[(6, b"\x00\x00")])


def test_a_key_frame_leaves_at_the_estimate_in_small_bursts() -> None:
    shell, sched, wire = _paced_shell(1_000_000.0)
    dt = _dt()
    shell.core.ext_id = 6  # numbered, as a transport-cc viewer's
    shell.remb = False
    shell.add_track(dt)
    assert dt.number_at_send  # pacing is on: numbers are taken when packets leave
    shell.core.seq = 40
    shell.core.flush()
    frame = [_numbered(dt, shell, i) for i in range(25)]  # a 30 kB key frame at once
    shell.clock[0] = 1.0  # type: ignore[attr-defined]
    for pkt in frame:
        shell.pace(dt, pkt, 1.0)
    assert 1 <= len(wire) <= 2  # the idle pacer's first burst only
    t = 1.0
    while (at := sched.due(shell)) is not None and t < 3.0:
        t = at
        shell.clock[0] = t  # type: ignore[attr-defined]
        shell.run_pacer(t)
    assert [parse_header(p).seq for _, p in wire] == list(range(25))  # all of it, in order
    # numbered in the order they left, from where the transport's numbering was
    assert [read_transport_seq(p, parse_header(p), 6) for _, p in wire] == list(range(40, 65))
    span = wire[-1][0] - wire[0][0]
    bits = sum(len(p) for p in frame[:-1]) * 8
    assert 0.8 * bits / 1e6 <= span <= 1.3 * bits / 1e6, span  # ~ the estimate's rate
    for a, b in zip(wire, wire[1:], strict=False):
        assert b[0] - a[0] <= 0.0101  # 5 ms bursts, never a long hold
    # the estimator hears each packet once, with the time it left
    sent = shell.core.sent
    assert [s[0] for s in sent] == list(range(40, 65))
    assert [s[2] for s in sent] == [w[0] for w in wire]


def test_pacing_waits_for_a_trusted_estimate_and_can_be_off() -> None:
    node = FakeNode()
    peer = SimpleNamespace(node=node, slots=[], state="connected", _tx=None, addr=None)
    shell = ViewerDownlink(peer, 6, "remb", pacing=False,  # type: ignore[arg-type]
                           scheduler=ManualScheduler())  # type: ignore[arg-type]
    shell.core.on_remb(1e6, 0.0)
    shell.reallocate(0.5)
    assert not shell.pacing  # warm-up
    shell.reallocate(1.5)
    assert not shell.pacing  # the setting says no


def _simulcast_dt() -> DownTrack:
    from sfu.core.receiver import Receiver, TrackInfo
    from sfu.sdp import Codec

    info = TrackInfo("v", "video", "p", "s", Codec(96, "VP8", 90000, 1, {}, []))
    primary = Receiver(info, layer=0, rid="q")
    for i, rid in ((1, "h"), (2, "f")):
        primary.add_layer(Receiver(info, layer=i, rid=rid))
    dt = DownTrack(ssrc=1, kind="video", mid="1", clock_rate=90000, seq_start=1, ts_start=0)
    dt.bind(primary, 96, {}, set(), 0.0)
    dt.resume()
    return dt


def test_remb_viewer_video_is_stamped_when_it_leaves_and_padded_towards_the_goal() -> None:
    from sfu.wire import abs_send_time

    wire: list[tuple[float, bytes, str]] = []
    clock = [0.0]
    node = FakeNode()
    node.send_datagram = lambda data, addr, kind: wire.append((clock[0], data, kind))  # type: ignore[attr-defined]
    peer = SimpleNamespace(node=node, slots=[], state="connected", _tx=FakeTx(),
                           addr=("127.0.0.1", 9))
    sched = ManualScheduler()
    shell = ViewerDownlink(peer, 0, "remb", scheduler=sched)  # type: ignore[arg-type]
    assert shell.remb
    dt = _simulcast_dt()
    rtx_seqs = iter(range(100, 10_000))
    probe_dt = SimpleNamespace(
        kind="video", responder=SimpleNamespace(rtx=SimpleNamespace(ssrc=77, payload_type=97),
                                                next_rtx_seq=lambda: next(rtx_seqs)),
        stats=SimpleNamespace(last_rtp_timestamp=1234))
    shell._probe_stream = lambda: probe_dt  # type: ignore[method-assign, assignment, return-value]
    shell.add_track(dt, abs_send_time_id=3)
    audio = DownTrack(ssrc=2, kind="audio", mid="0", clock_rate=48000, seq_start=1, ts_start=0)
    shell.add_track(audio, abs_send_time_id=3)
    assert dt.downlink is shell.core and dt.abs_send_time_id == 3
    assert audio.downlink is None  # audio is not stamped (its section has no extension)

    _congest(shell, 500_000, 0.0)
    shell.reallocate(1.5)  # trusted after the warm-up: pacing, and padding towards the goal
    assert shell.pacing
    assert shell._pacer.padding_rate == 500_000  # up to the estimate, not beyond
    # media rewritten by forward at 1.5 s, sent by the pacer later: stamped when it leaves
    ext = abs_send_time.add_abs_send_time((0xBEDE, b""), 3, 1.5)
    raw = build_packet(payload_type=96, seq=1, timestamp=0, ssrc=1, payload=bytes(1100))
    pkt = rewrite(raw, parse_header(raw), payload_type=96, seq=1, timestamp=0, ssrc=1,
                  extensions=ext)
    clock[0] = 1.5
    for _ in range(5):
        shell.pace(dt, pkt, 1.5)
    t = 1.5
    while (at := sched.due(shell)) is not None and t < 2.5:
        t = at
        clock[0] = t
        shell.run_pacer(t)
    media = [(w, p) for w, p, kind in wire if kind == "video"]
    padding = [(w, p) for w, p, kind in wire if kind == "probe"]
    assert len(media) == 5
    assert any(w > 1.5 for w, _ in media)  # some waited for a later burst ...
    for w, p in media:  # ... and carry the time they left, not the time of the rewrite
        assert abs_send_time.read(p, 3) == abs_send_time.value(w)
    assert padding, "no padding towards the goal"
    for w, p in padding:
        hdr = parse_header(p)
        assert hdr.ssrc == 77 and hdr.payload_size == 0
        assert abs_send_time.read(p, 3) == abs_send_time.value(w)
    bits = sum(len(p) for _, p in media + padding) * 8
    assert bits / (t - 1.5) >= 0.8 * shell._pacer.padding_rate  # the link sees ~the goal


def test_remb_that_lists_only_video_gets_the_audio_allocation_added() -> None:
    node = FakeNode()
    audio = DownTrack(ssrc=2, kind="audio", mid="0", clock_rate=48000, seq_start=1, ts_start=0)
    video = _dt()
    peer = SimpleNamespace(node=node, state="connected", _tx=None, addr=None,
                           slots=[SimpleNamespace(downtrack=audio),
                                  SimpleNamespace(downtrack=video)])
    shell = ViewerDownlink(peer, 0, "remb", scheduler=ManualScheduler())  # type: ignore[arg-type]
    shell.on_remb(1_000_000, 0.0, [video.ssrc, 0x1234])  # aiortc: video + its RTX
    assert shell.core.estimator.stats()["last_remb"] == 1_000_000 + 64_000
    shell.on_remb(1_000_000, 1.0, [video.ssrc, audio.ssrc])  # covers both: as reported
    assert shell.core.estimator.stats()["last_remb"] == 1_000_000
