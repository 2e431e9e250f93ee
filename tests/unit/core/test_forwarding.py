"""Forwarding decisions: Receiver -> DownTrack rewriting and Room binding, on a virtual clock."""

from __future__ import annotations

from sfu.core.downtrack import DownTrack
from sfu.core.receiver import Receiver, TrackInfo
from sfu.core.room import Room, Slot
from sfu.negotiate import EXT_AUDIO_LEVEL, EXT_MID, EXT_PLAYOUT_DELAY, EXT_VIDEO_ORIENTATION
from sfu.sdp import Codec, Extmap
from sfu.wire.rtcp import SenderReport
from sfu.wire.rtp import RtpHeader, build_packet, iter_extensions, parse_header

VP8 = Codec(96, "VP8", 90000, 1, {}, ["nack pli"])
OPUS = Codec(111, "OPUS", 48000, 2)
H264 = Codec(102, "H264", 90000, 1, {"packetization-mode": "1", "profile-level-id": "42e01f"})

PUB_VIDEO_EXT = [
    Extmap(4, EXT_MID),
    Extmap(13, EXT_VIDEO_ORIENTATION),
    Extmap(5, EXT_PLAYOUT_DELAY),
]
SUB_VIDEO_EXT = [Extmap(3, EXT_VIDEO_ORIENTATION), Extmap(12, EXT_PLAYOUT_DELAY)]

KEY = b"\x10\x00" + b"keyframe-data"  # VP8 descriptor S=1 PID=0, payload header P=0
DELTA = b"\x10\x01" + b"delta-data"  # P=1
FRAME = 3000  # 30 fps at 90 kHz


def receiver(
    track_id: str,
    participant: str,
    kind: str = "video",
    codec: Codec = VP8,
    extmaps: list[Extmap] | None = None,
) -> Receiver:
    info = TrackInfo(
        track_id=track_id,
        kind=kind,
        participant=participant,
        stream_id=f"room-{participant}",
        codec=codec,
        extmaps=list(PUB_VIDEO_EXT if extmaps is None and kind == "video" else extmaps or []),
    )
    return Receiver(info)


def downtrack(
    kind: str = "video",
    ssrc: int = 0x5151,
    seq_start: int = 1000,
    ts_start: int = 50_000,
    connected: bool = True,
) -> DownTrack:
    dt = DownTrack(
        ssrc=ssrc,
        kind=kind,
        mid="0",
        clock_rate=90000 if kind == "video" else 48000,
        seq_start=seq_start,
        ts_start=ts_start,
    )
    if connected:
        dt.resume()  # what the node does once the subscriber's DTLS is up
    return dt


def slot(
    subscriber: str,
    kind: str = "video",
    codecs: list[Codec] | None = None,
    extmaps: list[Extmap] | None = None,
    wants: str | None = None,
    ssrc: int = 0x5151,
) -> Slot:
    if codecs is None:
        codecs = [Codec(100, "VP8", 90000)] if kind == "video" else [Codec(109, "OPUS", 48000, 2)]
    return Slot(
        downtrack=downtrack(kind, ssrc=ssrc),
        subscriber=subscriber,
        codecs=codecs,
        extmaps=list(SUB_VIDEO_EXT if extmaps is None and kind == "video" else extmaps or []),
        wants=wants,
    )


def video_packet(seq: int, ts: int, key: bool, ssrc: int = 0xAAAA, pt: int = 96) -> bytes:
    return build_packet(
        payload_type=pt,
        seq=seq,
        timestamp=ts,
        ssrc=ssrc,
        payload=KEY if key else DELTA,
        marker=True,
        extensions=[(4, b"1"), (13, b"\x01"), (5, b"\x00\x10\x20")],
    )


def feed(r: Receiver, dt: DownTrack, data: bytes, now: float) -> tuple[bytes, RtpHeader] | None:
    """What the shell does per packet: receiver accounting, then the down-track decision."""
    hdr = parse_header(data)
    key = r.on_rtp(data, hdr, now)
    out = dt.forward(data, hdr, key, now)
    if out is None:
        return None
    return bytes(out), parse_header(bytes(out))


def bound_pair(seq_start: int = 1000, ts_start: int = 50_000) -> tuple[Room, Receiver, DownTrack]:
    room = Room("room")
    r = receiver("alice-v", "alice")
    room.add_receiver(r, 0.0)
    s = slot("bob")
    s.downtrack = downtrack(seq_start=seq_start, ts_start=ts_start)
    assert room.add_slot(s, 0.0)
    return room, r, s.downtrack


