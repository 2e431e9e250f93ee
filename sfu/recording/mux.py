"""Writing encoded frames into files with PyAV, on a worker thread.

No transcoding: each frame becomes an ``av.Packet`` with pts/dts in its track's RTP clock
units. VP8 and Opus go into WebM; anything with H.264 into Matroska. The event loop only
puts instructions on a bounded queue (`MuxWorker.submit` never blocks); when the disk or
the muxer cannot keep up the instruction is refused and counted, and the caller makes the
video track restart on a key frame rather than write a frame whose reference is missing.
"""

from __future__ import annotations

import logging
import queue
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from sfu.recording.session import MuxPacket, OpenPart, StreamSpec
from sfu.wire.codec import H264, OPUS, VP8

log = logging.getLogger("sfu.recording")

QUEUE_SIZE = 2000  # instructions (frames); ~20 s of 30 fps video plus audio

_AV_CODEC = {VP8: "vp8", H264: "h264", OPUS: "opus"}


def container_format(codecs: list[str]) -> tuple[str, str]:
    """(PyAV format name, file extension) for a part holding these codecs."""
    if all(c in (VP8, OPUS) for c in codecs):
        return "webm", "webm"
    return "matroska", "mkv"


def opus_head(channels: int, rate: int = 48000) -> bytes:
    """The OpusHead identification header (RFC 7845 5.1) Matroska keeps as CodecPrivate.

    Pre-skip is 0: the RTP stream carries no encoder delay, and media time must stay exact.
    """
    return b"OpusHead" + struct.pack("<BBHIhB", 1, channels, 0, rate, 0, 0)


@dataclass(slots=True)
class TextFile:
    """Write (or append to) a small text file from the worker (sidecars)."""

    path: Path
    text: str
    append: bool = False


@dataclass(slots=True)
class Close:
    pass


Instruction = OpenPart | MuxPacket | TextFile | Close


class PartWriter:
    """One output file of a recording."""

    def __init__(self, path: Path, streams: list[StreamSpec]) -> None:
        fmt, _ = container_format([s.codec for s in streams])
        self.path = path
        self.container: Any = av.open(str(path), "w", format=fmt)
        self.streams: list[Any] = []
        stream: Any
        self.time_bases: list[Fraction] = []
        for spec in streams:
            if spec.kind == "video":
                stream = self.container.add_stream(_AV_CODEC[spec.codec], rate=30)
                if spec.width and spec.height:
                    stream.width, stream.height = spec.width, spec.height
                if spec.extradata:
                    stream.codec_context.extradata = spec.extradata
            else:
                stream = self.container.add_stream(_AV_CODEC[spec.codec], rate=spec.clock_rate)
                if spec.codec == OPUS:
                    stream.codec_context.extradata = opus_head(spec.channels, spec.clock_rate)
            tb = Fraction(1, spec.clock_rate)
            stream.time_base = tb
            self.streams.append(stream)
            self.time_bases.append(tb)

    def write(self, p: MuxPacket) -> None:
        packet = av.Packet(p.data)
        packet.stream = self.streams[p.stream]
        packet.time_base = self.time_bases[p.stream]
        packet.pts = packet.dts = p.pts
        if p.duration:
            packet.duration = p.duration
        packet.is_keyframe = p.keyframe
        self.container.mux(packet)

    def close(self) -> None:
        self.container.close()


class MuxWorker:
    """A thread that owns a recording's files; fed through a bounded queue."""

    def __init__(
        self,
        part_path: Callable[[int, str], Path],
        *,
        queue_size: int = QUEUE_SIZE,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self._part_path = part_path
        self._queue: queue.Queue[Instruction] = queue.Queue(maxsize=queue_size)
        self._on_error = on_error
        self.parts: dict[int, PartWriter] = {}
        self.files: list[Path] = []
        self.dropped = 0  # instructions refused because the queue was full
        self.written = 0
        self.bytes_written = 0
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, name="recording-mux", daemon=True)
        self._thread.start()

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    def submit(self, item: Instruction) -> bool:
        """Queue without blocking; False (and counted) when full or after a write error."""
        if self.error is not None:
            self.dropped += 1
            return False
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1
            return False
        return True

    def put(self, item: Instruction, timeout: float) -> bool:
        """Queue, waiting up to `timeout` for room (the end of a recording, off the loop)."""
        if self.error is not None:
            return False
        try:
            self._queue.put(item, timeout=timeout)
        except queue.Full:
            self.dropped += 1
            return False
        return True

    def close(self) -> None:
        """Finish the files (blocks until the queue is drained: run it off the loop)."""
        self._queue.put(Close())
        self._thread.join()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if isinstance(item, Close):
                self._close_all()
                return
            if self.error is not None:
                continue
            try:
                self._handle(item)
            except (OSError, av.FFmpegError, ValueError) as exc:
                self.error = f"{type(exc).__name__}: {exc}"
                log.error("recording write failed", extra={"error": self.error})
                self._close_all()
                if self._on_error is not None:
                    self._on_error(self.error)

    def _handle(self, item: Instruction) -> None:
        if isinstance(item, MuxPacket):
            writer = self.parts.get(item.part)
            if writer is not None:
                writer.write(item)
                self.written += 1
                self.bytes_written += len(item.data)
        elif isinstance(item, OpenPart):
            _, ext = container_format([s.codec for s in item.streams])
            path = self._part_path(item.part, ext)
            self.parts[item.part] = PartWriter(path, item.streams)
            self.files.append(path)
        elif isinstance(item, TextFile):
            with item.path.open("a" if item.append else "w", encoding="utf-8") as fh:
                fh.write(item.text)

    def _close_all(self) -> None:
        parts, self.parts = self.parts, {}
        for writer in parts.values():
            try:
                writer.close()
            except (OSError, av.FFmpegError) as exc:
                log.error("closing a recording file failed",
                          extra={"file": str(writer.path), "error": str(exc)})
