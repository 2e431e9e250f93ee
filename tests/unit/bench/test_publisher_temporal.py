"""The simulated publisher's VP8 temporal layers: TID pattern, layer sync, rate split."""

from bench.sim.publisher import Publisher, PublisherConfig
from sfu.wire.rtp import parse_header
from sfu.wire.vp8 import parse_descriptor


def _run(layers: int, frames: int) -> list[tuple[int, int | None, bool, int]]:
    """(frame index, TID, layer sync, bytes) per packet."""
    sent: list[bytes] = []
    cfg = PublisherConfig(video_bitrate=1.5e6, temporal_layers=layers, keyframe_interval=3.0)
    pub = Publisher(cfg, lambda data, now: sent.append(data), seed=7)
    for i in range(frames):
        pub.video_frame(i / 30)
    out = []
    for data in sent:
        hdr = parse_header(data)
        d = parse_descriptor(data[hdr.payload_start:])
        assert d is not None
        out.append((pub.video.frame_of[len(out)], d.tid, d.layer_sync, len(data)))
    return out


def test_three_temporal_layers_follow_libvpx_pattern_and_split() -> None:
    packets = _run(3, 900)
    tids = {}
    syncs = {}
    for frame, tid, sync, _ in packets:
        tids[frame] = tid
        syncs[frame] = sync
    # key frames every 90 frames restart the pattern 0,2,1,2
    assert [tids[i] for i in range(8)] == [0, 2, 1, 2, 0, 2, 1, 2]
    assert [tids[i] for i in range(88, 94)] == [0, 2, 0, 2, 1, 2]  # frame 90 is a key frame
    # Y on the frames that refer only to TL0 (the first TL2 and the TL1 after each TL0)
    assert [syncs[i] for i in range(4)] == [False, True, True, False]
    total = sum(size for *_, size in packets)
    share = [sum(size for _, tid, _, size in packets if tid is not None and tid <= t) / total
             for t in range(3)]
    # libwebrtc's 40/60/100 % (key frames are TL0, so TL0 carries a little more)
    assert 0.40 <= share[0] <= 0.50
    assert 0.58 <= share[1] <= 0.66
    assert share[2] == 1.0


def test_one_temporal_layer_sends_no_tid() -> None:
    assert {tid for _, tid, _, _ in _run(1, 30)} == {None}
