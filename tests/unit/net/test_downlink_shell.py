"""ViewerDownlink (the node side of a viewer's estimate) with a fake peer and node."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace
from typing import Any

from sfu.core.downtrack import DownTrack
from sfu.net.downlink import ViewerDownlink
from sfu.wire.rtp import build_packet, parse_header
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
