"""Cascade end to end in one process: two real Nodes on loopback (own HTTP, UDP and QUIC
ports), an aiortc WHIP host on the origin A, the edge B subscribed to the room over QUIC,
and an aiortc WHEP viewer on B that decodes. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from bench.clients.media import SyntheticVideoTrack, ToneAudioTrack
from bench.clients.whip import WhipSession, whep_play, whip_publish
from bench.ports import free_udp_port
from sfu.config import Settings
from sfu.node import Node
from sfu.wire.cascade import MEDIA

ROOM = "shop"
FRAME_TIMEOUT = 25.0
LINK_TIMEOUT = 10.0
VIDEO_FRAMES = 30
AUDIO_FRAMES = 25

Mint = Callable[..., str]


async def until(predicate: Callable[[], bool], limit: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not predicate():
        assert loop.time() < deadline, f"{what} not reached within {limit}s"
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Node]:
    node = Node(settings)
    await asyncio.wait_for(node.start(), 15)
    try:
        yield node
    finally:
        await asyncio.wait_for(node.stop(), 15)


def settings_for(base: Settings, name: str, **changes: Any) -> Settings:
    data_dir = base.data_dir.parent / name
    data_dir.mkdir(exist_ok=True)
    return dataclasses.replace(base, data_dir=data_dir, cascade_port=free_udp_port(), **changes)


async def publish(node: Node, mint: Mint) -> WhipSession:
    return await whip_publish(node.http_url, ROOM, mint(ROOM, "host", ["publish"]),
                              [SyntheticVideoTrack(width=320, height=240, fps=30),
                               ToneAudioTrack(freq=440)])


def tracks(node: Node) -> int:
    room = node.rooms.get(ROOM)
    return len(room.receivers) if room is not None else 0


@pytest.fixture
async def origin(node_settings: Settings) -> AsyncIterator[Node]:
    async with running(settings_for(node_settings, "origin")) as node:
        yield node


@pytest.fixture
async def edge(node_settings: Settings) -> AsyncIterator[Node]:
    async with running(settings_for(node_settings, "edge")) as node:
        yield node


def cascade_of(node: Node) -> Any:
    assert node.cascade is not None
    return node.cascade


async def test_edge_viewer_decodes_the_origin_host(origin: Node, edge: Node,
                                                   mint: Mint) -> None:
    host = await publish(origin, mint)
    try:
        await cascade_of(edge).subscribe(ROOM, ("127.0.0.1", origin.settings.cascade_port))
        await cascade_of(edge).subscribe(ROOM, ("127.0.0.1", origin.settings.cascade_port))
        assert await cascade_of(edge).wait_linked(ROOM, LINK_TIMEOUT)
        await until(lambda: tracks(edge) == 2, LINK_TIMEOUT, "origin tracks on the edge")
        # The edge announces the host's tracks under the origin's ids.
        assert set(edge.rooms[ROOM].receivers) == set(origin.rooms[ROOM].receivers)
        # Media flows on the link before the viewer joins: an edge Receiver learns its SSRC
        # from the first relayed packet, and a keyframe request before that has nothing to
        # name (on a loaded machine the viewer's join came first and started on the origin's
        # own link-start keyframe, so the edge never asked).
        await until(lambda: all(r.ssrc is not None for r in edge.rooms[ROOM].receivers
                                .values()), LINK_TIMEOUT, "relayed media on the edge")
        viewer = await whep_play(edge.http_url, ROOM, mint(ROOM, "viewer", ["subscribe"]))
        try:
            await viewer.wait_for_frames(video=VIDEO_FRAMES, audio=AUDIO_FRAMES,
                                         timeout=FRAME_TIMEOUT)
            assert viewer.errors == []
            assert set(viewer.video_frame_sizes) == {(320, 240)}
        finally:
            await viewer.close()
        # The host's sender reports reach the edge's Receivers (A/V sync, viewers' SRs).
        await until(lambda: all(r.last_sr is not None for r in edge.rooms[ROOM].receivers
                                .values()), LINK_TIMEOUT, "relayed sender reports")
        om, em = origin.metrics, edge.metrics
        assert len(cascade_of(origin).edges[ROOM]) == 1  # one link despite two subscribes
        assert om.cascade["packets_out"] > 0 and em.cascade["packets_in"] > 0
        # One copy per edge: the origin sent what the edge received (loopback loses none).
        assert om.cascade["packets_out"] >= em.cascade["packets_in"]
        # The edge viewer's join asked the origin for a keyframe, and the origin asked the
        # host through its own throttle.
        assert em.cascade["keyframe_sent"] >= 1
        await until(lambda: om.cascade["keyframe_received"] == em.cascade["keyframe_sent"],
                    LINK_TIMEOUT, "keyframe requests reaching the origin")
        assert om.keyframe_requests["requested"] >= om.cascade["keyframe_received"]
        text = origin.metrics.render().decode()
        assert 'sfu_cascade_links{role="origin"} 1.0' in text
        assert 'sfu_cascade_events_total{event="packets_out"}' in text
    finally:
        await host.close()
    # The host leaves the origin: the edge's viewers see the tracks go.
    await until(lambda: tracks(edge) == 0, LINK_TIMEOUT, "tracks removed on the edge")


async def test_lossy_relay_leg_is_repaired_by_upstream_nack(origin: Node, edge: Node,
                                                            mint: Mint) -> None:
    host = await publish(origin, mint)
    try:
        cascade = cascade_of(edge)
        await cascade.subscribe(ROOM, ("127.0.0.1", origin.settings.cascade_port))
        assert await cascade.wait_linked(ROOM, LINK_TIMEOUT)
        await until(lambda: tracks(edge) == 2, LINK_TIMEOUT, "origin tracks on the edge")
        dropped = 0
        seen = 0

        def drop_every_tenth_video_packet(data: bytes) -> bool:
            nonlocal dropped, seen
            remote = cascade.links[ROOM].remote
            receiver = remote.channels.get(int.from_bytes(data[1:3], "big"))
            if data[0] != MEDIA or receiver is None or not receiver.is_video:
                return False
            seen += 1
            if seen % 10 == 0:
                dropped += 1
                return True
            return False

        cascade.links[ROOM].drop_datagram = drop_every_tenth_video_packet
        viewer = await whep_play(edge.http_url, ROOM, mint(ROOM, "viewer", ["subscribe"]))
        try:
            await viewer.wait_for_frames(video=VIDEO_FRAMES * 2, audio=AUDIO_FRAMES,
                                         timeout=FRAME_TIMEOUT)
            assert viewer.errors == []
        finally:
            await viewer.close()
        await until(lambda: edge.metrics.cascade["repaired"] >= dropped - 2, LINK_TIMEOUT,
                    "repairs of the dropped packets")
    finally:
        await host.close()
    assert dropped >= 10
    om, em = origin.metrics, edge.metrics
    assert em.cascade["nack_sent"] > 0
    assert om.cascade["nack_received"] == em.cascade["nack_sent"]
    assert om.cascade["repair_sent"] >= dropped - 2
    # Each dropped packet was asked for once: the answer arrives within one RTT.
    assert em.cascade["nacked_packets"] <= dropped + 2


async def test_wrong_secret_is_refused_and_counted(node_settings: Settings, origin: Node,
                                                   mint: Mint) -> None:
    host = await publish(origin, mint)
    try:
        wrong = settings_for(node_settings, "intruder", api_secret="y" * 40)
        async with running(wrong) as intruder:
            cascade = cascade_of(intruder)
            await cascade.subscribe(ROOM, ("127.0.0.1", origin.settings.cascade_port))
            await until(lambda: origin.metrics.cascade_auth_rejections["origin"] >= 1,
                        LINK_TIMEOUT, "rejection at the origin")
            await until(lambda: "secret" in cascade.links[ROOM].last_error, LINK_TIMEOUT,
                        "the refusal reaching the edge")
            assert not cascade.links[ROOM].linked.is_set()
            assert tracks(intruder) == 0
            assert ROOM not in cascade_of(origin).edges
            assert origin.metrics.cascade["packets_out"] == 0
    finally:
        await host.close()


async def test_origin_restart_removes_and_restores_tracks(node_settings: Settings,
                                                          edge: Node, mint: Mint) -> None:
    origin_settings = settings_for(node_settings, "origin")
    cascade = cascade_of(edge)
    async with running(origin_settings) as origin:
        host = await publish(origin, mint)
        await cascade.subscribe(ROOM, ("127.0.0.1", origin_settings.cascade_port))
        await until(lambda: tracks(edge) == 2, LINK_TIMEOUT, "origin tracks on the edge")
        # A viewer that stays on the edge across the origin's restart.
        viewer = await whep_play(edge.http_url, ROOM, mint(ROOM, "viewer", ["subscribe"]))
        await viewer.wait_for_frames(video=5, timeout=FRAME_TIMEOUT)
    # The origin stopped under a live host: the link is lost, the tracks go with it.
    await host.close()
    try:
        await until(lambda: not cascade.links[ROOM].linked.is_set(), LINK_TIMEOUT,
                    "the edge noticing the origin stopped")
        assert tracks(edge) == 0
        async with running(origin_settings) as origin:
            await until(lambda: cascade.links[ROOM].linked.is_set(), LINK_TIMEOUT,
                        "the edge reconnecting")
            assert tracks(edge) == 0
            before = viewer.video_frames
            host = await publish(origin, mint)
            try:
                await until(lambda: tracks(edge) == 2, LINK_TIMEOUT, "tracks back")
                await viewer.wait_for_frames(video=before + 10, timeout=FRAME_TIMEOUT)
            finally:
                await host.close()
        assert edge.metrics.cascade["reconnects"] >= 1
    finally:
        await viewer.close()


async def test_a_silent_origin_is_dropped_at_the_idle_timeout(origin: Node, edge: Node,
                                                              mint: Mint) -> None:
    host = await publish(origin, mint)
    try:
        cascade = cascade_of(edge)
        cascade.idle_timeout = 1.0  # the link takes the smaller of both sides' timeouts
        await cascade.subscribe(ROOM, ("127.0.0.1", origin.settings.cascade_port))
        await until(lambda: tracks(edge) == 2, LINK_TIMEOUT, "origin tracks on the edge")
        # The origin's host vanishes from the network without a word (a crash, a cut cable):
        # its QUIC socket stops answering, nothing closes the link.
        server = cascade_of(origin).listener._server
        assert server is not None
        server._transport.pause_reading()
        server._transport.sendto = lambda *a, **k: None  # type: ignore[method-assign]
        await until(lambda: tracks(edge) == 0, LINK_TIMEOUT, "tracks removed at idle timeout")
        assert not cascade.links[ROOM].linked.is_set()
        # and it keeps trying (the origin's socket no longer answers, so it cannot link)
        await until(lambda: edge.metrics.cascade["reconnects"] >= 2, LINK_TIMEOUT,
                    "reconnection attempts")
        assert not cascade.links[ROOM].linked.is_set()
    finally:
        await host.close()


async def test_simulcast_layers_reach_edge_viewers_of_both_protocols(
        origin: Node, edge: Node, mint: Mint) -> None:
    import aiohttp
    from aiortc.rtcdtlstransport import RTCCertificate

    from bench.clients.room import RoomClient
    from bench.rawpeer import RawSimulcastPublisher, encode_stream, relabel_layered
    from bench.simulcast import whep_play_layer

    sizes = {"q": (160, 96), "h": (320, 192)}
    layers = [(rid, relabel_layered(encode_stream(width=w, height=h, frames=60, audio=rid == "q",
                                                  bitrate=150_000 * (i + 1))))
              for i, (rid, (w, h)) in enumerate(sizes.items())]
    host = RawSimulcastPublisher(RTCCertificate.generateCertificate(), layers, name="host")
    async with aiohttp.ClientSession() as http:
        await asyncio.wait_for(
            host.connect(http, origin.http_url, ROOM, mint(ROOM, "host", ["publish"])), 30)
        host.start(60)
        try:
            await cascade_of(edge).subscribe(ROOM, ("127.0.0.1", origin.settings.cascade_port))
            await until(lambda: tracks(edge) == 2, LINK_TIMEOUT, "origin tracks on the edge")
            video = next(t for t in edge.rooms[ROOM].tracks() if t["kind"] == "video")
            assert video["layers"] == ["q", "h"]
            low = await whep_play_layer(edge.http_url, ROOM, mint(ROOM, "v1", ["subscribe"]),
                                        "low")
            high = await whep_play_layer(edge.http_url, ROOM, mint(ROOM, "v2", ["subscribe"]),
                                         "high")
            room_viewer = await RoomClient.connect(edge.http_url,
                                                   mint(ROOM, "v3", ["subscribe"]))
            try:
                await room_viewer.wait_for_tracks(2)
                await room_viewer.subscribe_all()
                mid = next(m for m, tid in room_viewer.subscriptions.items()
                           if tid == video["track_id"])
                await room_viewer.wait_for_frames(mid, 10, timeout=FRAME_TIMEOUT)
                for player in (low, high):
                    await player.wait_for_frames(video=10, timeout=FRAME_TIMEOUT)
                assert set(low.video_frame_sizes) == {sizes["q"]}
                assert sizes["h"] in set(high.video_frame_sizes)
                # Nobody watches on the origin, yet it keeps both layers coming for the edge.
                assert all(not la.paused for la in origin.rooms[ROOM].receivers[
                    video["track_id"]].layers)
            finally:
                await room_viewer.close()
                await low.close()
                await high.close()
        finally:
            await host.close(http, mint(ROOM, "host", ["publish"]))


async def test_an_origin_that_never_authenticates_is_dropped(edge: Node) -> None:
    from aioquic.asyncio import QuicConnectionProtocol, serve

    from sfu.cascade.quic import Certificate, configuration

    # A QUIC server that speaks the ALPN but never answers the hello.
    port = free_udp_port()
    mute = await serve("127.0.0.1", port, create_protocol=QuicConnectionProtocol,
                       configuration=configuration(server=True, idle_timeout=10,
                                                   certificate=Certificate()))
    try:
        cascade = cascade_of(edge)
        cascade.auth_timeout = 0.5
        await cascade.subscribe(ROOM, ("127.0.0.1", port))
        await until(lambda: "authentication in time" in cascade.links[ROOM].last_error,
                    LINK_TIMEOUT, "the edge giving up on the handshake")
        await until(lambda: edge.metrics.cascade["reconnects"] >= 1, LINK_TIMEOUT,
                    "a new attempt")
        assert not cascade.links[ROOM].linked.is_set()
    finally:
        mute.close()


async def test_malformed_input_is_counted_not_fatal(origin: Node, edge: Node,
                                                    mint: Mint) -> None:
    from aioquic.asyncio import connect

    from sfu.cascade.quic import LinkProtocol, configuration

    host = await publish(origin, mint)
    try:
        # Before authentication: a bad line closes the connection, counted as a refusal.
        config = configuration(server=False, idle_timeout=5)
        async with connect("127.0.0.1", origin.settings.cascade_port, configuration=config,
                           create_protocol=LinkProtocol) as raw:
            raw._quic.send_stream_data(0, b"{not json\n")
            raw.transmit()
            await asyncio.wait_for(raw.wait_closed(), LINK_TIMEOUT)
        assert origin.metrics.drops["cascade_control_malformed"] == 1
        assert origin.metrics.cascade_auth_rejections["origin"] == 1

        # After authentication: garbage both ways is dropped and the link carries on.
        cascade = cascade_of(edge)
        await cascade.subscribe(ROOM, ("127.0.0.1", origin.settings.cascade_port))
        await until(lambda: tracks(edge) == 2, LINK_TIMEOUT, "origin tracks on the edge")
        link = cascade.links[ROOM]
        link._on_datagram(b"\x09\x00\x01" + b"x" * 20)  # unknown kind
        link._on_datagram(b"\x01\x00")  # too short
        assert edge.metrics.drops["cascade_datagram_malformed"] == 2
        link.protocol._quic.send_stream_data(0, b'{"t":"nack","ch":0,"seqs":["x"]}\n')
        link.protocol._quic.send_stream_data(0, b"\xff\xfe\n")
        link.protocol.transmit()
        await until(lambda: origin.metrics.drops["cascade_control_malformed"] == 3,
                    LINK_TIMEOUT, "the origin counting the bad lines")
        before = edge.metrics.cascade["packets_in"]
        await until(lambda: edge.metrics.cascade["packets_in"] > before + 10, LINK_TIMEOUT,
                    "media still flowing")
        assert link.linked.is_set()
    finally:
        await host.close()


async def test_subscribe_refuses_this_node_and_nonsense(edge: Node) -> None:
    cascade = cascade_of(edge)
    with pytest.raises(ValueError, match="own cascade listener"):
        await cascade.subscribe(ROOM, ("127.0.0.1", edge.settings.cascade_port))
    with pytest.raises(ValueError):
        await cascade.subscribe(ROOM, ("127.0.0.1", 0))
    with pytest.raises(ValueError):
        await cascade.subscribe("", ("127.0.0.1", 4433))
    assert cascade.links == {}


async def test_the_origin_closes_a_connection_that_never_authenticates(origin: Node) -> None:
    from aioquic.asyncio import connect

    from sfu.cascade.quic import LinkProtocol, configuration

    cascade_of(origin).auth_timeout = 0.5
    config = configuration(server=False, idle_timeout=10)
    async with connect("127.0.0.1", origin.settings.cascade_port, configuration=config,
                       create_protocol=LinkProtocol) as silent:
        await asyncio.wait_for(silent.wait_closed(), LINK_TIMEOUT)
        assert silent.close_reason.startswith("auth_timeout")
    assert origin.metrics.cascade_auth_rejections["origin"] == 1
    assert cascade_of(origin).listener.sessions == set()
