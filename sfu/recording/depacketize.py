"""RTP payloads back into encoded frames, without decoding: VP8 (RFC 7741), H.264 (RFC 6184:
single NAL unit, STAP-A, FU-A) and Opus (RFC 7587, one packet is one frame).

`FrameAssembler` is the sans-I/O core a recorder feeds packets into (with `now`): a short
reorder buffer lets a late or retransmitted packet fill its gap; a gap that does not fill in
time is loss. A frame with a missing packet is never returned, and after a loss a video track
returns nothing until the next complete key frame (`take_keyframe_request` tells the caller
to ask the publisher for one). Nothing here imports asyncio, socket or time.
"""

from __future__ import annotations

from dataclasses import dataclass

from sfu.wire.codec import H264, OPUS, VP8, vp8_descriptor_size

START_CODE = b"\x00\x00\x00\x01"
NAL_IDR = 5
NAL_SPS = 7
NAL_PPS = 8
STAP_A = 24
FU_A = 28

REORDER_DELAY = 0.3  # seconds a gap may wait for a late (or NACK-repaired) packet
MAX_BUFFERED = 1024  # packets held behind a gap before it is declared lost regardless


class DepacketizeError(ValueError):
    """A payload (or a frame's list of payloads) that cannot form a valid frame."""


@dataclass(slots=True)
class Frame:
    """One encoded frame (video: an access unit; audio: one Opus packet)."""

    data: bytes
    timestamp: int  # RTP timestamp (32 bits) of the frame's packets
    keyframe: bool
    size: tuple[int, int] | None = None  # VP8 key frames: (width, height) from the header
    arrival: float = 0.0  # when the frame's first packet arrived


# --- VP8 -------------------------------------------------------------------------------------


def vp8_frame(payloads: list[bytes]) -> Frame:
    """Join one VP8 frame's payloads (in sequence order). Raises DepacketizeError."""
    parts: list[bytes] = []
    for i, payload in enumerate(payloads):
        size = vp8_descriptor_size(payload)
        if size < 0 or size >= len(payload):
            raise DepacketizeError("VP8 payload descriptor truncated or empty frame data")
        b0 = payload[0]
        if i == 0 and not (b0 & 0x10 and (b0 & 0x07) == 0):
            raise DepacketizeError("VP8 frame does not begin at partition 0 (lost head)")
        parts.append(payload[size:])
    if not parts:
        raise DepacketizeError("no packets")
    data = b"".join(parts)
    key = not data[0] & 0x01
    frame_size = None
    if key:
        if len(data) < 10 or data[3:6] != b"\x9d\x01\x2a":
            raise DepacketizeError("VP8 key frame without a valid start code")
        frame_size = (
            (data[6] | (data[7] << 8)) & 0x3FFF,
            (data[8] | (data[9] << 8)) & 0x3FFF,
        )
    return Frame(data, 0, key, frame_size)


# --- H.264 -----------------------------------------------------------------------------------


def h264_nal_units(payloads: list[bytes]) -> list[bytes]:
    """The NAL units of one access unit's payloads (in order). Raises DepacketizeError."""
    nals: list[bytes] = []
    fragment: bytearray | None = None
    for payload in payloads:
        if not payload:
            raise DepacketizeError("empty H.264 payload")
        nal_type = payload[0] & 0x1F
        if fragment is not None and nal_type != FU_A:
            raise DepacketizeError("FU-A fragment interrupted")
        if 1 <= nal_type <= 23:
            nals.append(bytes(payload))
        elif nal_type == STAP_A:
            pos, n = 1, len(payload)
            while pos < n:
                if pos + 2 > n:
                    raise DepacketizeError("STAP-A size field truncated")
                size = (payload[pos] << 8) | payload[pos + 1]
                pos += 2
                if size == 0 or pos + size > n:
                    raise DepacketizeError("STAP-A aggregation unit truncated")
                nals.append(bytes(payload[pos : pos + size]))
                pos += size
        elif nal_type == FU_A:
            if len(payload) < 3:
                raise DepacketizeError("FU-A too short")
            fu = payload[1]
            start, end = bool(fu & 0x80), bool(fu & 0x40)
            if start:
                if fragment is not None:
                    raise DepacketizeError("FU-A start inside a fragment")
                fragment = bytearray([(payload[0] & 0xE0) | (fu & 0x1F)])
            elif fragment is None:
                raise DepacketizeError("FU-A continuation without its start (lost head)")
            fragment += payload[2:]
            if end:
                nals.append(bytes(fragment))
                fragment = None
        else:
            raise DepacketizeError(f"unsupported H.264 NAL unit type {nal_type}")
    if fragment is not None:
        raise DepacketizeError("FU-A fragment without its end (lost tail)")
    if not nals:
        raise DepacketizeError("no NAL units")
    return nals