# --- DownTrack ---------------------------------------------------------------------------


def test_binding_sets_payload_type_and_extension_map() -> None:
    _, r, dt = bound_pair()
    assert dt.bound and dt.receiver is r
    assert r.downtracks == [dt]
    assert dt.payload_type == 100
    assert dt.ext_map == {13: 3, 5: 12}
    assert dt.ext_identity is False
    assert dt.awaiting_keyframe is True


def test_video_drops_until_first_keyframe_then_rewrites() -> None:
    _, r, dt = bound_pair(seq_start=1000, ts_start=50_000)
    assert feed(r, dt, video_packet(200, 9000, key=False), 0.0) is None
    assert feed(r, dt, video_packet(201, 12000, key=False), 0.033) is None
    assert dt.dropped_waiting == 2
    results = []
    for i, (seq, ts, key) in enumerate([(202, 15000, True), (203, 15000, False),
                                        (204, 18000, False), (205, 21000, False)]):
        got = feed(r, dt, video_packet(seq, ts, key), 0.066 + i * 0.01)
        assert got is not None
        results.append(got)
    assert dt.awaiting_keyframe is False
    assert [(h.seq, h.timestamp, h.ssrc, h.payload_type, h.marker) for _, h in results] == [
        (1000, 50_000, 0x5151, 100, True),
        (1001, 50_000, 0x5151, 100, True),
        (1002, 53_000, 0x5151, 100, True),
        (1003, 56_000, 0x5151, 100, True),
    ]
    data, h = results[0]
    assert data[h.payload_start : h.payload_end] == KEY
    data, h = results[1]
    assert data[h.payload_start : h.payload_end] == DELTA
    # a later non-keyframe after the start is forwarded, no second wait
    assert dt.dropped_waiting == 2
    assert dt.stats.packet_count == 4


def test_header_extensions_remapped_and_mid_stripped() -> None:
    _, r, dt = bound_pair()
    got = feed(r, dt, video_packet(1, 0, key=True), 0.0)
    assert got is not None
    data, h = got
    assert h.ext_profile == 0xBEDE
    assert iter_extensions(data, h) == [(3, b"\x01"), (12, b"\x00\x10\x20")]


def test_no_forwarded_extensions_removes_block() -> None:
    room = Room("room")
    r = receiver("alice-v", "alice")
    room.add_receiver(r, 0.0)
    s = slot("bob", extmaps=[])
    assert room.add_slot(s, 0.0)
    got = feed(r, s.downtrack, video_packet(1, 0, key=True), 0.0)
    assert got is not None
    data, h = got
    assert h.ext_profile == 0
    assert data[12:] == KEY


def test_identical_extension_ids_pass_block_through() -> None:
    room = Room("room")
    ext = [Extmap(1, EXT_AUDIO_LEVEL)]
    r = receiver("alice-a", "alice", kind="audio", codec=OPUS, extmaps=ext)
    room.add_receiver(r, 0.0)
    s = slot("bob", kind="audio", extmaps=ext)
    assert room.add_slot(s, 0.0)
    dt = s.downtrack
    assert dt.ext_identity is True
    pkt = build_packet(payload_type=111, seq=7, timestamp=960, ssrc=0xA0, payload=b"opus",
                       extensions=[(1, b"\x85")])
    got = feed(r, dt, pkt, 0.0)
    assert got is not None
    data, h = got
    assert data[12:] == pkt[12:]
    assert (h.payload_type, h.seq, h.timestamp, h.ssrc) == (109, 1000, 50_000, 0x5151)


