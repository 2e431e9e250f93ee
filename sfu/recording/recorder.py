"""The node's recorders: the asyncio shell around `RecordingCore` and `MuxWorker`.

A recording subscribes to its room's tracks like a viewer, but in-process: each track gets a
Slot whose DownTrack's `sink` is a `TrackSink` (``local = True``), and the forward loop in
``Peer.on_srtp`` hands it the rewritten packet instead of protecting and sending it. The sink
only parses the header and feeds the core (no await, no allocation beyond the core's own);
`RecorderManager.tick` (every `PUMP_INTERVAL`) moves the core's output onto the mux worker's
bounded queue, re-syncs tracks, asks for key frames, watches free disk space and applies the
retention policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import secrets
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sfu.core.downtrack import DownTrack
from sfu.core.receiver import Receiver
from sfu.core.room import Room, Slot
from sfu.recording.depacketize import supported
from sfu.recording.mux import MuxWorker, TextFile
from sfu.recording.retention import expired
from sfu.recording.session import MuxPacket, OpenPart, RecordingCore
from sfu.recording.storage import LocalStore, RecordingMeta, RecordingStore
from sfu.recording.timeline import TIMELINE_TYPES, TimelineEvent, event_line, webvtt
from sfu.wire.rtcp import RtcpPacket, SenderReport
from sfu.wire.rtp import RtpError, parse_header

if TYPE_CHECKING:
    from sfu.node import Node

log = logging.getLogger("sfu.recording")

PUMP_INTERVAL = 0.1  # seconds between moves of frames to the writer thread
DISK_CHECK_INTERVAL = 1.0
RETENTION_INTERVAL = 3600.0
AUTO_STOP_IDLE = 5.0  # an auto recording ends when its room had no track for this long


class RecordingError(Exception):
    """An operator request that cannot be done; ``status`` is the HTTP status."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class TrackSink:
    """The in-process subscriber of one recorded track (a DownTrack's `sink`)."""

    local = True
    _tx = None  # the forward loop's network path checks these first
    addr = None

    def __init__(self, core: RecordingCore, index: int) -> None:
        self.core = core
        self.index = index
        self.packets = 0

    def write(self, packet: bytes, now: float) -> None:
        try:
            hdr = parse_header(packet)
        except RtpError:
            return
        self.packets += 1
        self.core.on_packet(
            self.index, hdr.seq, hdr.timestamp, hdr.marker,
            packet[hdr.payload_start:hdr.payload_end], now,
        )

    def send_rtcp(self, packets: list[RtcpPacket]) -> None:
        """Sender reports the node forwards, already in this down-track's RTP timeline."""
        for p in packets:
            if isinstance(p, SenderReport):
                self.core.on_sender_report(self.index, p.ntp_timestamp, p.rtp_timestamp)


