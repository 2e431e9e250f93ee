"""Synthetic publisher: VP8-like video frames and Opus-like audio, packetized into real RTP.

Video is a constant-bitrate encoder at `fps` with a keyframe every `keyframe_interval`
seconds, a keyframe costing `keyframe_ratio` delta frames; a PLI from the node makes the next
frame a keyframe (and restarts the keyframe period, as libvpx does on a forced keyframe).
The bitrate is fixed: there is no bandwidth estimation yet, so the sender never adapts.

With `temporal_layers` 2 or 3 the encoder is temporally layered as libwebrtc's VP8 is in
simulcast: TIDs 0,1 or 0,2,1,2 repeating from each keyframe, the layer's bitrate split 60/40
or 40/20/40 % between TIDs (frame sizes follow), and the descriptor carries a 15-bit picture
ID, TL0PICIDX and TID with the layer-sync bit on frames that refer only to TL0.

Each packet carries, right after the VP8 descriptor (and the payload-header byte on the first
packet of a frame), `!dIIHH`: send time, stream packet index, frame index, packet index in
frame, packets in frame. Audio carries `!dI`: send time, packet index. The subscriber reads
them back for end-to-end latency and residual-loss accounting; the node never looks at them.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from sfu.wire import rtcp
from sfu.wire.rtp import build_packet

VIDEO_PT = 96
AUDIO_PT = 111
VIDEO_CLOCK = 90_000
AUDIO_CLOCK = 48_000
RTP_HEADER = 12
VIDEO_META = struct.Struct("!dIIHH")
# TID of each frame in a keyframe-aligned pattern, and each TID's frame-size factor (its share
# of the bitrate over its share of the frames: libwebrtc's 60/40 and 40/20/40 % splits)
TEMPORAL_PATTERNS: dict[int, tuple[int, ...]] = {1: (0,), 2: (0, 1), 3: (0, 2, 1, 2)}
TEMPORAL_WEIGHTS: dict[int, tuple[float, ...]] = {1: (1.0,), 2: (1.2, 0.8),
                                                  3: (1.6, 0.8, 0.8)}
AUDIO_META = struct.Struct("!dI")
AUDIO_PTIME = 0.020

Send = Callable[[bytes, float], None]


@dataclass(slots=True)
class PublisherConfig:
    video_bitrate: float = 1.5e6  # bits/s of RTP payload, on average over a keyframe period
    fps: float = 30.0
    keyframe_interval: float = 3.0  # seconds; 0 disables periodic keyframes
    keyframe_ratio: float = 6.0  # keyframe size / delta frame size
    max_payload: int = 1200  # bytes of RTP payload per packet (descriptor included)
    audio: bool = True
    audio_min: int = 60
    audio_max: int = 120
    temporal_layers: int = 1  # 1 (no TIDs), 2 or 3
    video_ssrc: int = 0x1111_0001
    audio_ssrc: int = 0x1111_0002


@dataclass(slots=True)
class SentLog:
    """What one stream put on the wire, indexed by stream packet index."""

    times: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    frame_of: list[int] = field(default_factory=list)  # video: frame index of each packet


@dataclass(slots=True)
class FrameLog:
    times: list[float] = field(default_factory=list)  # capture (= send) time
    keyframe: list[bool] = field(default_factory=list)
    first_packet: list[int] = field(default_factory=list)


class Publisher:
    """Generates the media of one publisher; `send(data, now)` puts a packet on the uplink."""

    def __init__(self, config: PublisherConfig, send: Send, seed: int) -> None:
        if config.video_bitrate <= 0 or config.fps <= 0:
            raise ValueError("video bitrate and fps must be positive")
        if config.temporal_layers not in TEMPORAL_PATTERNS:
            raise ValueError("temporal layers must be 1, 2 or 3")
        self.config = config
        self._send = send
        self._rng = random.Random(seed)
        rng = self._rng
        self._video_seq = rng.randrange(1 << 16)
        self._audio_seq = rng.randrange(1 << 16)
        self._video_ts0 = rng.randrange(1 << 32)
        self._audio_ts0 = rng.randrange(1 << 32)
        self._frame_period = 1.0 / config.fps
        k = max(1, round(config.keyframe_interval * config.fps)) if config.keyframe_interval else 0
        self._gop = k
        # Mean frame size over a keyframe period equals bitrate / fps.
        per_frame = config.video_bitrate / 8 / config.fps
        self._delta_bytes = per_frame * k / (config.keyframe_ratio + k - 1) if k else per_frame
        self._force_key = True  # an encoder starts on a keyframe
        self._was_periodic = False
        self._debt = 0.0  # bytes sent above the rate budget (forced keyframes)
        self._since_key = 0
        self._frame = 0
        self._audio_index = 0
        self.video = SentLog()
        self.audio = SentLog()
        self.frames = FrameLog()
        self.plis_received = 0
        self.nacks_received = 0
        self.retransmissions = 0
        self._recent: dict[int, bytes] = {}  # video seq & 1023 -> packet, for NACK answers
        self.keyframes_sent = 0
        self.forced_keyframes = 0
        # From the SSRC, not the RNG: a layered stream leaves the size draws of a plain one
        # unchanged.
        self._picture_id = config.video_ssrc & 0x7FFF
        self._tl0 = (config.video_ssrc >> 16) & 0xFF

    # --- events ---------------------------------------------------------------------------

    def video_frame(self, now: float) -> None:
        cfg = self.config
        periodic = self._gop > 0 and self._since_key >= self._gop
        key = self._force_key or periodic
        self._was_periodic = periodic
        if key:
            if self._force_key and self._frame > 0:
                self.forced_keyframes += 1
            self._force_key = False
            self._since_key = 0
            self.keyframes_sent += 1
        layers = cfg.temporal_layers
        tid = TEMPORAL_PATTERNS[layers][self._since_key % len(TEMPORAL_PATTERNS[layers])]
        weight = TEMPORAL_WEIGHTS[layers][tid]
        # Layer sync (Y): the frame refers only to TL0 (the first TID 1/2 frames after TL0).
        sync = tid > 0 and self._since_key % len(TEMPORAL_PATTERNS[layers]) <= 2
        self._since_key += 1
        # Rate control: a forced keyframe's extra bytes are paid back over the next ~0.5 s of
        # delta frames (as a CBR encoder's buffer model does), so PLIs do not raise the rate.
        if key:
            size = self._delta_bytes * cfg.keyframe_ratio
        else:
            payback = self._debt / max(1.0, 0.5 * cfg.fps)
            size = max(0.25 * self._delta_bytes * weight,
                       self._delta_bytes * weight - payback)
        size = max(40, int(size * self._rng.uniform(0.85, 1.15)))
        nominal = self._delta_bytes * (cfg.keyframe_ratio if self._periodic_key(key) else weight)
        self._debt = max(0.0, self._debt + size - nominal)
        frame = self._frame
        self._frame += 1
        ts = (self._video_ts0 + round(frame * VIDEO_CLOCK / cfg.fps)) & 0xFFFF_FFFF
        # Split so every packet's payload (descriptor + meta + data) fits max_payload.
        layered = layers > 1
        if layered:
            self._picture_id = (self._picture_id + 1) & 0x7FFF
            if tid == 0:
                self._tl0 = (self._tl0 + 1) & 0xFF
            # X; I, L, T; 15-bit picture ID; TL0PICIDX; TID and Y
            ext = bytes([0xE0, 0x80 | (self._picture_id >> 8), self._picture_id & 0xFF,
                         self._tl0, (tid << 6) | (0x20 if sync else 0)])
        else:
            ext = b""
        room = cfg.max_payload - 1 - len(ext) - VIDEO_META.size - 1
        count = max(1, -(-size // room))
        base, extra = divmod(size, count)
        log = self.video
        self.frames.times.append(now)
        self.frames.keyframe.append(key)
        self.frames.first_packet.append(len(log.times))
        for i in range(count):
            first = i == 0
            # VP8 descriptor: S on the first packet, X when the extension follows
            body = bytearray([(0x10 if first else 0) | (0x80 if layered else 0)])
            body += ext
            if first:
                body.append(0x10 if key else 0x11)  # VP8 payload header: show_frame, P bit
            index = len(log.times)
            body += VIDEO_META.pack(now, index, frame, i, count)
            body += bytes(base + (1 if i < extra else 0))
            data = build_packet(payload_type=VIDEO_PT, seq=self._video_seq, timestamp=ts,
                                ssrc=cfg.video_ssrc, payload=bytes(body), marker=i == count - 1)
            self._video_seq = (self._video_seq + 1) & 0xFFFF
            log.times.append(now)
            log.sizes.append(len(data))
            log.frame_of.append(frame)
            self._recent[(self._video_seq - 1) & 0x3FF] = data
            self._send(data, now)

    def audio_packet(self, now: float) -> None:
        cfg = self.config
        index = self._audio_index
        self._audio_index += 1
        size = self._rng.randint(cfg.audio_min, cfg.audio_max)
        ts = (self._audio_ts0 + index * round(AUDIO_PTIME * AUDIO_CLOCK)) & 0xFFFF_FFFF
        payload = AUDIO_META.pack(now, index) + bytes(max(0, size - AUDIO_META.size))
        data = build_packet(payload_type=AUDIO_PT, seq=self._audio_seq, timestamp=ts,
                            ssrc=cfg.audio_ssrc, payload=payload)
        self._audio_seq = (self._audio_seq + 1) & 0xFFFF
        self.audio.times.append(now)
        self.audio.sizes.append(len(data))
        self._send(data, now)

    def _periodic_key(self, key: bool) -> bool:
        # The first frame and periodic keyframes are in the budget; forced ones are not.
        return key and (self._was_periodic or self._frame == 1)

    def on_rtcp(self, data: bytes, now: float) -> None:
        """RTCP from the node; a PLI (or FIR) for the video SSRC forces the next keyframe."""
        for p in rtcp.parse_compound(data):
            if isinstance(p, rtcp.Pli) and p.media_ssrc == self.config.video_ssrc:
                self.plis_received += 1
                self._force_key = True
            elif isinstance(p, rtcp.Nack) and p.media_ssrc == self.config.video_ssrc:
                # A browser answers NACK with RTX; resending the packet itself is the same
                # to the node's receive path (it is not in the SentLog: not a new packet).
                self.nacks_received += 1
                for seq in p.lost:
                    old = self._recent.get(seq & 0x3FF)
                    if old is not None and int.from_bytes(old[2:4], "big") == seq:
                        self.retransmissions += 1
                        self._send(old, now)
            elif isinstance(p, rtcp.Fir) and any(
                ssrc == self.config.video_ssrc for ssrc, _ in p.entries
            ):
                self.plis_received += 1
                self._force_key = True