def test_audio_forwards_immediately_and_keeps_ts_offsets() -> None:
    room = Room("room")
    r = receiver("alice-a", "alice", kind="audio", codec=OPUS,
                 extmaps=[Extmap(1, EXT_AUDIO_LEVEL), Extmap(4, EXT_MID)])
    room.add_receiver(r, 0.0)
    s = slot("bob", kind="audio", extmaps=[Extmap(5, EXT_AUDIO_LEVEL)])
    s.downtrack = downtrack("audio", ssrc=0x77, seq_start=40, ts_start=7)
    assert room.add_slot(s, 0.0)
    dt = s.downtrack
    assert dt.awaiting_keyframe is False
    assert dt.ext_identity is False  # mid (4) is not forwarded
    outs = []
    for i in range(3):
        pkt = build_packet(payload_type=111, seq=500 + i, timestamp=123_000 + 960 * i,
                           ssrc=0xA0, payload=b"opus", extensions=[(4, b"0"), (1, b"\x90")])
        got = feed(r, dt, pkt, i * 0.02)
        assert got is not None
        outs.append(got)
    assert [(h.seq, h.timestamp, h.ssrc, h.payload_type) for _, h in outs] == [
        (40, 7, 0x77, 109), (41, 967, 0x77, 109), (42, 1927, 0x77, 109)
    ]
    assert [iter_extensions(d, h) for d, h in outs] == [[(5, b"\x90")]] * 3
    assert r.on_rtp(outs[0][0], outs[0][1], 1.0) is False  # audio never reports keyframes


def test_incoming_seq_and_ts_wrap() -> None:
    _, r, dt = bound_pair(seq_start=100, ts_start=10)
    start_ts = 2**32 - 2 * FRAME
    seqs = [65533, 65534, 65535, 0, 1]
    outs = []
    for i, seq in enumerate(seqs):
        got = feed(r, dt, video_packet(seq, (start_ts + i * FRAME) % 2**32, key=(i == 0)), i / 30)
        assert got is not None
        outs.append(got[1])
    assert [h.seq for h in outs] == [100, 101, 102, 103, 104]
    assert [h.timestamp for h in outs] == [10 + i * FRAME for i in range(5)]


def test_outgoing_seq_wrap() -> None:
    _, r, dt = bound_pair(seq_start=65534, ts_start=2**32 - FRAME)
    outs = []
    for i in range(4):
        got = feed(r, dt, video_packet(10 + i, i * FRAME, key=(i == 0)), i / 30)
        assert got is not None
        outs.append(got[1])
    assert [(h.seq, h.timestamp) for h in outs] == [
        (65534, 2**32 - FRAME), (65535, 0), (0, FRAME), (1, 2 * FRAME)
    ]


def test_sender_report_uses_munged_timestamp_and_payload_octets() -> None:
    _, r, dt = bound_pair(seq_start=1000, ts_start=50_000)
    source = SenderReport(ssrc=0xAAAA, ntp_timestamp=0x1234_5678_9ABC_DEF0,
                          rtp_timestamp=15_000 + 4500, packet_count=99, octet_count=9999,
                          reports=[])
    assert dt.sender_report(source) is None  # nothing sent yet
    feed(r, dt, video_packet(1, 15_000, key=False), 0.0)  # dropped while waiting
    assert dt.sender_report(source) is None
    feed(r, dt, video_packet(2, 15_000, key=True), 0.0)
    feed(r, dt, video_packet(3, 18_000, key=False), 0.033)
    sr = dt.sender_report(source)
    assert sr == SenderReport(
        ssrc=0x5151,
        ntp_timestamp=0x1234_5678_9ABC_DEF0,
        rtp_timestamp=50_000 + 4500,
        packet_count=2,
        # RFC 3550 6.4.1: payload octets, not header or padding
        octet_count=len(KEY) + len(DELTA),
        reports=[],
    )


def test_rebind_to_new_receiver_keeps_seq_contiguous_and_waits_for_keyframe() -> None:
    _, r1, dt = bound_pair(seq_start=1000, ts_start=50_000)
    for i in range(3):
        assert feed(r1, dt, video_packet(300 + i, 9000 + i * FRAME, key=(i == 0)), i / 30)
    r2 = receiver("carol-v", "carol")
    dt.bind(r2, 100, {13: 3}, {4, 13, 5}, now=1.0)
    assert dt.receiver is r2 and dt.awaiting_keyframe
    assert feed(r2, dt, video_packet(7000, 777_000, key=False, ssrc=0xBBBB), 1.0) is None
    got = feed(r2, dt, video_packet(7001, 780_000, key=True, ssrc=0xBBBB), 1.5)
    assert got is not None
    data, h = got
    assert h.seq == 1003
    # the timestamp advances by the wall time since the last forwarded packet
    assert h.timestamp == 50_000 + 2 * FRAME + round((1.5 - 2 / 30) * 90000)
    assert iter_extensions(data, h) == [(3, b"\x01")]
    got = feed(r2, dt, video_packet(7002, 783_000, key=False, ssrc=0xBBBB), 1.533)
    assert got is not None
    assert (got[1].seq, got[1].timestamp) == (1004, h.timestamp + FRAME)


