"""Synthetic subscriber: frame reassembly, decodability, rendering, audio playout, PLI.

Video model (what a WebRTC receiver without NACK does):
* a frame is the packets sharing one RTP timestamp; it is complete when its first packet
  (VP8 descriptor S=1, partition 0), its last (marker) and every seq between them arrived;
* a keyframe is always decodable; a delta frame only when it follows the last decoded frame
  with no seq gap, so after a loss nothing decodes until the next keyframe;
* a seq gap that is still open `loss_timeout` after it appeared (reordering tolerance) is a
  loss the receiver cannot recover (there is no NACK yet): it asks for a keyframe with a PLI,
  and again every `pli_interval` while it still waits;
* frames render at the instant they become complete and decodable, in timestamp order.
Audio packets play at arrival if they arrive within `audio_deadline` of being sent.

Recovery (bench.sim.hooks.SubscriberRecovery, when given): packets pass through it first
(RTX unwrapped, RED split, FEC-recovered), every new video seq feeds its NACK generator, and
a gap is then declared lost only when the generator gives up on it (instead of after
`loss_timeout`), which triggers the same keyframe request.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.sim.hooks import SubscriberRecovery
from bench.sim.publisher import AUDIO_META, VIDEO_META
from sfu.wire import rtcp
from sfu.wire.codec import vp8_descriptor_size
from sfu.wire.rtp import parse_header

Schedule = Callable[[float, Callable[[float], None]], None]
SendRtcp = Callable[[bytes, float], None]

SUBSCRIBER_RTCP_SSRC = 0x5AB0_0000
_STALE_TS = 5 * 90_000  # 5 s of 90 kHz timestamps


@dataclass(slots=True)
class SubscriberConfig:
    loss_timeout: float = 0.02  # reordering tolerance before a gap counts as lost
    pli_interval: float = 0.3  # re-ask while still waiting for a keyframe
    audio_deadline: float = 0.5  # audio later than this after sending is not played


@dataclass(slots=True)
class _Frame:
    first: int | None = None  # extended seq of the S=1 packet
    last: int | None = None  # extended seq of the marker packet
    seqs: set[int] = field(default_factory=set)
    key: bool = False
    index: int = -1
    capture: float = 0.0


@dataclass(slots=True)
class ReceiveLog:
    """Per-stream arrivals at the application (after the downlink)."""

    arrivals: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)  # arrival - publisher send time
    indices: list[int] = field(default_factory=list)  # publisher packet index
    duplicates: int = 0


@dataclass(slots=True)
class RenderLog:
    times: list[float] = field(default_factory=list)
    frames: list[int] = field(default_factory=list)  # publisher frame index
    latencies: list[float] = field(default_factory=list)  # render - capture
    keyframes: int = 0


class Subscriber:
    """One viewer: an audio and a video down-track arriving over its downlink."""

    def __init__(self, name: str, video_ssrc: int, audio_ssrc: int, schedule: Schedule,
                 send_rtcp: SendRtcp, config: SubscriberConfig | None = None,
                 recovery: SubscriberRecovery | None = None) -> None:
        self.name = name
        self.video_ssrc = video_ssrc
        self.audio_ssrc = audio_ssrc
        self.config = config or SubscriberConfig()
        self._schedule = schedule
        self._send_rtcp = send_rtcp
        self.rtcp_ssrc = SUBSCRIBER_RTCP_SSRC | (zlib.crc32(name.encode()) & 0xFFFF)
        self.video = ReceiveLog()
        self.audio = ReceiveLog()
        self.rendered = RenderLog()
        self.audio_played = 0
        self.audio_late = 0
        self.plis_sent = 0
        self.nacks_sent = 0  # NACK packets (RTCP), from the recovery's generator
        self.recovery = recovery
        self._min_transit: float | None = None
        if recovery is not None:
            recovery.bind(self, self._lost)
        self.frames_discarded = 0  # complete but not decodable (after a loss)
        self._frames: dict[int, _Frame] = {}  # RTP timestamp -> frame being assembled
        self._seen: set[int] = set()
        self._highest: int | None = None  # extended seq
        self._decoded_end: int | None = None  # seq of the last packet of the last decoded frame
        self._last_ts: int | None = None  # RTP ts of the last rendered frame
        self._need_key = True
        self._last_pli: float | None = None
        self._pli_timer = False

    # --- input ------------------------------------------------------------------------------

    def on_packet(self, data: bytes, now: float) -> None:
        if self.recovery is not None:
            for media in self.recovery.on_packet(data, now):
                self._on_media(media, now)
            return
        self._on_media(data, now)

    def _on_media(self, data: bytes, now: float) -> None:
        hdr = parse_header(data)
        if hdr.ssrc == self.audio_ssrc:
            self._on_audio(data, hdr.payload_start, now)
        elif hdr.ssrc == self.video_ssrc:
            self._on_video(data, hdr.payload_start, hdr.seq, hdr.timestamp, hdr.marker, now)

    def _on_audio(self, data: bytes, start: int, now: float) -> None:
        sent, index = AUDIO_META.unpack_from(data, start)
        log = self.audio
        log.arrivals.append(now)
        log.sizes.append(len(data))
        log.latencies.append(now - sent)
        log.indices.append(index)
        if now - sent <= self.config.audio_deadline:
            self.audio_played += 1
        else:
            self.audio_late += 1

    def _on_video(self, data: bytes, start: int, seq: int, ts: int, marker: bool,
                  now: float) -> None:
        b0 = data[start]
        desc = vp8_descriptor_size(memoryview(data)[start:])
        begins = bool(b0 & 0x10) and not b0 & 0x07
        meta_at = start + desc + (1 if begins else 0)
        sent, index, frame_index, _, _ = VIDEO_META.unpack_from(data, meta_at)
        ext = self._extend(seq)
        log = self.video
        if ext in self._seen:
            log.duplicates += 1
            return
        log.arrivals.append(now)
        log.sizes.append(len(data))
        log.latencies.append(now - sent)
        log.indices.append(index)
        self._seen.add(ext)
        if self.recovery is not None:
            key_start = begins and not data[start + desc] & 0x01
            self.recovery.on_video(seq, key_start, now)
        if self._highest is None:
            self._highest = ext
        elif ext > self._highest:
            if ext > self._highest + 1:
                self._on_gap(self._highest + 1, ext, now)
            self._highest = ext
        if self._last_ts is not None and not _ts_newer(ts, self._last_ts):
            return  # a packet of a frame already rendered past
        frame = self._frames.get(ts)
        if frame is None:
            frame = self._frames[ts] = _Frame(index=frame_index, capture=sent)
        frame.seqs.add(ext)
        if begins:
            frame.first = ext
            frame.key = not data[start + desc] & 0x01
        if marker:
            frame.last = ext
        if self._need_key and frame.first is not None and not frame.key and \
                not self._key_pending(ts):
            # A delta frame while waiting for a keyframe can never decode: drop it now.
            del self._frames[ts]
            if _complete(frame):
                self.frames_discarded += 1
                self._request_keyframe(now)
            return
        if len(self._frames) > 256:
            self._prune(ts)
        if _complete(frame):
            self._decode(now)

    def _prune(self, newest: int) -> None:
        # Frames far older than the newest one will never complete (their packets are lost).
        stale = [t for t in self._frames
                 if _ts_newer(newest, t) and (newest - t) & 0xFFFF_FFFF > _STALE_TS]
        for t in stale:
            del self._frames[t]

    # --- decoding ---------------------------------------------------------------------------

    def _decode(self, now: float) -> None:
        progressed = True
        while progressed and self._frames:
            progressed = False
            for ts in sorted(self._frames, key=self._ts_key):
                frame = self._frames[ts]
                if not _complete(frame):
                    continue
                if frame.key or (not self._need_key and frame.first == self._end_plus_one()):
                    self._render(ts, frame, now)
                    progressed = True
                    break
                if self._need_key and not self._key_pending(ts):
                    # Complete but undecodable: a delta frame after a loss.
                    del self._frames[ts]
                    self.frames_discarded += 1
                    self._request_keyframe(now)
                    progressed = True
                    break

    def _render_time(self, frame: _Frame, now: float) -> float:
        """When the frame shows. Without recovery: as soon as it is decodable (the model's
        rule). With NACK, a WebRTC receiver's jitter buffer adds about one RTT to its target
        delay once retransmissions are frequent (libwebrtc's jitter estimator adds the RTT
        when NACKs pass its limit), so a frame repaired within that delay shows on schedule:
        shown at capture + smallest transit seen + `recovery.playout_delay`, or when decodable
        if later, never before the previous frame."""
        rec = self.recovery
        if rec is None or rec.playout_delay <= 0:
            return now
        transit = now - frame.capture
        if self._min_transit is None or transit < self._min_transit:
            self._min_transit = transit
        at = max(now, frame.capture + self._min_transit + rec.playout_delay)
        times = self.rendered.times
        return max(at, times[-1]) if times else at

    def _key_pending(self, ts: int) -> bool:
        """With NACK, an older keyframe still being repaired may yet make this frame decodable."""
        if self.recovery is None or not self.recovery.nack:
            return False
        return any(f.key and _ts_newer(ts, t) for t, f in self._frames.items())

    def _render(self, ts: int, frame: _Frame, now: float) -> None:
        # Everything older than the rendered frame is skipped for good.
        for other in [t for t in self._frames if not _ts_newer(t, ts)]:
            if other != ts:
                self.frames_discarded += 1
            del self._frames[other]
        self._last_ts = ts
        self._decoded_end = frame.last
        if frame.key:
            self._need_key = False
            self.rendered.keyframes += 1
        r = self.rendered
        at = self._render_time(frame, now)
        r.times.append(at)
        r.frames.append(frame.index)
        r.latencies.append(at - frame.capture)
        if self._decoded_end is not None:
            horizon = self._decoded_end - 2048
            if len(self._seen) > 4096:
                self._seen = {s for s in self._seen if s > horizon}

    def _end_plus_one(self) -> int | None:
        return None if self._decoded_end is None else self._decoded_end + 1

    def _ts_key(self, ts: int) -> int:
        ref = self._last_ts if self._last_ts is not None else ts
        return ((ts - ref + 0x8000_0000) & 0xFFFF_FFFF) - 0x8000_0000

    # --- loss and keyframe requests ----------------------------------------------------------

    def _on_gap(self, lo: int, hi: int, now: float) -> None:
        """Seqs lo..hi-1 are missing; with NACK the generator owns them (see on_video)."""
        if self.recovery is not None and self.recovery.nack:
            return
        def check(t: float) -> None:
            end = self._decoded_end
            if any(s not in self._seen and (end is None or s > end) for s in range(lo, hi)):
                self._lost(t)

        self._schedule(now + self.config.loss_timeout, check)

    def _lost(self, now: float) -> None:
        if not self._need_key:
            self._need_key = True
            # Pending delta frames can never decode now.
            for ts in [t for t, f in self._frames.items() if not f.key]:
                if _complete(self._frames[ts]):
                    self.frames_discarded += 1
                    del self._frames[ts]
        self._request_keyframe(now)

    def _request_keyframe(self, now: float) -> None:
        if not self._need_key:
            return
        if self._last_pli is None or now - self._last_pli >= self.config.pli_interval - 1e-9:
            self._last_pli = now
            self.plis_sent += 1
            pli = rtcp.Pli(sender_ssrc=self.rtcp_ssrc, media_ssrc=self.video_ssrc)
            self._send_rtcp(rtcp.serialize_compound([pli]), now)
        if not self._pli_timer:
            self._pli_timer = True
            assert self._last_pli is not None
            self._schedule(self._last_pli + self.config.pli_interval, self._pli_due)

    def _pli_due(self, now: float) -> None:
        self._pli_timer = False
        self._request_keyframe(now)

    def _extend(self, seq: int) -> int:
        if self._highest is None:
            return seq
        diff = ((seq - self._highest + 0x8000) & 0xFFFF) - 0x8000
        return self._highest + diff


def _complete(frame: _Frame) -> bool:
    if frame.first is None or frame.last is None or frame.last < frame.first:
        return False
    return len(frame.seqs) >= frame.last - frame.first + 1 and all(
        s in frame.seqs for s in range(frame.first, frame.last + 1)
    )


def _ts_newer(a: int, b: int) -> bool:
    return a != b and ((a - b) & 0xFFFF_FFFF) < 0x8000_0000
