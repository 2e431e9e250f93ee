"""The sans-I/O core of one recording: packets and sender reports of a room's tracks in, mux
instructions out (open a file part with these streams; write this encoded frame at this pts).

Sync rule: every track's frames are placed on the publisher's NTP clock through its first
sender report (arrival time plus the other tracks' measured offset when a track has none),
and media time 0 is the first video key frame (the first frame when there is no video), so
audio and video start together. Tracks that exist when the recording's first `gate_timeout`
seconds are over go into part 0; a track that appears later (a screen share started
mid-recording) gets a part of its own on the same media timeline, because a Matroska header
cannot grow streams once written.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sfu.recording.clock import TrackClock
from sfu.recording.depacketize import Frame, FrameAssembler, h264_parameter_sets, opus_samples
from sfu.wire.codec import H264, OPUS, VP8

GATE_TIMEOUT = 2.5  # seconds from a track's first frame to give up waiting for its SR/peers
MAX_PENDING = 1500  # frames held per track before the gate opens (about 30 s of audio)


@dataclass(slots=True)
class StreamSpec:
    """One stream of a file part, as the muxer needs it."""

    track: int  # the core's track index
    track_id: str
    kind: str
    codec: str
    clock_rate: int
    width: int = 0
    height: int = 0
    extradata: bytes = b""
    channels: int = 2


@dataclass(slots=True)
class OpenPart:
    part: int
    streams: list[StreamSpec]


@dataclass(slots=True)
class MuxPacket:
    part: int
    stream: int  # index in its part's stream list
    data: bytes
    pts: int  # in 1/clock_rate units, media time 0 = the recording's origin
    duration: int
    keyframe: bool
    track: int = 0


Output = OpenPart | MuxPacket


@dataclass(slots=True)
class TrackStats:
    frames_written: int = 0
    frames_dropped: int = 0  # before the origin, non-monotonic, or pending overflow
    first_pts: int | None = None
    last_pts: int | None = None


@dataclass(eq=False)
class Track:
    index: int
    track_id: str
    kind: str
    codec: str
    clock_rate: int
    channels: int
    assembler: FrameAssembler
    clock: TrackClock
    pending: list[tuple[int, Frame]] = field(default_factory=list)  # (extended ts, frame)
    first_frame_at: float | None = None
    part: int | None = None
    stream: int = 0
    ext0: int = 0
    pts0: int = 0
    stats: TrackStats = field(default_factory=TrackStats)
    removed: bool = False

    @property
    def video(self) -> bool:
        return self.kind == "video"

    @property
    def started(self) -> bool:
        return self.part is not None


class RecordingCore:
    """Frames of every recorded track of one room, placed on one media timeline."""

    def __init__(self, *, gate_timeout: float = GATE_TIMEOUT) -> None:
        self.gate_timeout = gate_timeout
        self.tracks: list[Track] = []
        self.parts: list[list[StreamSpec]] = []
        self.origin: float | None = None  # sender-clock seconds of media time 0
        self.offset: float = 0.0  # sender clock minus node clock (for event times)
        self._out: list[Output] = []
        self._keyframe_requests: set[int] = set()

    # --- inputs ----------------------------------------------------------------------------

    def add_track(
        self, track_id: str, kind: str, codec: str, clock_rate: int, channels: int = 2
    ) -> int:
        index = len(self.tracks)
        self.tracks.append(Track(
            index=index, track_id=track_id, kind=kind, codec=codec.upper(),
            clock_rate=clock_rate, channels=channels,
            assembler=FrameAssembler(codec), clock=TrackClock(clock_rate),
        ))
        return index

    def remove_track(self, index: int, now: float) -> None:
        """The track was unpublished: write what it still holds and stop it."""
        track = self.tracks[index]
        if track.removed:
            return
        self._frames(track, track.assembler.flush(), now)
        track.removed = True
        if not track.started:
            track.pending.clear()

    def on_packet(
        self, index: int, seq: int, timestamp: int, marker: bool, payload: bytes, now: float
    ) -> None:
        track = self.tracks[index]
        if track.removed:
            return
        self._frames(track, track.assembler.push(seq, timestamp, marker, payload, now), now)
        if track.assembler.take_keyframe_request():
            self._keyframe_requests.add(index)

    def on_sender_report(self, index: int, ntp: int, rtp_ts: int) -> None:
        self.tracks[index].clock.on_sender_report(ntp, rtp_ts)

    def resync(self, index: int) -> None:
        """A frame of this video track was lost after the core (a full mux queue): skip to
        the next key frame and ask for one."""
        track = self.tracks[index]
        if track.video and not track.assembler.waiting_keyframe:
            track.assembler.waiting_keyframe = True
            self._keyframe_requests.add(index)

    # --- outputs ---------------------------------------------------------------------------

    def poll(self, now: float) -> list[Output]:
        """Release timed-out gaps, open parts whose tracks are ready; the mux instructions."""
        for track in self.tracks:
            if not track.removed:
                self._frames(track, track.assembler.poll(now), now)
                if track.assembler.take_keyframe_request():
                    self._keyframe_requests.add(track.index)
        if self.origin is None:
            self._open_first(now)
        if self.origin is not None:
            for track in self.tracks:
                if not track.started and track.pending and self._ready(track, now):
                    self._open([track])
        out, self._out = self._out, []
        return out

    def finish(self, now: float) -> list[Output]:
        """End of the recording: flush every track, open what never got to (a short one)."""
        for track in self.tracks:
            if not track.removed:
                self._frames(track, track.assembler.flush(), now)
        if self.origin is None and any(t.pending for t in self.tracks):
            self._open_first(now, force=True)
        if self.origin is not None:
            for track in self.tracks:
                if not track.started and track.pending:
                    self._open([track])
        out, self._out = self._out, []
        return out

    def take_keyframe_requests(self) -> list[int]:
        wanted = sorted(self._keyframe_requests)
        self._keyframe_requests.clear()
        return wanted

    def waiting_keyframe(self, index: int) -> bool:
        return self.tracks[index].assembler.waiting_keyframe

    # --- media time ------------------------------------------------------------------------

    def media_time_of_rtp(self, index: int, rtp_ts: int) -> float | None:
        """Media seconds of an RTP timestamp of a started track (card pins)."""
        track = self.tracks[index]
        if not track.started:
            return None
        ext = track.clock.unwrapper.nearest(rtp_ts)
        return (track.pts0 + ext - track.ext0) / track.clock_rate

    def media_time_at(self, now: float) -> float | None:
        """Media seconds of node-clock instant `now` (commerce events)."""
        if self.origin is None:
            return None
        return now + self.offset - self.origin

    # --- internals -------------------------------------------------------------------------

    def _frames(self, track: Track, frames: list[Frame], now: float) -> None:
        for frame in frames:
            ext = track.clock.unwrap(frame.timestamp)
            track.clock.on_frame(ext, frame.arrival)
            if track.first_frame_at is None:
                track.first_frame_at = now
            if track.started:
                self._emit(track, ext, frame)
            else:
                track.pending.append((ext, frame))
                if len(track.pending) > MAX_PENDING:
                    self._trim_pending(track)

    def _trim_pending(self, track: Track) -> None:
        drop = len(track.pending) - MAX_PENDING
        if track.video:
            # Keep a decodable start: cut at the first key frame after the overflow.
            keys = [i for i, (_, f) in enumerate(track.pending) if f.keyframe and i >= drop]
            drop = keys[0] if keys else len(track.pending)
        track.stats.frames_dropped += drop
        del track.pending[:drop]

    def _offset_estimate(self) -> float:
        offsets = [o for t in self.tracks if (o := t.clock.sender_offset()) is not None]
        return sum(offsets) / len(offsets) if offsets else 0.0

    def _time(self, track: Track, ext: int) -> float:
        """Sender-clock seconds of a track's extended timestamp (SR, else arrival + offset)."""
        t = track.clock.sender_time(ext)
        if t is not None:
            return t
        arrival = track.clock.arrival_time(ext)
        assert arrival is not None
        return arrival + self._offset_estimate()

    def _ready(self, track: Track, now: float) -> bool:
        if track.clock.sr is not None:
            return True
        return track.first_frame_at is not None and now - track.first_frame_at >= self.gate_timeout

    def _open_first(self, now: float, *, force: bool = False) -> None:
        live = [t for t in self.tracks if not t.removed or t.pending]
        with_frames = [t for t in live if t.pending]
        if not with_frames:
            return
        first = min(now if t.first_frame_at is None else t.first_frame_at for t in with_frames)
        timed_out = now - first >= self.gate_timeout
        everyone = len(with_frames) == len(live) and all(t.clock.sr for t in with_frames)
        if not (force or timed_out or everyone):
            return
        starts = {t.index: self._time(t, t.pending[0][0]) for t in with_frames}
        videos = [t for t in with_frames if t.video]
        lead = min(videos or with_frames, key=lambda t: starts[t.index])
        self.origin = starts[lead.index]
        # Event times follow the origin track's own delay (audio and video pipelines differ).
        own = lead.clock.sender_offset()
        self.offset = own if own is not None else self._offset_estimate()
        self._open(with_frames)

    def _open(self, tracks: list[Track]) -> None:
        assert self.origin is not None
        part = len(self.parts)
        specs: list[StreamSpec] = []
        for track in tracks:
            ext0, first = track.pending[0]
            track.ext0 = ext0
            track.pts0 = round((self._time(track, ext0) - self.origin) * track.clock_rate)
            track.part = part
            track.stream = len(specs)
            spec = StreamSpec(
                track=track.index, track_id=track.track_id, kind=track.kind, codec=track.codec,
                clock_rate=track.clock_rate, channels=track.channels,
            )
            if track.codec == VP8 and first.size is not None:
                spec.width, spec.height = first.size
            elif track.codec == H264:
                spec.extradata = h264_parameter_sets(first.data)
            specs.append(spec)
        self.parts.append(specs)
        self._out.append(OpenPart(part, specs))
        for track in tracks:
            pending, track.pending = track.pending, []
            for ext, frame in pending:
                self._emit(track, ext, frame)

    def _emit(self, track: Track, ext: int, frame: Frame) -> None:
        pts = track.pts0 + ext - track.ext0
        stats = track.stats
        if pts < 0 or (stats.last_pts is not None and pts <= stats.last_pts):
            # Before media time 0 (audio ahead of the first key frame) or out of order.
            stats.frames_dropped += 1
            return
        if track.video and stats.first_pts is None and not frame.keyframe:
            stats.frames_dropped += 1
            return
        duration = opus_samples(frame.data, track.clock_rate) if track.codec == OPUS else 0
        if stats.first_pts is None:
            stats.first_pts = pts
        stats.last_pts = pts
        stats.frames_written += 1
        assert track.part is not None
        self._out.append(MuxPacket(
            part=track.part, stream=track.stream, data=frame.data, pts=pts,
            duration=duration, keyframe=frame.keyframe, track=track.index,
        ))
