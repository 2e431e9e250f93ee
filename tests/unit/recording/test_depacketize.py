"""VP8 and H.264 depacketisation from real encoder output; loss never yields a corrupt frame."""

from __future__ import annotations

import random

import pytest

from sfu.recording.depacketize import (
    DepacketizeError,
    FrameAssembler,
    h264_frame,
    h264_nal_units,
    opus_samples,
    vp8_frame,
)
from tests.unit.recording.helpers import (
    Pkt,
    decode_all,
    encode_h264,
    encode_vp8,
    nal_units,
    packetize_h264,
    packetize_vp8,
)


def feed(asm: FrameAssembler, packets: list[Pkt], start: float = 0.0, dt: float = 0.001) -> list:
    out = []
    now = start
    for p in packets:
        out += asm.push(p.seq, p.ts, p.marker, p.payload, now)
        now += dt
    return out + asm.flush()


@pytest.fixture(scope="module")
def vp8_frames() -> list[bytes]:
    return encode_vp8(90, gop=30)


@pytest.fixture(scope="module")
def h264_frames() -> list[bytes]:
    return encode_h264(90, gop=30)


def test_vp8_frames_split_across_packets_round_trip(vp8_frames: list[bytes]) -> None:
    packets = packetize_vp8(vp8_frames, seq=65500, ts=(1 << 32) - 6000)  # both wrap
    assert len(packets) > 2 * len(vp8_frames)  # key frames span several packets
    frames = feed(FrameAssembler("VP8"), packets)
    assert [f.data for f in frames] == vp8_frames
    assert frames[0].keyframe and frames[0].size == (160, 120)
    assert [f.keyframe for f in frames].count(True) == 3
    assert decode_all("vp8", [f.data for f in frames]) == len(vp8_frames)


def test_vp8_frame_rejects_missing_head() -> None:
    frame = encode_vp8(1)[0]
    packets = packetize_vp8([frame])
    with pytest.raises(DepacketizeError):
        vp8_frame([p.payload for p in packets[1:]])


def test_h264_single_stap_a_and_fu_a(h264_frames: list[bytes]) -> None:
    packets = packetize_h264(h264_frames, seq=65530, mtu=2000)
    kinds = {p.payload[0] & 0x1F for p in packets}
    assert {24, 28} <= kinds and kinds & set(range(1, 24))  # STAP-A, FU-A and single NALs
    frames = feed(FrameAssembler("H264"), packets)
    assert [nal_units(f.data) for f in frames] == [nal_units(f) for f in h264_frames]
    assert frames[0].keyframe
    assert decode_all("h264", [f.data for f in frames]) == len(h264_frames)


def test_h264_fu_a_fragments_and_stap_a_are_parsed() -> None:
    idr = bytes([0x65]) + bytes(range(200))
    fu = [bytes([0x7C, 0x85]) + idr[1:100], bytes([0x7C, 0x05]) + idr[100:150],
          bytes([0x7C, 0x45]) + idr[150:]]
    sps, pps = b"\x67\x42\x00\x1f", b"\x68\xce\x06\xe2"
    stap = b"\x18" + len(sps).to_bytes(2, "big") + sps + len(pps).to_bytes(2, "big") + pps
    assert h264_nal_units([stap, *fu]) == [sps, pps, idr]
    assert h264_frame([stap, *fu]).keyframe
    with pytest.raises(DepacketizeError):
        h264_nal_units([stap, fu[0], fu[2]][1:2])  # start without end
    with pytest.raises(DepacketizeError):
        h264_nal_units([fu[1], fu[2]])  # continuation without start
    with pytest.raises(DepacketizeError):
        h264_nal_units([b"\x18\x00\x10\x67"])  # STAP-A unit runs past the payload


