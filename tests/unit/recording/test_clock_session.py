"""RTP time to media time: wrap-around, sender-report sync of audio and video, the start gate."""

from __future__ import annotations

from sfu.recording.clock import RtpUnwrapper, TrackClock, ntp_seconds
from sfu.recording.session import MuxPacket, OpenPart, RecordingCore
from tests.unit.recording.helpers import encode_vp8, packetize_vp8

WRAP = 1 << 32


def ntp(seconds: float) -> int:
    return int(seconds * (1 << 32))


def test_unwrap_across_wrap_and_reordering() -> None:
    u = RtpUnwrapper()
    assert u.unwrap(WRAP - 3000) == WRAP - 3000
    assert u.unwrap(0) == WRAP
    assert u.unwrap(WRAP - 1500) == WRAP - 1500  # a late one from before the wrap
    assert u.unwrap(3000) == WRAP + 3000
    assert u.nearest(WRAP - 10) == WRAP - 10


def test_sender_report_mapping_across_wrap() -> None:
    clock = TrackClock(90000)
    clock.unwrap(WRAP - 90000)  # the first frame, one second before the wrap
    clock.on_sender_report(ntp(1000.0), WRAP - 45000)  # SR half a second later
    after = clock.unwrap(45000)  # one second after the SR, past the wrap
    assert after == WRAP + 45000
    assert abs(ntp_seconds(ntp(1000.0)) - 1000.0) < 1e-9
    assert abs(clock.sender_time(after) - 1001.0) < 1e-9  # type: ignore[operator]
    assert abs(clock.sender_time(WRAP - 90000) - 999.5) < 1e-9  # type: ignore[operator]


def _opus(core: RecordingCore, index: int, seq: int, ts: int, now: float) -> None:
    core.on_packet(index, seq & 0xFFFF, ts % WRAP, True, b"\xfc\x00\x01", now)


def test_audio_and_video_share_one_timeline_from_sender_reports() -> None:
    """Video starts on its key frame; audio before it is cut; both are placed by their SRs
    even though their RTP clocks start at unrelated values (and video wraps)."""
    core = RecordingCore(gate_timeout=2.5)
    a = core.add_track("a", "audio", "OPUS", 48000)
    v = core.add_track("v", "video", "VP8", 90000)
    a_ts0, v_ts0 = 123456, WRAP - 9000  # video wraps 0.1 s in
    # Sender clock: audio ts a_ts0 at NTP 500.0; video ts v_ts0 at NTP 500.3 (it starts later).
    core.on_sender_report(a, ntp(500.0), a_ts0)
    frames = encode_vp8(30, gop=30)
    vpk = packetize_vp8(frames, ts=v_ts0)
    outputs: list = []
    now = 10.0
    for i in range(100):  # 2 s of audio, 20 ms each
        t = i * 0.02
        _opus(core, a, i, a_ts0 + i * 960, now + t)
        if t >= 0.3:
            k = round((t - 0.3) * 30)
            for p in [p for p in vpk if p.ts == (v_ts0 + k * 3000) % WRAP]:
                core.on_packet(v, p.seq, p.ts, p.marker, p.payload, now + t)
        if i == 20:
            core.on_sender_report(v, ntp(500.3), v_ts0)
        outputs += core.poll(now + t)
    outputs += core.finish(now + 2.0)
    parts = [o for o in outputs if isinstance(o, OpenPart)]
    assert len(parts) == 1 and [s.kind for s in parts[0].streams] == ["audio", "video"]
    assert parts[0].streams[1].width == 160
    packets = [o for o in outputs if isinstance(o, MuxPacket)]
    video = [p for p in packets if p.track == v]
    audio = [p for p in packets if p.track == a]
    assert video[0].pts == 0 and video[0].keyframe
    assert all(b.pts - a_.pts == 3000 for a_, b in zip(video, video[1:], strict=False))
    # audio that started 0.3 s before the key frame is cut at media time 0
    assert 0 <= audio[0].pts < 960 and audio[0].duration == 960
    assert len(audio) == 100 - 15


def test_gate_times_out_without_sender_reports() -> None:
    core = RecordingCore(gate_timeout=1.0)
    a = core.add_track("a", "audio", "OPUS", 48000)
    for i in range(10):
        _opus(core, a, i, i * 960, i * 0.02)
        assert core.poll(i * 0.02) == []
    out = core.poll(1.1)
    assert isinstance(out[0], OpenPart) and [p.pts for p in out[1:]][:2] == [0, 960]
    assert core.media_time_at(1.1) is not None


def test_late_track_gets_its_own_part_on_the_same_timeline() -> None:
    core = RecordingCore(gate_timeout=0.5)
    a = core.add_track("a", "audio", "OPUS", 48000)
    core.on_sender_report(a, ntp(100.0), 0)
    out = []
    for i in range(50):
        _opus(core, a, i, i * 960, i * 0.02)
        out += core.poll(i * 0.02)
    b = core.add_track("b", "audio", "OPUS", 48000)  # joins 1 s later
    core.on_sender_report(b, ntp(101.0), 7777)
    _opus(core, b, 0, 7777, 1.0)
    out += core.poll(1.0)
    parts = [o for o in out if isinstance(o, OpenPart)]
    assert [p.part for p in parts] == [0, 1]
    late = [o for o in out if isinstance(o, MuxPacket) and o.track == b]
    assert late[0].part == 1 and late[0].pts == 48000  # media time 1.0 s
