"""Synthetic media sources for aiortc peers.

``SyntheticVideoTrack`` draws a moving pattern (a gradient that scrolls plus a bouncing
block) so the encoder produces real, non-trivial VP8/H.264 frames; ``ToneAudioTrack``
produces a continuous sine wave as 48 kHz mono s16 frames of 20 ms.

Both pace themselves against a monotonic clock from their first ``recv()``: the pts
advances by exactly one frame period per frame and ``recv()`` sleeps until the wall
clock catches up, like a real capture device.
"""

from __future__ import annotations

import asyncio
import fractions
import math
import time

import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame, VideoFrame

VIDEO_CLOCK_RATE = 90_000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)

AUDIO_SAMPLE_RATE = 48_000
AUDIO_PTIME = 0.020
AUDIO_SAMPLES_PER_FRAME = int(AUDIO_SAMPLE_RATE * AUDIO_PTIME)  # 960
AUDIO_TIME_BASE = fractions.Fraction(1, AUDIO_SAMPLE_RATE)


class SyntheticVideoTrack(MediaStreamTrack):
    """A video track of ``width`` x ``height`` yuv420p frames at ``fps``, with motion."""

    kind = "video"

    def __init__(self, width: int = 320, height: int = 240, fps: int = 30) -> None:
        super().__init__()
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise ValueError("width and height must be positive and even")
        if fps <= 0:
            raise ValueError("fps must be positive")
        self.width = width
        self.height = height
        self.fps = fps
        self.frames_sent = 0
        self._start: float | None = None
        # Precomputed base planes; each frame shifts them, which costs one np.roll.
        xs = np.arange(width, dtype=np.int32)
        ys = np.arange(height, dtype=np.int32)
        self._y_base = ((xs[None, :] + ys[:, None]) % 256).astype(np.uint8)
        cw, ch = width // 2, height // 2
        self._u_base = np.tile((np.arange(cw) * 255 // max(cw - 1, 1)).astype(np.uint8), (ch, 1))
        self._v_base = np.tile(
            (np.arange(ch) * 255 // max(ch - 1, 1)).astype(np.uint8)[:, None], (1, cw)
        )

    def _render(self, n: int) -> np.ndarray:
        w, h = self.width, self.height
        y = np.roll(self._y_base, shift=(n * 3) % w, axis=1)
        # A bright block bouncing across the frame.
        bw, bh = max(w // 8, 2), max(h // 8, 2)
        span_x, span_y = max(w - bw, 1), max(h - bh, 1)
        bx = abs((n * 5) % (2 * span_x) - span_x)
        by = abs((n * 3) % (2 * span_y) - span_y)
        y = y.copy()
        y[by : by + bh, bx : bx + bw] = 235
        u = np.roll(self._u_base, shift=n % (w // 2), axis=1)
        v = np.roll(self._v_base, shift=n % (h // 2), axis=0)
        return np.concatenate([y.reshape(-1), u.reshape(-1), v.reshape(-1)]).reshape(h * 3 // 2, w)

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        n = self.frames_sent
        now = time.monotonic()
        if self._start is None:
            self._start = now
        else:
            due = self._start + n / self.fps
            if due > now:
                await asyncio.sleep(due - now)
        if self.readyState != "live":
            raise MediaStreamError
        frame = VideoFrame.from_ndarray(self._render(n), format="yuv420p")
        frame.pts = n * VIDEO_CLOCK_RATE // self.fps
        frame.time_base = VIDEO_TIME_BASE
        self.frames_sent = n + 1
        return frame


class ToneAudioTrack(MediaStreamTrack):
    """A sine tone: 48 kHz mono s16 frames of 20 ms (960 samples), phase-continuous."""

    kind = "audio"

    def __init__(self, freq: float = 440.0, amplitude: float = 0.3) -> None:
        super().__init__()
        if not 0 < freq < AUDIO_SAMPLE_RATE / 2:
            raise ValueError("freq must be between 0 and Nyquist")
        self.freq = freq
        self.amplitude = amplitude
        self.frames_sent = 0
        self._start: float | None = None

    def _samples(self, first_sample: int) -> np.ndarray:
        t = (first_sample + np.arange(AUDIO_SAMPLES_PER_FRAME)) / AUDIO_SAMPLE_RATE
        wave = np.sin(2 * math.pi * self.freq * t) * self.amplitude * 32767
        return wave.astype(np.int16).reshape(1, -1)

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        n = self.frames_sent
        now = time.monotonic()
        if self._start is None:
            self._start = now
        else:
            due = self._start + n * AUDIO_PTIME
            if due > now:
                await asyncio.sleep(due - now)
        if self.readyState != "live":
            raise MediaStreamError
        pts = n * AUDIO_SAMPLES_PER_FRAME
        frame = AudioFrame.from_ndarray(self._samples(pts), format="s16", layout="mono")
        frame.sample_rate = AUDIO_SAMPLE_RATE
        frame.pts = pts
        frame.time_base = AUDIO_TIME_BASE
        self.frames_sent = n + 1
        return frame
