"""The edge's remote publisher: relayed tracks as local Receivers, asking the origin once for
what the relay leg lost and throttling keyframe requests per layer, on a virtual clock.

A real (unstarted) Node stands around it: its Room, metrics and keyframe policy.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from sfu.cascade.remote import MIN_REPAIR_RTT, RemotePublisher
from sfu.config import Settings
from sfu.node import Node
from sfu.wire.cascade import MEDIA, REPAIR, LayerSpec, TrackSpec
from sfu.wire.rtp import build_packet

SSRC = 0x5EED
KEY = b"\x10\x00" + b"\x10\x02\x00\x9d\x01\x2a" + b"\x40\x01\xf0\x00" + b"k"  # VP8 key frame
DELTA = b"\x10\x01delta"


def spec(layers: int = 1) -> TrackSpec:
    return TrackSpec(
        track_id="host-0-abc", kind="video", participant="host", stream_id="s",
        codec={"payload_type": 96, "name": "VP8", "clock_rate": 90000, "channels": 1,
               "fmtp": {}, "rtcp_fb": ["nack", "nack pli"]},
        extmaps=[], layers=[LayerSpec(10 + i, i, None if layers == 1 else "qhf"[i])
                            for i in range(layers)],
    )


def packet(seq: int, payload: bytes = DELTA, ssrc: int = SSRC) -> bytes:
    return build_packet(payload_type=96, seq=seq, timestamp=seq * 3000, ssrc=ssrc,
                        payload=payload)


@pytest.fixture
def edge(node_settings: Settings) -> Iterator[tuple[RemotePublisher, list[dict[str, Any]]]]:
    node = Node(node_settings)
    sent: list[dict[str, Any]] = []
    remote = RemotePublisher(node, "shop", sent.append)
    remote.on_tracks([spec()], 0.0)
    yield remote, sent


def nacks(sent: list[dict[str, Any]]) -> list[int]:
    return [s for m in sent if m["t"] == "nack" for s in m["seqs"]]


def test_tracks_appear_in_the_local_room_and_leave_on_close(
        edge: tuple[RemotePublisher, list[dict[str, Any]]]) -> None:
    remote, _ = edge
    node = remote.node
    room = node.rooms["shop"]
    assert list(room.receivers) == ["host-0-abc"]
    assert room.participants == {"host": "publisher"}
    remote.on_tracks([spec(layers=3)], 1.0)  # republished with simulcast: replaced
    assert [la.rid for la in room.receivers["host-0-abc"].layers] == ["q", "h", "f"]
    remote.close(2.0)
    assert "shop" not in node.rooms


def test_a_relay_gap_is_asked_for_once_however_many_viewers_miss_it(
        edge: tuple[RemotePublisher, list[dict[str, Any]]]) -> None:
    remote, sent = edge
    for seq in (1, 2, 4):
        remote.on_media(MEDIA, 10, packet(seq), 0.0)
    assert remote.timer_at == 0.0
    remote.handle_timer(0.0)
    assert nacks(sent) == [3]
    # Viewers NACK the same packet: the layer's aggregator leaves it to the generator.
    layer = remote.channels[10]
    assert layer.upstream_nacks is not None
    for _ in range(5):
        assert layer.upstream_nacks.request([3], 0.01) == []
    remote.handle_timer(0.05)  # less than an RTT: the answer may still be on its way
    assert nacks(sent) == [3]
    remote.on_media(REPAIR, 10, packet(3), 0.06)
    assert remote.node.metrics.cascade["repaired"] == 1
    remote.handle_timer(0.5)
    assert nacks(sent) == [3]
    # A second copy of a packet the edge has is dropped, not forwarded twice.
    remote.on_media(REPAIR, 10, packet(3), 0.07)
    assert remote.node.metrics.cascade["repair_unneeded"] == 1
    assert layer.stats.packets == 4


def test_an_unanswered_nack_is_repeated_once_per_rtt(
        edge: tuple[RemotePublisher, list[dict[str, Any]]]) -> None:
    remote, sent = edge
    remote.set_rtt(0.2)
    remote.on_media(MEDIA, 10, packet(1), 0.0)
    remote.on_media(MEDIA, 10, packet(3), 0.0)
    remote.handle_timer(0.0)
    remote.handle_timer(0.1)
    assert nacks(sent) == [2]
    assert remote.timer_at == pytest.approx(0.2)
    remote.handle_timer(0.2)
    assert nacks(sent) == [2, 2]


def test_keyframe_requests_go_upstream_once_per_layer_per_interval(
        edge: tuple[RemotePublisher, list[dict[str, Any]]]) -> None:
    remote, sent = edge
    node = remote.node
    remote.on_tracks([spec(layers=2)], 0.0)
    low, high = remote.channels[10], remote.channels[11]
    remote.on_media(MEDIA, 10, packet(1, ssrc=1), 0.0)
    remote.on_media(MEDIA, 11, packet(1, ssrc=2), 0.0)
    for i in range(5):  # five viewers lose their picture within 0.4 s
        node.request_keyframe(low, 0.1 * i)
    node.request_keyframe(high, 0.2)
    keyframes = [m["ch"] for m in sent if m["t"] == "keyframe"]
    assert keyframes == [10, 11]
    node.tick(0.5)  # the throttle window ends: the coalesced request leaves
    keyframes = [m["ch"] for m in sent if m["t"] == "keyframe"]
    assert keyframes == [10, 11, 10]
    # A key frame arriving answers pending asks: nothing more goes upstream.
    node.request_keyframe(low, 0.6)
    remote.on_media(MEDIA, 10, packet(2, KEY, ssrc=1), 0.7)
    node.tick(1.1)
    assert [m["ch"] for m in sent if m["t"] == "keyframe"] == [10, 11, 10]


def test_a_keyframe_asked_for_before_the_layer_ssrc_is_known_leaves_once_it_is(
        edge: tuple[RemotePublisher, list[dict[str, Any]]]) -> None:
    remote, sent = edge
    node = remote.node
    layer = remote.channels[10]
    node.request_keyframe(layer, 0.0)  # a viewer joins before the first relayed packet
    assert [m for m in sent if m["t"] == "keyframe"] == []
    assert node.metrics.keyframe_requests["unaddressed"] == 1
    node.tick(0.05)  # still no SSRC: still waiting, no throttle window started
    assert [m for m in sent if m["t"] == "keyframe"] == []
    remote.on_media(MEDIA, 10, packet(1), 0.1)  # a delta frame: the SSRC is known now
    node.tick(0.2)
    assert [m["ch"] for m in sent if m["t"] == "keyframe"] == [10]
    node.tick(0.3)  # asked once
    assert [m["ch"] for m in sent if m["t"] == "keyframe"] == [10]


def test_a_keyframe_asked_for_early_is_not_asked_again_when_one_arrives_first(
        edge: tuple[RemotePublisher, list[dict[str, Any]]]) -> None:
    remote, sent = edge
    node = remote.node
    node.request_keyframe(remote.channels[10], 0.0)
    remote.on_media(MEDIA, 10, packet(1, KEY), 0.1)
    node.tick(0.2)
    assert [m for m in sent if m["t"] == "keyframe"] == []


def test_bad_relayed_packets_are_counted_drops(
        edge: tuple[RemotePublisher, list[dict[str, Any]]]) -> None:
    remote, _ = edge
    drops = remote.node.metrics.drops
    remote.on_media(MEDIA, 99, packet(1), 0.0)
    remote.on_media(MEDIA, 10, b"\x00" * 12, 0.0)  # RTP version 0
    assert drops["cascade_unknown_channel"] == 1
    assert drops["cascade_datagram_malformed"] == 1
    assert remote.channels[10].stats.packets == 0


def test_a_loopback_rtt_does_not_make_nacks_repeat_every_millisecond(
        edge: tuple[RemotePublisher, list[dict[str, Any]]]) -> None:
    remote, sent = edge
    remote.set_rtt(0.0004)  # two nodes in one rack
    remote.on_media(MEDIA, 10, packet(1), 0.0)
    remote.on_media(MEDIA, 10, packet(3), 0.0)
    remote.handle_timer(0.0)
    remote.handle_timer(MIN_REPAIR_RTT - 0.001)
    assert nacks(sent) == [2]
    remote.handle_timer(MIN_REPAIR_RTT)
    assert nacks(sent) == [2, 2]


def test_what_the_node_would_send_a_publisher_goes_to_the_origin(
        edge: tuple[RemotePublisher, list[dict[str, Any]]]) -> None:
    from sfu.wire import rtcp

    remote, sent = edge
    remote.on_media(MEDIA, 10, packet(1), 0.0)
    remote.send_rtcp([rtcp.Nack(remote.rtcp_ssrc, SSRC, [5, 6]),
                      rtcp.Pli(sender_ssrc=remote.rtcp_ssrc, media_ssrc=SSRC),
                      rtcp.Pli(sender_ssrc=remote.rtcp_ssrc, media_ssrc=0xDEAD)])  # unknown
    assert sent == [{"t": "nack", "ch": 10, "seqs": [5, 6]}, {"t": "keyframe", "ch": 10}]
    remote.close(1.0)
    remote.send_rtcp([rtcp.Pli(sender_ssrc=remote.rtcp_ssrc, media_ssrc=SSRC)])
    assert len(sent) == 2  # nothing after the link closed


def test_a_track_relayed_back_to_its_own_origin_is_ignored(node_settings: Settings) -> None:
    from sfu.core.receiver import Receiver, TrackInfo
    from sfu.sdp import Codec

    node = Node(node_settings)
    local = Receiver(TrackInfo("host-0-abc", "video", "host", "s", Codec(96, "VP8", 90000)))
    node.room("shop").add_receiver(local, 0.0)
    remote = RemotePublisher(node, "shop", lambda m: None)
    remote.on_tracks([spec()], 0.0)
    assert node.rooms["shop"].receivers["host-0-abc"] is local
    assert node.metrics.cascade["track_conflict"] == 1
    remote.close(1.0)
    assert node.rooms["shop"].receivers["host-0-abc"] is local