def h264_frame(payloads: list[bytes]) -> Frame:
    """One access unit as Annex B (start codes), which Matroska and MP4 muxers accept."""
    nals = h264_nal_units(payloads)
    key = any(nal[0] & 0x1F == NAL_IDR for nal in nals)
    return Frame(b"".join(START_CODE + nal for nal in nals), 0, key)


def h264_parameter_sets(frame: bytes) -> bytes:
    """The SPS and PPS NAL units of an Annex B access unit, as Annex B (muxer extradata)."""
    out = [
        START_CODE + nal
        for nal in frame.split(START_CODE)
        if nal and nal[0] & 0x1F in (NAL_SPS, NAL_PPS)
    ]
    return b"".join(out)


# --- Opus ------------------------------------------------------------------------------------

_SILK_MS = (10.0, 20.0, 40.0, 60.0)
_HYBRID_MS = (10.0, 20.0)
_CELT_MS = (2.5, 5.0, 10.0, 20.0)


def opus_samples(packet: bytes, rate: int = 48000) -> int:
    """Samples (at `rate`) one Opus packet carries, from its TOC byte (RFC 6716 3.1)."""
    if not packet:
        return 0
    toc = packet[0]
    config = toc >> 3
    if config < 12:
        ms = _SILK_MS[config & 3]
    elif config < 16:
        ms = _HYBRID_MS[config & 1]
    else:
        ms = _CELT_MS[config & 3]
    code = toc & 3
    if code == 0:
        frames = 1
    elif code in (1, 2):
        frames = 2
    else:
        frames = packet[1] & 0x3F if len(packet) > 1 else 0
    return int(ms * frames * rate / 1000)


def opus_frame(payloads: list[bytes]) -> Frame:
    if len(payloads) != 1 or not payloads[0]:
        raise DepacketizeError("an Opus frame is exactly one non-empty packet")
    return Frame(bytes(payloads[0]), 0, True)


_FRAMERS = {VP8: vp8_frame, H264: h264_frame, OPUS: opus_frame}


def supported(codec: str) -> bool:
    return codec.upper() in _FRAMERS


# --- assembly --------------------------------------------------------------------------------


@dataclass(slots=True)
class AssemblerStats:
    packets: int = 0
    duplicates: int = 0
    late: int = 0  # arrived after their gap was declared lost
    lost: int = 0  # sequence numbers given up on
    frames: int = 0  # frames returned
    dropped_frames: int = 0  # incomplete, undecodable, or waiting for a key frame
    keyframe_requests: int = 0


