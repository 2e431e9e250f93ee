"""Simulcast and temporal-layer forwarding on a virtual clock: switching, gating, continuity,
temporal dropping, layer loss and recovery, dynacast needs."""

from __future__ import annotations

import struct

import pytest

from sfu.core.downtrack import DownTrack
from sfu.core.layers import choose_layer, desired_rank, needed_layers, parse_rank
from sfu.core.receiver import Receiver, TrackInfo
from sfu.core.room import Room, Slot
from sfu.sdp import Codec
from sfu.wire.rtp import build_packet, parse_header
from sfu.wire.vp8 import keyframe_size, parse_descriptor

VP8 = Codec(96, "VP8", 90000)
SIZES = {"q": (320, 180), "h": (640, 360), "f": (1280, 720)}


def vp8_payload(*, key: bool, start: bool, pid: int, tl0: int, tid: int, size=(0, 0),
                sync: bool = True) -> bytes:
    desc = bytes([0x80 | (0x10 if start else 0), 0xE0, 0x80 | (pid >> 8), pid & 0xFF, tl0,
                  (tid << 6) | (0x20 if sync else 0)])
    if not start:
        return desc + b"\x55" * 20
    if key:
        w, h = size
        header = b"\x10\x02\x00" + b"\x9d\x01\x2a" + struct.pack("<HH", w, h)
    else:
        header = b"\x11\x02\x00"
    return desc + header + b"\x55" * 20


class Layer:
    """A synthetic encoder for one simulcast layer: its own SSRC, seq, ts, pid, tl0."""

    def __init__(self, rid: str, ssrc: int, seq: int = 100, pid: int = 1000, tl0: int = 10):
        self.rid, self.ssrc, self.seq, self.pid, self.tl0 = rid, ssrc, seq, pid, tl0
        self.ts = ssrc * 7 % 2**32  # each encoder has its own timestamp base
        self.frame = 0
        self.real_sync = False  # True: Y only where libvpx sets it (frames 1, 2 of 0,2,1,2)

    def frame_packets(self, *, key: bool = False, packets: int = 2) -> list[bytes]:
        tid = 0 if key else [0, 2, 1, 2][self.frame % 4]
        sync = tid > 0 and (not self.real_sync or self.frame % 4 in (1, 2))
        if tid == 0:
            self.tl0 = (self.tl0 + 1) & 0xFF
        out = []
        for i in range(packets):
            payload = vp8_payload(key=key, start=i == 0, pid=self.pid, tl0=self.tl0, tid=tid,
                                  size=SIZES[self.rid], sync=sync)
            out.append(build_packet(payload_type=96, seq=self.seq & 0xFFFF, timestamp=self.ts,
                                    ssrc=self.ssrc, payload=payload, marker=i == packets - 1))
            self.seq += 1
        self.pid = (self.pid + 1) & 0x7FFF
        self.ts = (self.ts + 3000) % 2**32
        self.frame += 1
        return out


def make_track() -> tuple[Receiver, dict[str, Receiver]]:
    info = TrackInfo("t1", "video", "host", "s", VP8)
    primary = Receiver(info, layer=0, rid="q")
    layers = {"q": primary}
    for i, rid in enumerate(("h", "f"), 1):
        layers[rid] = Receiver(info, layer=i, rid=rid)
        primary.add_layer(layers[rid])
    for rid, la in layers.items():
        la.ssrc = {"q": 11, "h": 22, "f": 33}[rid]
    return primary, layers


def make_viewer(room: Room, now: float, name: str = "viewer") -> DownTrack:
    dt = DownTrack(ssrc=999, kind="video", mid="0", clock_rate=90000, seq_start=65530,
                   ts_start=2**32 - 5000)
    room.add_slot(Slot(dt, name, [VP8], []), now)
    dt.resume()
    return dt


class Harness:
    """Delivers packets the way Peer.on_srtp does: account, promote, forward per layer."""

    def __init__(self) -> None:
        self.room = Room("r")
        self.track, self.layers = make_track()
        self.room.add_receiver(self.track, 0.0)
        self.enc = {rid: Layer(rid, la.ssrc or 0) for rid, la in self.layers.items()}
        self.out: list[bytes] = []

    def deliver(self, rid: str, packets: list[bytes], now: float) -> None:
        layer = self.layers[rid]
        for data in packets:
            hdr = parse_header(data)
            key = layer.on_rtp(data, hdr, now)
            if key and layer.pending:
                layer.promote_pending(now)
            for dt in list(layer.downtracks):
                pkt = dt.forward(data, hdr, key, now)
                if pkt is not None:
                    self.out.append(pkt)

    def frame(self, rid: str, now: float, key: bool = False) -> None:
        self.deliver(rid, self.enc[rid].frame_packets(key=key), now)

    def all_frames(self, now: float, key: bool = False) -> None:
        for rid in ("q", "h", "f"):
            self.frame(rid, now, key)


