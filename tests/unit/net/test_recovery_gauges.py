"""The /metrics gauges over viewers: RED distance, FEC state, reported and unrepaired loss."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from sfu.core.downtrack import DownTrack
from sfu.core.receiver import Receiver, TrackInfo
from sfu.net import recovery_gauges
from sfu.sdp import Codec


def _dt(kind: str, *, red_pt: int | None = None, fec: bool = False) -> DownTrack:
    dt = DownTrack(ssrc=1, kind=kind, mid="0", clock_rate=90000, seq_start=0, ts_start=0)
    codec = Codec(96, "VP8", 90000) if kind == "video" else Codec(111, "OPUS", 48000, 2)
    dt.bind(Receiver(TrackInfo("t", kind, "p", "s", codec)), 96, {}, set(), 0.0)
    dt.configure_repair(nack=kind == "video", rtx_pt=None, red_pt=red_pt,
                        fec=(116, 118, None) if fec else None)
    return dt


def _peer(state: str, *dts: DownTrack) -> Any:
    return SimpleNamespace(state=state, slots=[SimpleNamespace(downtrack=d) for d in dts])


def test_gauges_count_connected_viewers_only() -> None:
    audio_red, audio_far = _dt("audio", red_pt=63), _dt("audio", red_pt=63)
    assert audio_far.red is not None
    audio_far.red.set_loss(0.6, 0.0)  # distance 8 at most: the "8" label
    video_fec, video_idle = _dt("video", fec=True), _dt("video", fec=True)
    assert video_fec.fec is not None
    video_fec.fec.set_rtt(0.2)
    video_fec.fec.set_loss(0.1, 0.0)
    video_fec.loss, video_idle.loss, audio_red.loss = 0.1, 0.0, 0.3
    for _ in range(100):
        video_fec.stats.on_packet(500, 0, 0.0)
    assert video_fec.responder is not None
    video_fec.responder.not_found = 3
    peers = [_peer("connected", audio_red, video_fec), _peer("connected", audio_far, video_idle),
             _peer("closed", _dt("audio", red_pt=63), _dt("video", fec=True))]
    assert recovery_gauges.red_distance_gauge(peers) == {("0",): 0, ("1",): 1, ("8",): 1}
    assert recovery_gauges.fec_gauge(peers) == {("protecting",): 1, ("idle",): 1}
    loss = recovery_gauges.loss_gauge(peers)
    assert loss[("audio", "link")] == 0.3 and loss[("video", "link")] == 0.05
    # 3 of 100 NACKed packets gone from History; the idle viewer sent nothing: not counted.
    assert loss[("video", "unrepaired")] == 0.03