def test_room_rebind_after_publisher_leaves_keeps_seq_contiguous() -> None:
    room, r1, dt = bound_pair(seq_start=1000, ts_start=50_000)
    r2 = receiver("carol-v", "carol")
    assert room.add_receiver(r2, 0.0) == []  # bob's only slot is busy
    for i in range(3):
        assert feed(r1, dt, video_packet(300 + i, 9000 + i * FRAME, key=(i == 0)), i / 30)
    rebound = room.remove_receiver("alice-v", 1.0)
    assert [s.downtrack for s in rebound] == [dt]
    assert dt.receiver is r2 and r2.downtracks == [dt]
    assert dt.awaiting_keyframe
    assert feed(r2, dt, video_packet(60_000, 5, key=False, ssrc=0xBBBB), 1.0) is None
    got = feed(r2, dt, video_packet(60_001, 5, key=True, ssrc=0xBBBB), 1.2)
    assert got is not None
    assert got[1].seq == 1003
    assert got[1].timestamp == 50_000 + 2 * FRAME + round((1.2 - 2 / 30) * 90000)
    got = feed(r2, dt, video_packet(60_002, 5 + FRAME, key=False, ssrc=0xBBBB), 1.233)
    assert got is not None and got[1].seq == 1004


def test_paused_until_resumed_then_waits_for_keyframe() -> None:
    room = Room("room")
    r = receiver("alice-v", "alice")
    room.add_receiver(r, 0.0)
    s = slot("bob")
    s.downtrack = dt = downtrack(connected=False)
    assert dt.paused
    assert room.add_slot(s, 0.0)
    assert feed(r, dt, video_packet(1, 0, key=True), 0.0) is None  # DTLS not up yet
    dt.resume()
    assert not dt.paused and dt.awaiting_keyframe
    assert feed(r, dt, video_packet(2, FRAME, key=False), 0.033) is None
    got = feed(r, dt, video_packet(3, 2 * FRAME, key=True), 0.066)
    assert got is not None
    assert (got[1].seq, got[1].timestamp) == (1000, 50_000)


def test_audio_resume_does_not_wait_for_keyframe() -> None:
    dt = downtrack("audio", connected=False)
    dt.resume()
    assert dt.awaiting_keyframe is False


def test_unbind() -> None:
    _, _, dt = bound_pair()
    dt.unbind()
    assert not dt.bound and dt.receiver is None


# --- Receiver ----------------------------------------------------------------------------


def test_receiver_detects_keyframes() -> None:
    r = receiver("alice-v", "alice")
    assert r.is_video and r.codec_name == "VP8" and r.payload_type == 96
    delta = video_packet(1, 0, key=False)
    assert r.on_rtp(delta, parse_header(delta), 1.0) is False
    assert r.last_keyframe_at is None
    key = video_packet(2, 0, key=True)
    assert r.on_rtp(key, parse_header(key), 2.0) is True
    assert r.last_keyframe_at == 2.0
    assert r.last_packet_at == 2.0
    assert r.stats.packets == 2


def test_receiver_keyframe_detection_ignores_padding_and_extensions() -> None:
    r = receiver("alice-v", "alice")
    pkt = build_packet(payload_type=96, seq=1, timestamp=0, ssrc=1, payload=b"\x10\x00",
                       extensions=[(1, b"\x01")], padding=3)
    assert r.on_rtp(pkt, parse_header(pkt), 0.0) is True
    pkt = build_packet(payload_type=96, seq=2, timestamp=0, ssrc=1, payload=b"\x10", padding=1)
    # only the descriptor: the padding byte must not be read as the payload header
    assert r.on_rtp(pkt, parse_header(pkt), 0.0) is False


def test_request_keyframe_throttles_and_coalesces() -> None:
    r = receiver("alice-v", "alice")
    assert r.request_keyframe(10.0) is True
    assert r.request_keyframe(10.2) is False
    assert r.request_keyframe(10.4) is False
    assert r.keyframes.pending
    assert r.keyframes.get_timer() == 10.5
    assert r.keyframes.handle_timer(10.49) is False
    assert r.keyframes.handle_timer(10.5) is True
    assert not r.keyframes.pending
    assert r.keyframes.sent == 2
    assert r.request_keyframe(10.7) is False
    assert r.request_keyframe(11.0) is True


