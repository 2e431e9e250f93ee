"""Cascade wire format: the QUIC DATAGRAM header and the control-stream messages.

Media between an origin node and an edge node travels in QUIC DATAGRAM frames, one RTP
packet per frame, behind a 3-byte header:

    0               1               2
    +---------------+---------------+---------------+---- - -
    |  kind (u8)    |      channel (u16, BE)        |  RTP packet (plain, publisher's
    +---------------+---------------+---------------+---- - -   seq/ts/SSRC/extensions)

`kind` is MEDIA (a packet as the origin accepted it) or REPAIR (a late copy: an answer to
the edge's NACK, or a packet the origin itself only recovered by NACK from the publisher).
`channel` names one simulcast layer of one track; the control stream's `tracks` message
maps channels to tracks.

The control stream is the first client-initiated bidirectional QUIC stream; each message is
one JSON object on one line (UTF-8, `\\n`-terminated, at most MAX_LINE bytes) with a `t`
field naming its type. Stateless: parsing validates shape and types and raises
CascadeWireError; what a message means is for sfu.cascade to decide.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

VERSION = 1
MEDIA = 0x01
REPAIR = 0x02
KINDS = frozenset({MEDIA, REPAIR})
HEADER_SIZE = 3
MAX_CHANNEL = 0xFFFF
MAX_LINE = 256 * 1024  # a track list of a big room fits many times over
MAX_NACK_SEQS = 1024

_header = struct.Struct("!BH")

# Control message types, by direction.
EDGE_MESSAGES = frozenset({"hello", "auth", "nack", "keyframe", "ping", "bye"})
ORIGIN_MESSAGES = frozenset({"challenge", "welcome", "tracks", "sr", "pong", "error", "bye"})


class CascadeWireError(ValueError):
    """A datagram or control message that does not follow the cascade wire format."""


# --- datagrams -------------------------------------------------------------------------------


def pack_header(kind: int, channel: int) -> bytes:
    """The datagram header; prepend it to a plain RTP packet."""
    if kind not in KINDS:
        raise CascadeWireError(f"unknown datagram kind {kind}")
    if not 0 <= channel <= MAX_CHANNEL:
        raise CascadeWireError(f"channel {channel} out of range")
    return _header.pack(kind, channel)


def parse_datagram(data: bytes) -> tuple[int, int, bytes]:
    """(kind, channel, RTP packet) of one cascade datagram."""
    if len(data) < HEADER_SIZE + 12:
        raise CascadeWireError(f"datagram of {len(data)} bytes is shorter than header + RTP")
    kind, channel = _header.unpack_from(data, 0)
    if kind not in KINDS:
        raise CascadeWireError(f"unknown datagram kind {kind}")
    return kind, channel, data[HEADER_SIZE:]


# --- control messages ------------------------------------------------------------------------


def encode(message: dict[str, Any]) -> bytes:
    """One control message as a line."""
    line = json.dumps(message, separators=(",", ":")).encode() + b"\n"
    if len(line) > MAX_LINE:
        raise CascadeWireError(f"control message of {len(line)} bytes exceeds {MAX_LINE}")
    return line


class LineReader:
    """Splits control-stream bytes into messages; keeps at most MAX_LINE pending bytes."""

    def __init__(self, accept: frozenset[str]) -> None:
        self.accept = accept
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any] | CascadeWireError]:
        """The messages completed by `data`, in order; a bad line becomes its error."""
        self._buf += data
        out: list[dict[str, Any] | CascadeWireError] = []
        while True:
            end = self._buf.find(b"\n")
            if end < 0:
                if len(self._buf) > MAX_LINE:
                    self._buf.clear()
                    out.append(CascadeWireError(f"control line longer than {MAX_LINE} bytes"))
                return out
            line = bytes(self._buf[:end])
            del self._buf[: end + 1]
            try:
                out.append(decode(line, self.accept))
            except CascadeWireError as exc:
                out.append(exc)


def decode(line: bytes, accept: frozenset[str]) -> dict[str, Any]:
    """Parse and validate one control line whose type must be in `accept`."""
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CascadeWireError(f"control line is not JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise CascadeWireError("control message is not a JSON object")
    kind = message.get("t")
    if not isinstance(kind, str) or kind not in accept:
        raise CascadeWireError(f"unexpected control message type {kind!r}")
    _CHECKS[kind](message)
    return message


def _need(message: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = message.get(name)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise CascadeWireError(f"{message.get('t')}: field {name!r} missing or not {kind}")
    return value


def _hex(message: dict[str, Any], name: str, size: int) -> None:
    value = _need(message, name, str)
    try:
        raw = bytes.fromhex(value)
    except ValueError as exc:
        raise CascadeWireError(f"{message['t']}: {name} is not hex") from exc
    if len(raw) != size:
        raise CascadeWireError(f"{message['t']}: {name} must be {size} bytes")


def _channel(message: dict[str, Any]) -> None:
    ch = _need(message, "ch", int)
    if not 0 <= ch <= MAX_CHANNEL:
        raise CascadeWireError(f"{message['t']}: channel {ch} out of range")


def _check_hello(m: dict[str, Any]) -> None:
    if _need(m, "v", int) != VERSION:
        raise CascadeWireError(f"hello: version {m['v']} is not {VERSION}")
    room = _need(m, "room", str)
    if not room or len(room) > 256:
        raise CascadeWireError("hello: room name empty or too long")
    _need(m, "node", str)
    _hex(m, "nonce", NONCE_SIZE)


def _check_nonce(m: dict[str, Any]) -> None:
    _hex(m, "nonce", NONCE_SIZE)


def _check_proof(m: dict[str, Any]) -> None:
    _hex(m, "proof", PROOF_SIZE)


def _check_nack(m: dict[str, Any]) -> None:
    _channel(m)
    seqs = _need(m, "seqs", list)
    if not seqs or len(seqs) > MAX_NACK_SEQS:
        raise CascadeWireError(f"nack: 1 to {MAX_NACK_SEQS} seqs expected")
    if not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= 0xFFFF
               for s in seqs):
        raise CascadeWireError("nack: seqs must be 16-bit integers")


def _check_ping(m: dict[str, Any]) -> None:
    _need(m, "ts", (int, float))


def _check_sr(m: dict[str, Any]) -> None:
    _channel(m)
    for name in ("ntp", "rtp", "packets", "octets"):
        if not 0 <= _need(m, name, int) < (1 << 64):
            raise CascadeWireError(f"sr: {name} out of range")


def _check_error(m: dict[str, Any]) -> None:
    _need(m, "code", str)
    _need(m, "message", str)


def _check_tracks(m: dict[str, Any]) -> None:
    tracks = _need(m, "tracks", list)
    for t in tracks:
        parse_track(t)


def _check_none(m: dict[str, Any]) -> None:
    return None


NONCE_SIZE = 16
PROOF_SIZE = 32

_CHECKS = {
    "hello": _check_hello,
    "challenge": _check_nonce,
    "auth": _check_proof,
    "welcome": _check_proof,
    "nack": _check_nack,
    "keyframe": _channel,
    "ping": _check_ping,
    "pong": _check_ping,
    "sr": _check_sr,
    "error": _check_error,
    "tracks": _check_tracks,
    "bye": _check_none,
}


# --- track descriptions ----------------------------------------------------------------------


@dataclass(slots=True)
class LayerSpec:
    """One relayed simulcast layer (or the only layer) of a track."""

    channel: int
    layer: int
    rid: str | None = None


@dataclass(slots=True)
class TrackSpec:
    """A published track as the origin announces it: enough to build its Receivers."""

    track_id: str
    kind: str
    participant: str
    stream_id: str
    codec: dict[str, Any]  # payload_type, name, clock_rate, channels, fmtp, rtcp_fb
    extmaps: list[tuple[int, str]]
    layers: list[LayerSpec]
    source: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.track_id, "kind": self.kind, "participant": self.participant,
            "stream_id": self.stream_id, "codec": self.codec,
            "extmaps": [[i, uri] for i, uri in self.extmaps],
            "layers": [{"ch": la.channel, "layer": la.layer, "rid": la.rid}
                       for la in self.layers],
        }
        if self.source is not None:
            out["source"] = self.source
        return out


def parse_track(t: Any) -> TrackSpec:
    """Validate one entry of a `tracks` message."""
    if not isinstance(t, dict):
        raise CascadeWireError("tracks: entry is not an object")
    track_id = _need(t, "id", str)
    kind = _need(t, "kind", str)
    if kind not in ("audio", "video"):
        raise CascadeWireError(f"tracks: kind {kind!r}")
    codec = _need(t, "codec", dict)
    for name, typ in (("payload_type", int), ("name", str), ("clock_rate", int),
                      ("channels", int), ("fmtp", dict), ("rtcp_fb", list)):
        if not isinstance(codec.get(name), typ):
            raise CascadeWireError(f"tracks: codec.{name} missing or not {typ.__name__}")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in codec["fmtp"].items()):
        raise CascadeWireError("tracks: codec.fmtp must map strings to strings")
    if not all(isinstance(f, str) for f in codec["rtcp_fb"]):
        raise CascadeWireError("tracks: codec.rtcp_fb must be strings")
    extmaps: list[tuple[int, str]] = []
    for e in _need(t, "extmaps", list):
        if not (isinstance(e, list) and len(e) == 2 and isinstance(e[0], int)
                and isinstance(e[1], str) and 1 <= e[0] <= 255):
            raise CascadeWireError("tracks: extmaps entries are [id, uri]")
        extmaps.append((e[0], e[1]))
    layers: list[LayerSpec] = []
    for la in _need(t, "layers", list):
        if not isinstance(la, dict):
            raise CascadeWireError("tracks: layer is not an object")
        ch = la.get("ch")
        layer = la.get("layer")
        rid = la.get("rid")
        if not (isinstance(ch, int) and 0 <= ch <= MAX_CHANNEL and isinstance(layer, int)
                and (rid is None or isinstance(rid, str))):
            raise CascadeWireError("tracks: layer needs ch, layer and an optional rid")
        layers.append(LayerSpec(ch, layer, rid))
    if not layers:
        raise CascadeWireError(f"tracks: track {track_id} has no layer")
    source = t.get("source")
    if source is not None and not isinstance(source, str):
        raise CascadeWireError("tracks: source must be a string")
    return TrackSpec(
        track_id=track_id, kind=kind, participant=_need(t, "participant", str),
        stream_id=_need(t, "stream_id", str), codec=codec, extmaps=extmaps, layers=layers,
        source=source,
    )