class Recording:
    """One recording of one room in progress."""

    def __init__(
        self, manager: RecorderManager, room: str, *, auto: bool, queue_size: int | None
    ) -> None:
        self.manager = manager
        self.node = manager.node
        self.id = time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(4)
        self.room_name = room
        self.meta = RecordingMeta(id=self.id, room=room, auto=auto, started_at=time.time())
        self.dir = manager.store.workdir(self.id)
        self.core = RecordingCore()
        kwargs: dict[str, Any] = {} if queue_size is None else {"queue_size": queue_size}
        self.worker = MuxWorker(self._part_path, on_error=self._worker_failed, **kwargs)
        self.slots: dict[str, tuple[int, Slot, Room]] = {}  # track id -> (core index, ...)
        self.track_info: dict[int, dict[str, Any]] = {}
        self.events: list[TimelineEvent] = []
        self._pending_events: list[tuple[float, str, float, dict[str, Any], int | None]] = []
        self.skip_to_key: set[int] = set()
        self.last_track_at = self.node.now()
        self.stopping = False
        self.timeline_path = self.dir / f"{self.id}.timeline.jsonl"
        self.vtt_path = self.dir / f"{self.id}.cards.vtt"
        self.worker.submit(TextFile(self.timeline_path, ""))

    def _part_path(self, part: int, ext: str) -> Path:
        suffix = "" if part == 0 else f".part{part}"
        return self.dir / f"{self.id}{suffix}.{ext}"

    def _worker_failed(self, error: str) -> None:
        # On the writer thread: hand over to the loop.
        loop = self.manager.loop
        if loop is not None:
            loop.call_soon_threadsafe(self.manager.fail, self, "write_error", error)

    # --- tracks ------------------------------------------------------------------------------

    def sync_tracks(self, now: float) -> None:
        room = self.node.rooms.get(self.room_name)
        for track_id, (index, slot, slot_room) in list(self.slots.items()):
            gone = (
                room is not slot_room
                or track_id not in slot_room.receivers
                or slot.downtrack.receiver is None
            )
            if gone:
                self._unsubscribe(track_id, index, slot, slot_room, now)
        if room is None:
            return
        if room.receivers:
            self.last_track_at = now
        for track_id, receiver in room.receivers.items():
            if track_id not in self.slots and supported(receiver.info.codec.name):
                self._subscribe(room, receiver, now)

    def _subscribe(self, room: Room, receiver: Receiver, now: float) -> None:
        info = receiver.info
        codec = info.codec
        index = self.core.add_track(
            info.track_id, info.kind, codec.name, codec.clock_rate, channels=2
        )
        dt = DownTrack(
            ssrc=self.node.new_ssrc(), kind=info.kind, mid=f"rec{index}",
            clock_rate=codec.clock_rate, seq_start=random.randrange(1 << 16),
            ts_start=random.randrange(1 << 32),
        )
        dt.sink = TrackSink(self.core, index)
        dt.resume()
        slot = Slot(
            downtrack=dt, subscriber=f"recorder:{self.id}", codecs=[codec],
            extmaps=list(info.extmaps), wants=info.track_id,
        )
        self.slots[info.track_id] = (index, slot, room)
        self.track_info[index] = {
            "track_id": info.track_id, "kind": info.kind, "codec": codec.name,
            "participant": info.participant, "stream_id": info.stream_id,
        }
        if room.add_slot(slot, now):
            self.node.reselect(dt, now)
            if dt.current is not None:
                self.node.request_keyframe(dt.current, now)
        log.info("recording track", extra={"recording": self.id, "room": self.room_name,
                                           "track": info.track_id, "kind": info.kind})

    def _unsubscribe(self, track_id: str, index: int, slot: Slot, room: Room, now: float) -> None:
        room.remove_slot(slot)
        self.node._ssrcs.discard(slot.downtrack.ssrc)
        del self.slots[track_id]
        self.core.remove_track(index, now)
        if room.empty and self.node.rooms.get(room.name) is room and not self.node.room_listeners.get(
            room.name
        ):
            self.node.rooms.pop(room.name, None)

    def release_tracks(self, now: float) -> None:
        for track_id, (index, slot, room) in list(self.slots.items()):
            self._unsubscribe(track_id, index, slot, room, now)

    # --- pump --------------------------------------------------------------------------------

    def pump(self, now: float) -> None:
        self._deliver(self.core.poll(now))
        for index in self.core.take_keyframe_requests():
            self._request_keyframe(index, now)
        if self._pending_events and self.core.origin is not None:
            pending, self._pending_events = self._pending_events, []
            for at_loop, type_, wall, data, rtp_index in pending:
                self._place_event(at_loop, type_, wall, data, rtp_index)

    def _deliver(self, outputs: Sequence[OpenPart | MuxPacket]) -> None:
        m = self.manager
        for item in outputs:
            if isinstance(item, MuxPacket):
                track = self.core.tracks[item.track]
                if item.track in self.skip_to_key:
                    if not item.keyframe:
                        m.dropped["resync"] += 1
                        continue
                    self.skip_to_key.discard(item.track)
                if not self.worker.submit(item):
                    m.dropped["queue_full"] += 1
                    self.meta.dropped_frames += 1
                    if track.video:
                        # Its successors reference it: skip to the next key frame.
                        self.skip_to_key.add(item.track)
                        self.core.resync(item.track)
                    continue
                m.frames[track.kind] += 1
            else:
                if item.part == 0 and self.core.origin is not None:
                    self.meta.media_started_at = time.time() - (
                        self.node.now() - (self.core.origin - self.core.offset)
                    )
                self.worker.submit(item)

    def _request_keyframe(self, index: int, now: float) -> None:
        for _, (i, slot, _) in self.slots.items():
            dt = slot.downtrack
            if i == index and dt.current is not None:
                self.manager.keyframe_requests += 1
                self.node.request_keyframe(dt.pending or dt.current, now)

    # --- commerce timeline -------------------------------------------------------------------

    def on_commerce(self, type_: str, data: dict[str, Any], source: Any, now: float) -> None:
        wall = time.time()
        rtp_index = None
        if type_ == "product.card" and source is not None:
            entry = self.slots.get(getattr(getattr(source, "info", None), "track_id", ""))
            rtp = data.get("pinned_at_rtp")
            if entry is not None and isinstance(rtp, int):
                dt = entry[1].downtrack
                if dt.munger.has_source:
                    data = {**data, "_rtp": int(dt.munger.translate_ts(rtp))}
                    rtp_index = entry[0]
        if self.core.origin is None:
            self._pending_events.append((now, type_, wall, data, rtp_index))
        else:
            self._place_event(now, type_, wall, data, rtp_index)

    def _place_event(
        self, at_loop: float, type_: str, wall: float, data: dict[str, Any], rtp_index: int | None
    ) -> None:
        t: float | None = None
        source = "clock"
        rtp = data.pop("_rtp", None) if rtp_index is not None else None
        if rtp_index is not None and isinstance(rtp, int):
            t = self.core.media_time_of_rtp(rtp_index, rtp)
            source = "rtp"
        if t is None:
            t = self.core.media_time_at(at_loop) or 0.0
            source = "clock"
        event = TimelineEvent(t=t, type=type_, at=wall, data=data, source=source)
        self.events.append(event)
        self.meta.events += 1
        self.worker.submit(TextFile(self.timeline_path, event_line(event), append=True))

    # --- end ---------------------------------------------------------------------------------

    def duration(self) -> float:
        best = 0.0
        for track in self.core.tracks:
            s = track.stats
            if s.last_pts is not None:
                end = s.last_pts / track.clock_rate
                if track.kind == "audio":
                    end += 0.02
                best = max(best, end)
        return best

    def finish_outputs(self, now: float) -> list[OpenPart | MuxPacket]:
        self.release_tracks(now)
        outputs = self.core.finish(now)
        if self._pending_events and self.core.origin is not None:
            self.pump(now)
        return outputs

    def close_blocking(self, outputs: Sequence[OpenPart | MuxPacket]) -> None:
        """On a worker thread: write the rest, the sidecars, close the files."""
        for item in outputs:
            if isinstance(item, MuxPacket) and item.track in self.skip_to_key:
                if not item.keyframe:
                    continue
                self.skip_to_key.discard(item.track)
            self.worker.put(item, timeout=10)
        self.worker.submit(TextFile(self.vtt_path, webvtt(self.events, self.duration())))
        self.worker.close()

    def finalize_meta(self, error: str | None) -> RecordingMeta:
        meta = self.meta
        meta.ended_at = time.time()
        meta.duration = round(self.duration(), 3)
        meta.error = error or self.worker.error
        meta.state = "failed" if meta.error and not self.worker.files else "done"
        meta.tracks = []
        for track in self.core.tracks:
            info = dict(self.track_info.get(track.index, {}))
            s = track.stats
            info.update({
                "part": track.part,
                "frames": s.frames_written,
                "start": None if s.first_pts is None else round(s.first_pts / track.clock_rate, 4),
                "end": None if s.last_pts is None else round(s.last_pts / track.clock_rate, 4),
                "lost_packets": track.assembler.stats.lost,
                "skipped_frames": track.assembler.stats.dropped_frames + s.frames_dropped,
            })
            meta.tracks.append(info)
        files: list[dict[str, Any]] = []
        for path in [*self.worker.files, self.timeline_path, self.vtt_path]:
            with contextlib.suppress(OSError):
                kind = "media" if path in self.worker.files else "sidecar"
                files.append({"name": path.name, "size": path.stat().st_size, "kind": kind})
        meta.files = files
        meta.size = sum(int(f["size"]) for f in files)
        return meta


