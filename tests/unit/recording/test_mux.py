"""Encoded frames through RecordingCore and the writer thread into WebM/MKV, read back."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from sfu.recording.mux import MuxWorker, TextFile
from sfu.recording.session import RecordingCore
from tests.unit.recording.helpers import encode_h264, encode_vp8, packetize_h264, packetize_vp8


def _opus_packets(n: int) -> list[bytes]:
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate, enc.layout, enc.format = 48000, "stereo", "s16"
    out: list[bytes] = []
    for i in range(n):
        fr = av.AudioFrame.from_ndarray(np.zeros((1, 1920), dtype=np.int16), format="s16",
                                        layout="stereo")
        fr.sample_rate, fr.pts = 48000, i * 960
        out += [bytes(p) for p in enc.encode(fr)]
    return out


def _record(tmp_path: Path, codec: str) -> tuple[Path, MuxWorker]:
    frames = encode_vp8(60, gop=30) if codec == "VP8" else encode_h264(60, gop=30)
    video = packetize_vp8(frames, ts=(1 << 32) - 30000) if codec == "VP8" else packetize_h264(
        frames, ts=(1 << 32) - 30000)
    opus = _opus_packets(100)
    core = RecordingCore(gate_timeout=0.2)
    a = core.add_track("a", "audio", "OPUS", 48000)
    v = core.add_track("v", "video", codec, 90000)
    ntp = 1000 << 32
    core.on_sender_report(a, ntp, 0)
    core.on_sender_report(v, ntp, (1 << 32) - 30000)
    worker = MuxWorker(lambda part, ext: tmp_path / f"rec{part}.{ext}")
    # lose one packet of frame 40 (a delta): frames 40..59 must not be written
    starts = [i for i, p in enumerate(video) if i == 0 or video[i - 1].ts != p.ts]
    lost = starts[40] + (1 if starts[41] - starts[40] > 1 else 0)
    for i, p in enumerate(video):
        if i != lost:
            core.on_packet(v, p.seq, p.ts, p.marker, p.payload, (p.ts - video[0].ts) % (1 << 32) / 90000)
    for i, data in enumerate(opus[:100]):
        core.on_packet(a, i, i * 960, True, data, i * 0.02)
    for item in core.poll(5.0) + core.finish(5.0):
        assert worker.submit(item)
    assert core.take_keyframe_requests() == [v]
    worker.submit(TextFile(tmp_path / "side.txt", "hello"))
    worker.close()
    assert worker.error is None and len(worker.files) == 1
    return worker.files[0], worker


def _check(path: Path, codec: str) -> None:
    with av.open(str(path)) as c:
        vs, aus = c.streams.video[0], c.streams.audio[0]
        assert vs.codec_context.name == codec and aus.codec_context.name == "opus"
        assert float(vs.start_time * vs.time_base) == 0.0
        assert abs(float(aus.start_time * aus.time_base)) < 0.03
        decoded = 0
        for frame in c.decode(video=0):
            assert frame.width == 160
            decoded += 1
        assert decoded == 40  # 0..39; 40..59 skipped after the loss, no key frame follows


def test_vp8_opus_into_webm(tmp_path: Path) -> None:
    path, _ = _record(tmp_path, "VP8")
    assert path.suffix == ".webm"
    _check(path, "vp8")
    assert (tmp_path / "side.txt").read_text() == "hello"


def test_h264_opus_into_matroska(tmp_path: Path) -> None:
    path, _ = _record(tmp_path, "H264")
    assert path.suffix == ".mkv"
    _check(path, "h264")


def test_full_queue_refuses_and_counts(tmp_path: Path) -> None:
    worker = MuxWorker(lambda part, ext: tmp_path / f"x{part}.{ext}", queue_size=1)
    results = [worker.submit(TextFile(tmp_path / "t.txt", "x", append=True)) for _ in range(200)]
    worker.close()
    assert not all(results) and worker.dropped == results.count(False)
