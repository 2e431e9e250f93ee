"""The origin's side of one cascaded room: channels, track announcements and repair.

A `RoomFeed` exists while at least one edge subscribes to the room. It numbers every layer
of every published track with a channel, describes the tracks for the `tracks` control
message, and keeps, per channel, the packets it relayed (sfu.core.history.History keyed by
the publisher's own seq, which is what edges NACK) so an edge's NACK is answered from the
origin without bothering the publisher. Each relayed packet is framed once and the same
bytes go to every edge: one copy per edge, however many viewers each edge serves.

No I/O: `Channel.on_packet` hands the framed datagram to the edges' send callables, which
the QUIC shell (sfu.cascade.origin) provides.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sfu.core.history import History
from sfu.core.receiver import Receiver
from sfu.core.room import Room
from sfu.wire.cascade import MAX_CHANNEL, MEDIA, REPAIR, LayerSpec, TrackSpec, pack_header
from sfu.wire.rtp import RtpHeader

RELAY_HISTORY = 2048  # packets kept per relayed layer (about 10 s of 1.5 Mbit/s video)
RELAY_MAX_AGE = 3.0  # seconds: an edge asks within a few of its RTTs or never

Send = Callable[[bytes], None]


class Channel:
    """One relayed layer: its number, its relay history and the edges it goes to."""

    __slots__ = ("number", "receiver", "history", "sinks", "_media", "_repair",
                 "packets", "bytes")

    def __init__(self, number: int, receiver: Receiver) -> None:
        self.number = number
        self.receiver = receiver
        self.history = History(RELAY_HISTORY, RELAY_MAX_AGE)
        self.sinks: list[Send] = []
        self._media = pack_header(MEDIA, number)
        self._repair = pack_header(REPAIR, number)
        self.packets = 0  # datagrams handed to sinks (one per edge)
        self.bytes = 0

    def on_packet(self, plain: bytes, hdr: RtpHeader, repair: bool, now: float) -> None:
        """A packet the origin's Receiver accepted: keep it and send it to every edge."""
        self.history.push(hdr.seq, plain, now)
        data = (self._repair if repair else self._media) + plain
        for send in self.sinks:
            send(data)
        n = len(self.sinks)
        self.packets += n
        self.bytes += n * len(data)

    def repair(self, seqs: list[int], now: float) -> tuple[list[bytes], int]:
        """REPAIR datagrams for the NACKed `seqs` the history still has, and how many it
        did not (lost on the origin's own uplink and not recovered yet: when the origin's
        NACK to the publisher brings it, it is relayed to every edge anyway)."""
        out: list[bytes] = []
        for seq in seqs:
            entry = self.history.get(seq, now)
            if entry is not None:
                out.append(self._repair + entry.data)
        return out, len(seqs) - len(out)


class RoomFeed:
    """Everything the origin relays for one room, shared by the edges subscribed to it."""

    def __init__(self, room: str) -> None:
        self.room = room
        self.channels: dict[int, Channel] = {}
        self._by_layer: dict[int, Channel] = {}  # id(Receiver) -> channel
        self._next = 0
        self.sinks: list[Send] = []

    def sync(self, room: Room | None) -> list[TrackSpec]:
        """Follow the room's tracks: new layers get channels (and the relay hook), gone
        ones lose them. Returns the track list to announce."""
        specs: list[TrackSpec] = []
        live: set[int] = set()
        for primary in (room.receivers.values() if room is not None else ()):
            layers: list[LayerSpec] = []
            for layer in primary.layers:
                ch = self._by_layer.get(id(layer))
                if ch is None:
                    ch = self._open(layer)
                live.add(id(layer))
                layers.append(LayerSpec(ch.number, layer.layer, layer.rid))
            specs.append(describe(primary, layers))
        for key in [k for k in self._by_layer if k not in live]:
            self._close(self._by_layer.pop(key))
        return specs

    def add_sink(self, send: Send) -> None:
        self.sinks.append(send)
        for ch in self.channels.values():
            ch.sinks = list(self.sinks)

    def remove_sink(self, send: Send) -> None:
        if send in self.sinks:
            self.sinks.remove(send)
        for ch in self.channels.values():
            ch.sinks = list(self.sinks)

    def close(self) -> None:
        for ch in list(self.channels.values()):
            self._close(ch)
        self._by_layer.clear()
        self.sinks.clear()

    def _open(self, layer: Receiver) -> Channel:
        number = self._next
        while number in self.channels:
            number = (number + 1) & MAX_CHANNEL
        self._next = (number + 1) & MAX_CHANNEL
        ch = self.channels[number] = self._by_layer[id(layer)] = Channel(number, layer)
        ch.sinks = list(self.sinks)
        layer.relay = ch.on_packet
        return ch

    def _close(self, ch: Channel) -> None:
        self.channels.pop(ch.number, None)
        if ch.receiver.relay == ch.on_packet:
            ch.receiver.relay = None
        ch.sinks = []


def describe(primary: Receiver, layers: list[LayerSpec]) -> TrackSpec:
    info = primary.info
    c = info.codec
    codec: dict[str, Any] = {
        "payload_type": c.payload_type, "name": c.name, "clock_rate": c.clock_rate,
        "channels": c.channels, "fmtp": dict(c.fmtp), "rtcp_fb": list(c.rtcp_fb),
    }
    return TrackSpec(
        track_id=info.track_id, kind=info.kind, participant=info.participant,
        stream_id=info.stream_id, codec=codec, extmaps=[(e.id, e.uri) for e in info.extmaps],
        layers=layers, source=info.source,
    )