def test_keyframe_arrival_cancels_pending_request() -> None:
    r = receiver("alice-v", "alice")
    assert r.request_keyframe(0.0) is True
    assert r.request_keyframe(0.1) is False
    key = video_packet(1, 0, key=True)
    r.on_rtp(key, parse_header(key), 0.2)
    assert not r.keyframes.pending
    assert r.keyframes.get_timer() is None
    assert r.keyframes.handle_timer(0.6) is False


def test_audio_receiver_never_requests_keyframes() -> None:
    r = receiver("alice-a", "alice", kind="audio", codec=OPUS)
    assert r.request_keyframe(0.0) is False
    assert r.request_keyframe(5.0) is False


def test_report_block_needs_ssrc_and_packets() -> None:
    r = receiver("alice-v", "alice")
    assert r.report_block(0.0) is None
    pkt = video_packet(1, 0, key=True)
    r.on_rtp(pkt, parse_header(pkt), 0.0)
    assert r.report_block(0.1) is None  # ssrc not learnt yet
    r.ssrc = 0xAAAA
    block = r.report_block(0.2)
    assert block is not None and block.ssrc == 0xAAAA


# --- Room --------------------------------------------------------------------------------


def test_whep_slot_never_binds_own_participant() -> None:
    room = Room("room")
    own = receiver("alice-v", "alice")
    room.add_receiver(own, 0.0)
    s = slot("alice")
    assert room.add_slot(s, 0.0) is False
    assert not s.downtrack.bound
    other = receiver("bob-v", "bob")
    assert room.add_receiver(other, 1.0) == [s]
    assert s.downtrack.receiver is other


def test_whep_slot_binds_only_its_kind() -> None:
    room = Room("room")
    audio = receiver("alice-a", "alice", kind="audio", codec=OPUS)
    room.add_receiver(audio, 0.0)
    s = slot("bob", kind="video")
    assert room.add_slot(s, 0.0) is False
    video = receiver("alice-v", "alice")
    assert room.add_receiver(video, 0.0) == [s]
    assert s.downtrack.receiver is video
    a = slot("bob", kind="audio")
    assert room.add_slot(a, 0.0) is True
    assert a.downtrack.receiver is audio
    assert a.downtrack.payload_type == 109


def test_each_subscriber_slot_gets_a_different_track() -> None:
    room = Room("room")
    tracks = [receiver(f"p{i}-v", f"p{i}") for i in range(2)]
    for t in tracks:
        room.add_receiver(t, 0.0)
    s1, s2, s3 = slot("bob", ssrc=1), slot("bob", ssrc=2), slot("bob", ssrc=3)
    assert room.add_slot(s1, 0.0) and room.add_slot(s2, 0.0)
    assert s1.downtrack.receiver is tracks[0]
    assert s2.downtrack.receiver is tracks[1]
    assert room.add_slot(s3, 0.0) is False
    # another subscriber may take a track bob already has
    c = slot("carol")
    assert room.add_slot(c, 0.0)
    assert c.downtrack.receiver is tracks[0]
    assert tracks[0].downtracks == [s1.downtrack, c.downtrack]
    late = receiver("p2-v", "p2")
    assert room.add_receiver(late, 0.0) == [s3]
    assert s3.downtrack.receiver is late


def test_slot_joining_before_publisher_binds_when_track_added() -> None:
    room = Room("room")
    s = slot("bob")
    assert room.add_slot(s, 0.0) is False
    assert room.version == 0
    r = receiver("alice-v", "alice")
    assert room.add_receiver(r, 1.0) == [s]
    assert room.version == 1
    assert s.downtrack.receiver is r
    assert r.downtracks == [s.downtrack]
    assert s.downtrack.payload_type == 100