def out_fields(pkt: bytes) -> tuple[int, int, int, int | None, int | None, int | None]:
    h = parse_header(pkt)
    d = parse_descriptor(pkt[h.payload_start:])
    assert d is not None
    return h.seq, h.timestamp, h.ssrc, d.picture_id, d.tl0picidx, d.tid


def assert_continuous(packets: list[bytes]) -> None:
    seqs = [out_fields(p)[0] for p in packets]
    for a, b in zip(seqs, seqs[1:], strict=False):
        assert (b - a) & 0xFFFF == 1, f"sequence gap {a} -> {b}"
    tss = [out_fields(p)[1] for p in packets]
    for a, b in zip(tss, tss[1:], strict=False):
        assert (b - a) % 2**32 < 2**31, f"timestamp went backwards {a} -> {b}"
    pids = []
    for p in packets:
        pid = out_fields(p)[3]
        if not pids or pids[-1] != pid:
            pids.append(pid)
    for a, b in zip(pids, pids[1:], strict=False):
        assert (b - a) % 2**15 == 1, f"picture id jump {a} -> {b}"


def test_rank_names() -> None:
    assert [parse_rank(n) for n in ("low", "MID", "high", "q", "f", "2")] == [0, 1, 2, 0, 2, 2]
    with pytest.raises(ValueError, match="unknown layer"):
        parse_rank("ultra")


def test_layers_ranked_by_rid_then_by_key_frame_size() -> None:
    h = Harness()
    # Before key frames: by RID name.
    assert [la.rid for la in h.track.ranked()] == ["q", "h", "f"]
    h.all_frames(0.0, key=True)
    assert h.layers["f"].frame_size == (1280, 720)
    assert [la.rid for la in h.track.ranked()] == ["q", "h", "f"]


def test_vp8_key_frame_size_parse() -> None:
    payload = vp8_payload(key=True, start=True, pid=5, tl0=1, tid=0, size=(1280, 720))
    d = parse_descriptor(payload)
    assert d is not None and d.size == 6 and d.picture_id == 5 and d.tid == 0
    assert keyframe_size(payload, d) == (1280, 720)


def test_switch_up_and_down_waits_for_key_frame_and_stays_continuous() -> None:
    h = Harness()
    dt = make_viewer(h.room, 0.0)
    t = 0.0
    h.all_frames(t, key=True)  # everyone's first key frame; the viewer starts on "q"
    assert dt.current is h.layers["q"]
    for _ in range(5):
        t += 0.033
        h.all_frames(t)
    assert all(out_fields(p)[2] == 999 for p in h.out)

    # Up to "f": nothing changes until f's key frame.
    assert dt.request_layer(h.layers["f"]) is True
    assert dt.request_layer(h.layers["f"]) is False  # already waiting
    for _ in range(3):
        t += 0.033
        h.all_frames(t)
    assert dt.current is h.layers["q"]
    before = len(h.out)
    t += 0.033
    h.frame("q", t)
    h.frame("h", t)
    h.frame("f", t, key=True)
    assert dt.current is h.layers["f"] and dt.switches == 1
    # After the switch only f's packets are forwarded: no interleaving.
    count_after_switch = len(h.out)
    t += 0.033
    h.frame("q", t)
    h.frame("h", t)
    assert len(h.out) == count_after_switch
    h.frame("f", t)
    assert len(h.out) > count_after_switch > before

    # Down to "q" again, on q's key frame.
    dt.request_layer(h.layers["q"])
    t += 0.033
    h.all_frames(t)
    t += 0.033
    h.frame("q", t, key=True)
    h.frame("f", t)
    assert dt.current is h.layers["q"] and dt.switches == 2
    assert_continuous(h.out)
    # TL0PICIDX continues too: never decreases by more than wrap and steps by at most 1.
    tl0s = [out_fields(p)[4] for p in h.out]
    for a, b in zip(tl0s, tl0s[1:], strict=False):
        assert (b - a) & 0xFF in (0, 1)


def test_output_wraps_sequence_and_timestamp() -> None:
    h = Harness()
    dt = make_viewer(h.room, 0.0)  # seq_start 65530, ts_start near 2**32
    t = 0.0
    h.frame("q", t, key=True)
    for _ in range(10):
        t += 0.033
        h.frame("q", t)
    seqs = [out_fields(p)[0] for p in h.out]
    assert 65535 in seqs and 0 in seqs
    assert_continuous(h.out)
    assert dt.current is h.layers["q"]


def test_temporal_layer_dropping_keeps_output_contiguous() -> None:
    h = Harness()
    dt = make_viewer(h.room, 0.0)
    dt.max_temporal = 0
    t = 0.0
    h.frame("q", t, key=True)
    for _ in range(12):
        t += 0.033
        h.frame("q", t)
    tids = {out_fields(p)[5] for p in h.out}
    assert tids == {0}
    # 13 frames sent, tids 0,2,1,2 repeating after the key frame: 4 base-layer frames.
    frames = {out_fields(p)[3] for p in h.out}
    assert len(frames) == 4
    assert_continuous(h.out)

    dt.max_temporal = 1
    h.out.clear()
    for _ in range(8):
        t += 0.033
        h.frame("q", t)
    assert {out_fields(p)[5] for p in h.out} == {0, 1}
    assert_continuous(h.out)