class RecorderManager:
    """Every recording of a node, the auto-record rooms, retention and metrics."""

    def __init__(self, node: Node, store: RecordingStore | None = None) -> None:
        self.node = node
        s = node.settings
        root = Path(s.recordings_dir) if s.recordings_dir else Path(s.data_dir) / "recordings"
        self.store: RecordingStore = store or LocalStore(root)
        self.active: dict[str, Recording] = {}  # room -> recording
        self.auto_rooms: set[str] = set(s.record_rooms)
        self.retention_days = s.recording_retention_days
        self.min_free_bytes = s.recording_min_free_mb * 1024 * 1024
        self.queue_size: int | None = None
        self.retention_interval = RETENTION_INTERVAL
        self.loop: asyncio.AbstractEventLoop | None = None
        self.frames: Counter[str] = Counter({"audio": 0, "video": 0})
        self.dropped: Counter[str] = Counter({"queue_full": 0, "resync": 0})
        self.errors: Counter[str] = Counter({"disk_full": 0, "write_error": 0})
        self.deleted: Counter[str] = Counter({"api": 0, "retention": 0})
        self.keyframe_requests = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping: set[asyncio.Task[Any]] = set()
        self._next_disk_check = 0.0
        self._next_retention = 0.0
        node.metrics.registry.register(_Collector(self))

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        commerce = self.node.commerce
        if commerce is not None and hasattr(commerce, "observers"):
            commerce.observers.append(self._on_commerce)
        self._task = asyncio.ensure_future(self._run())
        asyncio.ensure_future(asyncio.to_thread(self._mark_interrupted))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for room in list(self.active):
            await self.stop(room, reason="node_stopped")
        if self._stopping:
            await asyncio.gather(*self._stopping, return_exceptions=True)

    def _mark_interrupted(self) -> None:
        """Recordings left "recording" by a node that died: mark them failed."""
        for meta in self.store.list():
            if meta.state == "recording" and meta.room not in self.active:
                meta.state = "failed"
                meta.error = meta.error or "node stopped while recording"
                self.store.commit(meta)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(PUMP_INTERVAL)
            try:
                self.tick(self.node.now())
            except Exception:
                log.exception("recorder tick failed")

    def tick(self, now: float) -> None:
        names = list(self.node.rooms) if "*" in self.auto_rooms else list(self.auto_rooms)
        for name in names:
            room = self.node.rooms.get(name)
            if name not in self.active and room is not None and room.receivers:
                try:
                    self.begin(name, auto=True)
                except RecordingError as exc:
                    log.warning("auto recording not started",
                                extra={"room": name, "reason": exc.reason})
        for rec in list(self.active.values()):
            rec.sync_tracks(now)
            rec.pump(now)
            if rec.meta.auto and now - rec.last_track_at > AUTO_STOP_IDLE:
                self._spawn_stop(rec.room_name, "room_idle")
        if self.active and now >= self._next_disk_check:
            self._next_disk_check = now + DISK_CHECK_INTERVAL
            free = self.store.free_bytes()
            if free is not None and free < self.min_free_bytes:
                for rec in list(self.active.values()):
                    self.fail(rec, "disk_full", f"only {free} bytes free (minimum "
                              f"{self.min_free_bytes})")
        if self.retention_days > 0 and now >= self._next_retention:
            self._next_retention = now + self.retention_interval
            self._spawn(self.apply_retention(time.time()))

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)
        return task

    def _spawn_stop(self, room: str, reason: str, error: str | None = None) -> None:
        rec = self.active.get(room)
        if rec is not None and not rec.stopping:
            self._spawn(self.stop(room, reason=reason, error=error))

    def fail(self, rec: Recording, kind: str, error: str) -> None:
        """Stop a recording because of an error (disk full, write failure); never raises."""
        if rec.stopping or self.active.get(rec.room_name) is not rec:
            return
        self.errors[kind] += 1
        log.error("recording stopped by an error",
                  extra={"recording": rec.id, "room": rec.room_name, "reason": kind,
                         "error": error})
        self._spawn_stop(rec.room_name, kind, error=f"{kind}: {error}")

    # --- operator commands -------------------------------------------------------------------

    def begin(self, room: str, *, auto: bool = False) -> RecordingMeta:
        """Start recording `room` (it may have no tracks yet)."""
        if room in self.active:
            raise RecordingError(409, f"room {room} is already being recorded")
        free = self.store.free_bytes()
        if free is not None and free < self.min_free_bytes:
            self.errors["disk_full"] += 1
            raise RecordingError(507, f"not enough free disk space ({free} bytes)")
        rec = Recording(self, room, auto=auto, queue_size=self.queue_size)
        self.active[room] = rec
        self.store.commit(rec.meta)
        rec.sync_tracks(self.node.now())
        log.info("recording started", extra={"recording": rec.id, "room": room, "auto": auto})
        return rec.meta

    async def stop(
        self, room: str, *, reason: str = "api", error: str | None = None
    ) -> RecordingMeta:
        rec = self.active.get(room)
        if rec is None or rec.stopping:
            raise RecordingError(404, f"room {room} is not being recorded")
        rec.stopping = True
        now = self.node.now()
        outputs = rec.finish_outputs(now)
        # Delivered here, on the loop, so queue accounting stays in one place.
        tail = [o for o in outputs if isinstance(o, OpenPart)]
        rest = [o for o in outputs if isinstance(o, MuxPacket)]
        rec._deliver(tail)
        await asyncio.to_thread(rec.close_blocking, rest)
        meta = rec.finalize_meta(error)
        await asyncio.to_thread(self.store.commit, meta)
        if self.active.get(room) is rec:
            del self.active[room]
        log.info("recording stopped", extra={"recording": rec.id, "room": room, "reason": reason,
                                             "duration": meta.duration, "size": meta.size,
                                             "error": meta.error})
        return meta

    def set_auto(self, room: str, enabled: bool) -> None:
        if enabled:
            self.auto_rooms.add(room)
        else:
            self.auto_rooms.discard(room)

    def status(self, rec_id: str) -> RecordingMeta | None:
        for rec in self.active.values():
            if rec.id == rec_id:
                meta = rec.meta
                meta.duration = round(rec.duration(), 3)
                meta.tracks = [
                    {**rec.track_info.get(t.index, {}), "frames": t.stats.frames_written,
                     "started": t.started}
                    for t in rec.core.tracks
                ]
                return meta
        return None

    async def get(self, rec_id: str) -> RecordingMeta | None:
        return self.status(rec_id) or await asyncio.to_thread(self.store.get, rec_id)

    async def list_room(self, room: str) -> list[RecordingMeta]:
        stored = await asyncio.to_thread(self.store.list, room)
        live = {r.id: self.status(r.id) for r in self.active.values() if r.room_name == room}
        return [live.get(m.id) or m for m in stored]

    async def delete(self, rec_id: str, *, reason: str = "api") -> bool:
        if self.status(rec_id) is not None:
            raise RecordingError(409, "recording in progress; stop it first")
        meta = await asyncio.to_thread(self.store.get, rec_id)
        removed = await asyncio.to_thread(self.store.delete, rec_id)
        if removed:
            self.deleted[reason] += 1
            log.info("recording deleted", extra={
                "recording": rec_id, "room": meta.room if meta else None, "reason": reason,
                "size": meta.size if meta else None})
        return removed

    async def apply_retention(self, now: float) -> list[str]:
        metas = await asyncio.to_thread(self.store.list)
        ids = expired(metas, now, self.retention_days)
        for rec_id in ids:
            await self.delete(rec_id, reason="retention")
        return ids

    # --- commerce ----------------------------------------------------------------------------

    def _on_commerce(self, room: str, type_: str, text: str) -> None:
        rec = self.active.get(room)
        if rec is None or type_ not in TIMELINE_TYPES:
            return
        try:
            data = json.loads(text)
            data.pop("type", None)
            data.pop("v", None)
            source = None
            if type_ == "product.card" and self.node.commerce is not None:
                state = self.node.commerce.rooms.get(room)
                source = getattr(state, "card_source", None)
            rec.on_commerce(type_, data, source, self.node.now())
        except Exception:  # an observer must never break the commerce broadcast
            log.exception("recording a commerce event failed")


class _Collector(Collector):
    def __init__(self, manager: RecorderManager) -> None:
        self.manager = manager

    def collect(self) -> Iterator[Metric]:
        m = self.manager
        active = GaugeMetricFamily("sfu_recordings_active", "Recordings in progress")
        active.add_metric([], len(m.active))
        yield active
        backlog = GaugeMetricFamily("sfu_recording_queue_backlog",
                                    "Frames waiting for the recording writer threads")
        backlog.add_metric([], sum(r.worker.backlog for r in m.active.values()))
        yield backlog
        for name, help_text, label, values in (
            ("recording_frames", "Frames handed to recording writers", "kind", m.frames),
            ("recording_dropped_frames",
             "Frames not recorded: writer queue full, or skipped to the next key frame",
             "reason", m.dropped),
            ("recording_errors", "Recordings stopped by an error", "reason", m.errors),
            ("recordings_deleted", "Recordings deleted", "reason", m.deleted),
        ):
            fam = CounterMetricFamily(f"sfu_{name}", help_text, labels=[label])
            for key, value in sorted(values.items()):
                fam.add_metric([key], value)
            yield fam