def test_removing_track_rebinds_to_a_free_track_of_same_kind() -> None:
    room = Room("room")
    a, b, c = (receiver(f"{p}-v", p) for p in ("alice", "bob", "carol"))
    audio = receiver("dave-a", "dave", kind="audio", codec=OPUS)
    for r in (a, b, audio):
        room.add_receiver(r, 0.0)
    s1, s2 = slot("zed", ssrc=1), slot("zed", ssrc=2)
    room.add_slot(s1, 0.0)
    room.add_slot(s2, 0.0)
    assert (s1.downtrack.receiver, s2.downtrack.receiver) == (a, b)
    room.add_receiver(c, 0.0)
    assert room.remove_receiver("alice-v", 1.0) == [s1]
    assert s1.downtrack.receiver is c  # b is taken by zed's other slot
    assert a.downtracks == []
    assert room.remove_receiver("carol-v", 2.0) == []
    assert not s1.downtrack.bound  # no free video track left (audio does not count)
    assert room.remove_receiver("nope", 2.0) == []
    assert room.version == 6


def test_a_second_session_of_a_participant_gets_the_track_too() -> None:
    """A viewer that reconnects while its old session lingers (the old peer has not timed out
    yet, or its edge relays the room again after an origin change) must get the track on the
    new session: the "each slot a different track" rule holds within one session only."""
    room = Room("room")
    old, new = slot("zed", ssrc=1), slot("zed", ssrc=2)
    old.session, new.session = "peer-1", "peer-2"
    room.add_slot(old, 0.0)
    room.add_slot(new, 0.0)
    r = receiver("alice-v", "alice")
    assert room.add_receiver(r, 1.0) == [old, new]
    assert old.downtrack.receiver is r and new.downtrack.receiver is r
    # Within one session the rule stands: a second slot of peer-2 does not take the same track.
    third = slot("zed", ssrc=3)
    third.session = "peer-2"
    assert room.add_slot(third, 2.0) is False


def test_named_slot_binds_only_its_track() -> None:
    room = Room("room")
    a, b = receiver("alice-v", "alice"), receiver("bob-v", "bob")
    room.add_receiver(a, 0.0)
    s = slot("zed", wants="bob-v")
    assert room.add_slot(s, 0.0) is False
    assert room.add_receiver(b, 0.0) == [s]
    assert s.downtrack.receiver is b
    assert room.remove_receiver("bob-v", 1.0) == []
    assert not s.downtrack.bound  # a named subscription does not fall back to another track


def test_codec_mismatch_stays_unbound() -> None:
    room = Room("room")
    vp8 = receiver("alice-v", "alice")
    room.add_receiver(vp8, 0.0)
    s = slot("bob", codecs=[Codec(102, "H264", 90000, 1,
                                  {"packetization-mode": "1", "profile-level-id": "42e01f"})])
    assert room.add_slot(s, 0.0) is False
    assert not s.downtrack.bound
    assert s.mismatched == {"alice-v"}
    assert vp8.downtracks == []
    assert room.add_receiver(receiver("carol-v", "carol"), 0.0) == []
    assert s.mismatched == {"alice-v", "carol-v"}
    h264 = receiver("dave-v", "dave", codec=H264)
    assert room.add_receiver(h264, 0.0) == [s]
    assert s.downtrack.payload_type == 102


def test_remove_slot_detaches_downtrack() -> None:
    room, r, dt = bound_pair()
    (s,) = room.slots
    room.remove_slot(s)
    assert room.slots == [] and r.downtracks == [] and not dt.bound
    room.remove_slot(s)  # idempotent
    assert room.tracks() == [
        {"track_id": "alice-v", "kind": "video", "participant": "alice",
         "stream_id": "room-alice", "codec": "VP8"}
    ]
    assert not room.empty
    room.remove_receiver("alice-v", 0.0)
    assert room.empty


def test_accept_never_starts_on_a_late_copy_and_tells_the_nack_generator() -> None:
    r = receiver("alice-v", "alice")
    r.enable_nack(rtx_payload_type=97)
    assert r.nack is not None
    first = video_packet(100, 3000, key=False)
    assert r.accept(first, parse_header(first), 0.0, late=False) is False
    # 101 lost, 102 arrives: the generator now misses 101.
    third = video_packet(102, 9000, key=False)
    r.accept(third, parse_header(third), 0.01, late=False)
    assert r.nack.is_missing(101)
    # 101 comes back as a retransmission that happens to be a key frame: recorded, the
    # gap closed, but no down-track may start on it.
    late = video_packet(101, 6000, key=True)
    assert r.accept(late, parse_header(late), 0.05, late=True) is False
    assert not r.nack.is_missing(101)
    fresh = video_packet(103, 12000, key=True)
    assert r.accept(fresh, parse_header(fresh), 0.06, late=False) is True