def test_reordered_packets_are_put_back_in_order(vp8_frames: list[bytes]) -> None:
    packets = packetize_vp8(vp8_frames)
    rng = random.Random(3)
    shuffled = list(packets)
    for i in range(4, len(shuffled) - 4, 4):  # the stream starts in order
        window = shuffled[i:i + 4]
        rng.shuffle(window)
        shuffled[i:i + 4] = window
    frames = feed(FrameAssembler("VP8"), shuffled)
    assert [f.data for f in frames] == vp8_frames


@pytest.mark.parametrize("codec", ["VP8", "H264"])
def test_loss_skips_to_next_keyframe_and_never_writes_a_corrupt_frame(
    codec: str, vp8_frames: list[bytes], h264_frames: list[bytes]
) -> None:
    src = vp8_frames if codec == "VP8" else h264_frames
    packets = packetize_vp8(src) if codec == "VP8" else packetize_h264(src)
    # Lose one packet in the middle of frame 10 (a delta frame): frames 10..29 are unusable.
    starts = [i for i, p in enumerate(packets) if i == 0 or packets[i - 1].ts != p.ts]
    lost = starts[10]
    asm = FrameAssembler(codec, reorder_delay=0.05)
    frames = feed(asm, packets[:lost] + packets[lost + 1:], dt=0.01)
    assert asm.stats.lost == 1 and asm.stats.keyframe_requests == 1
    assert asm.take_keyframe_request() and not asm.take_keyframe_request()
    got = [f.data for f in frames]
    norm = (lambda x: x) if codec == "VP8" else (lambda x: b"".join(nal_units(x)))
    assert [norm(g) for g in got] == [norm(s) for s in src[:10] + src[30:]]
    decode_all(codec.lower(), got)  # raises on a corrupt frame


def test_random_loss_output_always_decodes(vp8_frames: list[bytes]) -> None:
    packets = packetize_vp8(vp8_frames, mtu=1200)
    rng = random.Random(7)
    kept = [p for p in packets if rng.random() > 0.05]
    asm = FrameAssembler("VP8", reorder_delay=0.02)
    frames = feed(asm, kept, dt=0.01)
    assert frames and all(f.data in vp8_frames for f in frames)
    decode_all("vp8", [f.data for f in frames])
    # every output frame is in source order with no delta frame after a gap before a key
    idx = [vp8_frames.index(f.data) for f in frames]
    assert idx == sorted(idx)


def test_late_retransmission_fills_the_gap(vp8_frames: list[bytes]) -> None:
    packets = packetize_vp8(vp8_frames[:5])
    asm = FrameAssembler("VP8", reorder_delay=0.3)
    out = []
    for i, p in enumerate(packets):
        if i == 3:
            continue
        out += asm.push(p.seq, p.ts, p.marker, p.payload, i * 0.01)
    p = packets[3]
    out += asm.push(p.seq, p.ts, p.marker, p.payload, 0.2)  # NACK repaired, within the delay
    out += asm.flush()
    assert [f.data for f in out] == vp8_frames[:5] and asm.stats.lost == 0


def test_gap_is_given_up_after_the_reorder_delay() -> None:
    asm = FrameAssembler("OPUS", reorder_delay=0.1)
    assert len(asm.push(0, 0, True, b"\xfc\x01", 0.0)) == 1
    assert asm.push(2, 1920, True, b"\xfc\x03", 0.01) == []  # waits for seq 1
    assert asm.poll(0.05) == []
    late = asm.poll(0.2)
    assert [f.timestamp for f in late] == [1920] and asm.stats.lost == 1
    assert asm.push(1, 960, True, b"\xfc\x02", 0.3) == [] and asm.stats.late == 1


def test_opus_samples_from_toc() -> None:
    assert opus_samples(bytes([0xFC])) == 960  # CELT 20 ms, one frame
    assert opus_samples(bytes([0x78 | 1])) == 1920  # SILK? config 15 hybrid 20 ms, two frames
    assert opus_samples(bytes([0x03 | (16 << 3), 0x03])) == 360  # CELT 2.5 ms x 3
