"""The origin's side of a cascaded room: channels, one copy per edge, repair from history."""

from __future__ import annotations

from sfu.cascade.feed import RELAY_MAX_AGE, RoomFeed
from sfu.core.receiver import Receiver, TrackInfo
from sfu.core.room import Room
from sfu.sdp import Codec
from sfu.wire.cascade import MEDIA, REPAIR, parse_datagram
from sfu.wire.rtp import build_packet, parse_header

VP8 = Codec(96, "VP8", 90000, 1, {}, ["nack", "nack pli"])


def simulcast_track() -> Receiver:
    info = TrackInfo("host-0-abc", "video", "host", "s", VP8)
    primary = Receiver(info, layer=0, rid="q")
    primary.add_layer(Receiver(info, layer=1, rid="h"))
    return primary


def packet(seq: int) -> bytes:
    return build_packet(payload_type=96, seq=seq, timestamp=seq * 3000, ssrc=0xAB,
                        payload=b"\x10\x01delta")


def test_layers_get_channels_and_every_edge_one_copy() -> None:
    room = Room("shop")
    track = simulcast_track()
    room.add_receiver(track, 0.0)
    feed = RoomFeed("shop")
    edge_a: list[bytes] = []
    edge_b: list[bytes] = []
    feed.add_sink(edge_a.append)
    specs = feed.sync(room)
    feed.add_sink(edge_b.append)  # an edge joining later gets the existing channels
    assert [(la.channel, la.rid) for la in specs[0].layers] == [(0, "q"), (1, "h")]
    assert specs[0].track_id == "host-0-abc"
    high = track.layers[1]
    assert high.relay is not None
    plain = packet(5)
    high.relay(plain, parse_header(plain), False, 0.0)
    assert edge_a == edge_b and len(edge_a) == 1
    assert parse_datagram(edge_a[0]) == (MEDIA, 1, plain)
    # the same layer keeps its channel across syncs
    assert [la.channel for la in feed.sync(room)[0].layers] == [0, 1]


def test_nacked_packets_are_answered_from_the_relay_history() -> None:
    room = Room("shop")
    track = simulcast_track()
    room.add_receiver(track, 0.0)
    feed = RoomFeed("shop")
    feed.add_sink(lambda data: None)
    feed.sync(room)
    relay = track.relay
    assert relay is not None
    for seq in (10, 11, 13):
        plain = packet(seq)
        relay(plain, parse_header(plain), False, 0.1)
    repairs, missing = feed.channels[0].repair([11, 12], 0.2)
    assert missing == 1  # 12 never reached the origin either
    assert [parse_datagram(d) for d in repairs] == [(REPAIR, 0, packet(11))]
    # too old to help a live viewer: not resent
    repairs, missing = feed.channels[0].repair([11], 0.1 + RELAY_MAX_AGE + 0.01)
    assert repairs == [] and missing == 1


def test_late_recovered_packets_are_relayed_as_repairs() -> None:
    room = Room("shop")
    track = simulcast_track()
    room.add_receiver(track, 0.0)
    feed = RoomFeed("shop")
    sent: list[bytes] = []
    feed.add_sink(sent.append)
    feed.sync(room)
    assert track.relay is not None
    plain = packet(3)
    track.relay(plain, parse_header(plain), True, 0.0)
    assert parse_datagram(sent[0])[0] == REPAIR


def test_unpublished_tracks_lose_their_channels_and_hook() -> None:
    room = Room("shop")
    track = simulcast_track()
    room.add_receiver(track, 0.0)
    feed = RoomFeed("shop")
    feed.sync(room)
    room.remove_receiver(track.info.track_id, 1.0)
    assert feed.sync(room) == []
    assert feed.channels == {}
    assert all(layer.relay is None for layer in track.layers)