def test_allocator_temporal_ceiling_rises_only_where_the_viewer_can_decode() -> None:
    h = Harness()
    h.enc["q"].real_sync = True
    dt = make_viewer(h.room, 0.0)
    dt.allocated_temporal = 0
    t = 0.0
    h.frame("q", t, key=True)  # frame 0 (TL0); then 1..6 carry TIDs 2,1,2,0,2,1
    for _ in range(6):
        t += 0.033
        h.frame("q", t)
    assert {out_fields(p)[5] for p in h.out} == {0}
    dt.allocated_temporal = None  # the allocator lifts the ceiling
    h.out.clear()
    t += 0.033
    h.frame("q", t)  # frame 7: TL2 referring to frame 6 (TL1), which was dropped
    assert h.out == [] and dt.temporal == 0
    t += 0.033
    h.frame("q", t)  # frame 8: TL0, decodable: the ceiling rises here
    assert dt.temporal == 3
    for _ in range(3):
        t += 0.033
        h.frame("q", t)
    assert [out_fields(p)[5] for p in h.out[::2]] == [0, 2, 1, 2]
    assert_continuous(h.out)
    # Down at the next frame start; up again on a layer-sync frame (frame 13: TL2 with Y,
    # referring only to TL0 frame 12)
    dt.allocated_temporal = 0
    h.out.clear()
    t += 0.033
    h.frame("q", t)  # frame 12: TL0
    assert dt.temporal == 0 and len(h.out) == 2
    dt.allocated_temporal = None
    t += 0.033
    h.frame("q", t)  # frame 13: TL2, layer sync
    assert dt.temporal == 3 and [out_fields(p)[5] for p in h.out[2:]] == [2, 2]
    assert_continuous(h.out)
    assert dt.temporal_switches == 4


def test_fallback_when_top_layer_stops_and_recovery_when_it_returns() -> None:
    h = Harness()
    dt = make_viewer(h.room, 0.0)
    t = 0.0
    h.all_frames(t, key=True)
    assert choose_layer(dt, h.track, t) is h.layers["f"]  # no cap: the best layer
    # The publisher stops sending "f" (a weak uplink): after the horizon it is gone.
    for _ in range(20):
        t += 0.033
        h.frame("q", t)
        h.frame("h", t)
    assert choose_layer(dt, h.track, t) is h.layers["h"]
    # It comes back.
    t += 0.033
    h.frame("f", t, key=True)
    assert choose_layer(dt, h.track, t) is h.layers["f"]


def test_preference_size_and_allocator_caps() -> None:
    h = Harness()
    dt = make_viewer(h.room, 0.0)
    h.all_frames(0.0, key=True)
    ranked = h.track.ranked()
    assert desired_rank(dt, ranked) == 2
    dt.preferred_rank = 1
    assert desired_rank(dt, ranked) == 1
    dt.preferred_rank = None
    dt.max_size = (700, 400)  # fits 640x360, not 1280x720
    assert desired_rank(dt, ranked) == 1
    dt.max_size = (100, 100)  # nothing fits: the smallest
    assert desired_rank(dt, ranked) == 0
    dt.max_size = None
    dt.allocated_rank = 0
    assert desired_rank(dt, ranked) == 0


def test_dynacast_needs_only_what_viewers_want() -> None:
    h = Harness()
    low = make_viewer(h.room, 0.0)
    low.preferred_rank = 0
    h.all_frames(0.0, key=True)
    viewers = [dt for la in h.track.layers for dt in la.downtracks]
    assert needed_layers(h.track, viewers) == {0}
    mid = make_viewer(h.room, 0.0, "viewer2")
    mid.preferred_rank = 1
    viewers = [dt for la in h.track.layers for dt in la.downtracks]
    assert needed_layers(h.track, viewers) == {0, 1}


def test_unpublishing_the_track_unbinds_every_layer() -> None:
    h = Harness()
    dt = make_viewer(h.room, 0.0)
    dt.request_layer(h.layers["h"])
    assert dt in h.layers["h"].pending
    h.room.remove_receiver("t1", 1.0)
    assert not dt.bound and dt.current is None and dt.pending is None
    assert all(not la.downtracks and not la.pending for la in h.track.layers)


def test_render_size_guesses_layers_not_seen_yet() -> None:
    h = Harness()
    dt = make_viewer(h.room, 0.0)
    # Only q and f have sent key frames; h (paused by dynacast, say) never showed its size.
    h.frame("q", 0.0, key=True)
    h.frame("f", 0.0, key=True)
    assert h.layers["h"].frame_size is None
    dt.max_size = (700, 400)  # 640x360 fits, 1280x720 does not
    assert desired_rank(dt, h.track.ranked()) == 1