class FrameAssembler:
    """Packets of one RTP stream (any order) in, complete frames out (in order).

    `push` and `poll` return the frames that became complete. A frame is returned only when all
    of its packets arrived and its payloads parse; a video track that lost anything restarts
    on the next key frame and raises a key-frame request.
    """

    def __init__(
        self,
        codec: str,
        *,
        reorder_delay: float = REORDER_DELAY,
        max_buffered: int = MAX_BUFFERED,
    ) -> None:
        codec = codec.upper()
        if codec not in _FRAMERS:
            raise ValueError(f"cannot record codec {codec}")
        self.codec = codec
        self.video = codec != OPUS
        self._framer = _FRAMERS[codec]
        self.reorder_delay = reorder_delay
        self.max_buffered = max_buffered
        self.stats = AssemblerStats()
        # reorder buffer: extended seq -> (timestamp, marker, payload, arrival)
        self._buffer: dict[int, tuple[int, bool, bytes, float]] = {}
        self._next: int | None = None  # next extended seq to release
        self._highest = -1
        # the frame being collected from released packets
        self._ts: int | None = None
        self._arrival = 0.0
        self._payloads: list[bytes] = []
        self._broken = False
        self.waiting_keyframe = self.video
        self._keyframe_wanted = False

    def _extend(self, seq: int) -> int:
        if self._highest < 0:
            return seq
        high = self._highest
        ext = (high & ~0xFFFF) | seq
        if ext - high > 0x8000:
            ext -= 0x10000
        elif high - ext > 0x8000:
            ext += 0x10000
        return ext

    def push(
        self, seq: int, timestamp: int, marker: bool, payload: bytes, now: float
    ) -> list[Frame]:
        """One packet (its RTP header fields and payload) arrived at `now`."""
        self.stats.packets += 1
        ext = self._extend(seq)
        if self._next is None:
            self._next = ext
        if ext < self._next:
            self.stats.late += 1
            return []
        if ext in self._buffer:
            self.stats.duplicates += 1
            return []
        self._buffer[ext] = (timestamp, marker, payload, now)
        if ext > self._highest:
            self._highest = ext
        return self.poll(now)

    def poll(self, now: float) -> list[Frame]:
        """Release what is in order, and give up on gaps older than the reorder delay."""
        out: list[Frame] = []
        buffer = self._buffer
        while buffer:
            assert self._next is not None
            item = buffer.pop(self._next, None)
            if item is not None:
                self._next += 1
                self._packet(item[0], item[1], item[2], item[3], out)
                continue
            oldest = min(buffer)
            waited = now - buffer[oldest][3]
            if waited < self.reorder_delay and len(buffer) < self.max_buffered:
                break
            self.stats.lost += oldest - self._next
            self._next = oldest
            self._loss()
        return out

    def flush(self) -> list[Frame]:
        """End of the stream: give up on every gap and close the last frame."""
        out = self.poll(float("inf"))
        self._finish(out)
        return out

    def take_keyframe_request(self) -> bool:
        """True once after a loss made this (video) track wait for a key frame."""
        wanted, self._keyframe_wanted = self._keyframe_wanted, False
        return wanted

    def _loss(self) -> None:
        # The missing packets may be the end of the frame being collected or the start of
        # the next one: both are unusable, and so is every frame until a key frame.
        if self._payloads:
            self._broken = True
        if self.video:
            if not self.waiting_keyframe:
                self.stats.keyframe_requests += 1
                self._keyframe_wanted = True
            self.waiting_keyframe = True
        elif not self._payloads:
            self._broken = False

    def _packet(
        self, ts: int, marker: bool, payload: bytes, arrival: float, out: list[Frame]
    ) -> None:
        if self._payloads and ts != self._ts:
            self._finish(out)  # the previous frame ended without its marker bit
        if not self._payloads:
            self._ts = ts
            self._arrival = arrival
        self._payloads.append(payload)
        if marker or not self.video:
            self._finish(out)

    def _finish(self, out: list[Frame]) -> None:
        payloads, broken, ts = self._payloads, self._broken, self._ts
        self._payloads = []
        self._broken = False
        if not payloads or ts is None:
            return
        if broken:
            self.stats.dropped_frames += 1
            return
        try:
            frame = self._framer(payloads)
        except DepacketizeError:
            self.stats.dropped_frames += 1
            if self.video:
                self._loss()
            return
        if self.waiting_keyframe:
            if not frame.keyframe:
                self.stats.dropped_frames += 1
                return
            self.waiting_keyframe = False
        frame.timestamp = ts
        frame.arrival = self._arrival
        self.stats.frames += 1
        out.append(frame)
