"""Real encoded frames (libvpx and libx264 through PyAV) and RTP packetisers for the tests."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

MTU = 300  # small, so that key frames span many packets


@dataclass
class Pkt:
    seq: int
    ts: int
    marker: bool
    payload: bytes


def _image(i: int, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    """A moving gradient with a little noise: key frames span packets, deltas are small."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 2 + i * 4) % 256, (yy * 2 + i) % 256, (xx + yy) % 256], axis=-1)
    img = img + rng.integers(0, 24, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def encode_vp8(frames: int, *, gop: int = 30, size: tuple[int, int] = (160, 120)) -> list[bytes]:
    w, h = size
    enc = av.CodecContext.create("libvpx", "w")
    enc.width, enc.height, enc.pix_fmt = w, h, "yuv420p"
    enc.time_base = Fraction(1, 30)
    enc.gop_size = gop
    enc.options = {"deadline": "realtime", "lag-in-frames": "0", "cpu-used": "8"}
    out: list[bytes] = []
    rng = np.random.default_rng(1)
    for i in range(frames):
        img = _image(i, w, h, rng)
        f = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        f.pts = i
        out += [bytes(p) for p in enc.encode(f)]
    out += [bytes(p) for p in enc.encode(None)]
    return out


def encode_h264(frames: int, *, gop: int = 30, size: tuple[int, int] = (160, 120)) -> list[bytes]:
    w, h = size
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = w, h, "yuv420p"
    enc.time_base = Fraction(1, 30)
    enc.gop_size = gop
    enc.options = {"tune": "zerolatency", "preset": "ultrafast", "bf": "0"}
    out: list[bytes] = []
    rng = np.random.default_rng(2)
    for i in range(frames):
        img = _image(i, w, h, rng)
        f = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        f.pts = i
        out += [bytes(p) for p in enc.encode(f)]
    out += [bytes(p) for p in enc.encode(None)]
    return out


def packetize_vp8(frames: list[bytes], *, seq: int = 0, ts: int = 0, step: int = 3000,
                  mtu: int = MTU) -> list[Pkt]:
    out: list[Pkt] = []
    for n, frame in enumerate(frames):
        pid = n & 0x7FFF
        chunks = [frame[i:i + mtu] for i in range(0, len(frame), mtu)]
        for i, chunk in enumerate(chunks):
            desc = bytes([0x90 if i == 0 else 0x80, 0x80, 0x80 | (pid >> 8), pid & 0xFF])
            out.append(Pkt(seq & 0xFFFF, ts & 0xFFFFFFFF, i == len(chunks) - 1, desc + chunk))
            seq += 1
        ts += step
    return out


def nal_units(annexb: bytes) -> list[bytes]:
    parts = annexb.replace(b"\x00\x00\x00\x01", b"\x00\x00\x01").split(b"\x00\x00\x01")
    return [p for p in parts if p]


def packetize_h264(frames: list[bytes], *, seq: int = 0, ts: int = 0, step: int = 3000,
                   mtu: int = MTU) -> list[Pkt]:
    """Small NAL units (SPS, PPS, SEI) aggregated in STAP-A, big ones in FU-A, others single."""
    out: list[Pkt] = []
    for frame in frames:
        payloads: list[bytes] = []
        small: list[bytes] = []
        for nal in nal_units(frame):
            if len(nal) < 100 and nal[0] & 0x1F in (6, 7, 8):
                small.append(nal)
                continue
            if small:
                payloads.append(bytes([0x18]) + b"".join(
                    len(s).to_bytes(2, "big") + s for s in small))
                small = []
            if len(nal) <= mtu:
                payloads.append(nal)
                continue
            head, body = nal[0], nal[1:]
            chunks = [body[i:i + mtu] for i in range(0, len(body), mtu)]
            for i, chunk in enumerate(chunks):
                fu = (head & 0x1F) | (0x80 if i == 0 else 0) | (0x40 if i == len(chunks) - 1 else 0)
                payloads.append(bytes([(head & 0xE0) | 28, fu]) + chunk)
        for i, p in enumerate(payloads):
            out.append(Pkt(seq & 0xFFFF, ts & 0xFFFFFFFF, i == len(payloads) - 1, p))
            seq += 1
        ts += step
    return out


def decode_all(codec: str, frames: list[bytes]) -> int:
    """Decode frames in order; raises on any decoder error. Returns frames decoded."""
    dec = av.CodecContext.create(codec, "r")
    n = 0
    for f in frames:
        n += len(dec.decode(av.Packet(f)))
    n += len(dec.decode(None))
    return n
