"""One viewer's downlink core: numbering in DownTrack.forward, feedback gating, allocation."""

from __future__ import annotations

from sfu.core import bwe
from sfu.core.downlink import SRTP_OVERHEAD, Downlink, padding_packet
from sfu.core.downtrack import DownTrack
from sfu.core.receiver import Receiver, TrackInfo
from sfu.sdp import Codec
from sfu.wire.rtp import build_packet, iter_extensions, parse_header
from sfu.wire.twcc import TransportFeedback, read_transport_seq

VP8 = Codec(96, "VP8", 90000, 1, {}, [])
OPUS = Codec(111, "OPUS", 48000, 2)
KEY = b"\x10\x00" + b"keyframe"
DELTA = b"\x10\x01" + b"delta"


class Recorder(bwe.Estimator):
    name = "recorder"

    def __init__(self, target: float = 1e6) -> None:
        self.sent: list[tuple[int, int, int | None]] = []
        self.feedback: list[TransportFeedback] = []
        self.target = target
        self.desired: float | None = None

    def on_packet_sent(self, transport_seq: int, size: int, now: float,
                       probe_cluster: int | None = None) -> None:
        self.sent.append((transport_seq, size, probe_cluster))

    def on_feedback(self, feedback: TransportFeedback, now: float) -> None:
        self.feedback.append(feedback)

    def set_desired_bitrate(self, bitrate: float, now: float) -> None:
        self.desired = bitrate

    @property
    def target_bitrate(self) -> float:
        return self.target


def _video() -> tuple[Receiver, DownTrack]:
    info = TrackInfo("v", "video", "p", "s", VP8)
    primary = Receiver(info, layer=0, rid="q")
    for i, rid in ((1, "h"), (2, "f")):
        primary.add_layer(Receiver(info, layer=i, rid=rid))
    dt = DownTrack(ssrc=0x77, kind="video", mid="1", clock_rate=90000, seq_start=1, ts_start=0)
    dt.bind(primary, 100, {}, set(), 0.0)
    dt.resume()
    return primary, dt


def _audio() -> DownTrack:
    r = Receiver(TrackInfo("a", "audio", "p", "s", OPUS))
    dt = DownTrack(ssrc=0x78, kind="audio", mid="0", clock_rate=48000, seq_start=1, ts_start=0)
    dt.bind(r, 111, {}, set(), 0.0)
    dt.resume()
    return dt


def _rtp(seq: int, payload: bytes, ext: list[tuple[int, bytes]] | None = None) -> bytes:
    return build_packet(payload_type=96, seq=seq, timestamp=seq * 3000, ssrc=0x1111,
                        payload=payload, extensions=ext or [])


def test_forward_numbers_every_packet_of_the_transport() -> None:
    est = Recorder()
    link = Downlink(est, ext_id=5)
    _, dt = _video()
    audio = _audio()
    link.add_track(dt)
    link.add_track(audio)
    dt.downlink = audio.downlink = link
    out = []
    for i, payload in enumerate((KEY, DELTA)):
        # the publisher's own transport seq (id 9 here) is not forwarded
        data = _rtp(10 + i, payload, [(9, b"\xff\xff"), (2, b"\x30")])
        pkt = dt.forward(data, parse_header(data), i == 0, float(i))
        assert pkt is not None
        out.append(pkt)
    data = _rtp(20, b"opus")
    pkt = audio.forward(data, parse_header(data), False, 2.0)
    assert pkt is not None
    out.append(pkt)
    seqs = [read_transport_seq(p, parse_header(p), 5) for p in out]
    assert est.sent == []  # batched until something reads the estimator
    link.flush()
    assert seqs == [0, 1, 2]
    assert all(iter_extensions(p, parse_header(p))[0][0] == 5 for p in out)
    assert all(9 not in dict(iter_extensions(p, parse_header(p))) for p in out)
    assert [s for s, _, _ in est.sent] == [0, 1, 2]
    assert [size for _, size, _ in est.sent] == [len(p) + SRTP_OVERHEAD for p in out]
    assert parse_header(out[0]).seq == 1 and out[0].endswith(KEY)


def test_no_ceiling_until_feedback_has_flowed_for_the_warmup() -> None:
    est = Recorder(target=100_000)  # not even the lowest layer fits
    link = Downlink(est, ext_id=5, warmup=1.0)
    _, dt = _video()
    link.add_track(dt)
    assert link.update(0.0) is None
    assert link.estimate is None
    assert dt.allocated_rank is None  # no ceiling
    assert est.desired is None  # no allocation probing before feedback either
    link.on_feedback(TransportFeedback(1, 2, 0, 0, 0, [(0, 4)]), 0.1)
    assert len(est.feedback) == 1
    assert link.update(1.0) is None  # still warming up: initial probes measure the path
    assert dt.allocated_rank is None
    alloc = link.update(1.2)
    assert alloc is not None
    assert link.estimate == 100_000
    assert dt.allocated_rank == -1 and dt in alloc.changed
    assert est.desired is not None and est.desired > 100_000


def test_allocator_pause_is_its_own_flag_and_resumes_on_a_key_frame() -> None:
    _, dt = _video()
    data = _rtp(1, KEY)
    assert dt.forward(data, parse_header(data), True, 0.0) is not None
    dt.set_allocator_paused(True, 0.1)
    assert dt.paused is False  # DTLS state untouched
    data = _rtp(2, DELTA)
    assert dt.forward(data, parse_header(data), False, 0.1) is None
    dt.set_allocator_paused(False, 0.5)
    assert dt.awaiting_keyframe
    data = _rtp(30, DELTA)
    assert dt.forward(data, parse_header(data), False, 0.5) is None  # waits for a key frame
    data = _rtp(31, KEY)
    pkt = dt.forward(data, parse_header(data), True, 0.6)
    assert pkt is not None
    assert parse_header(pkt).seq == 2  # the viewer's seq continues across the pause


def test_state_changes_are_counted() -> None:
    class Flip(Recorder):
        current = bwe.NORMAL

        @property
        def state(self) -> str:
            return self.current

    est = Flip()
    link = Downlink(est, ext_id=5)
    link.update(0.0)
    est.current = bwe.OVERUSING
    link.update(0.1)
    link.update(0.2)
    est.current = bwe.NORMAL
    link.update(0.3)
    assert link.state_changes == {bwe.OVERUSING: 1, bwe.NORMAL: 1}


def test_numbers_wrap_at_16_bits() -> None:
    link = Downlink(Recorder(), ext_id=5)
    link.seq = 0xFFFF
    assert [link.next_seq(), link.next_seq()] == [0xFFFF, 0]


def test_padding_probe_packet() -> None:
    pkt = padding_packet(ssrc=9, payload_type=97, seq=5, timestamp=123, ext_id=3,
                         transport_seq=0x0203)
    hdr = parse_header(pkt)
    assert (hdr.ssrc, hdr.payload_type, hdr.seq, hdr.timestamp) == (9, 97, 5, 123)
    assert hdr.payload_size == 0 and pkt[-1] == 255
    assert read_transport_seq(pkt, hdr, 3) == 0x0203
    assert len(pkt) == 12 + 8 + 255


def test_gcc_batch_matches_one_by_one() -> None:
    one, batch = bwe.create("gcc"), bwe.create("gcc")
    packets = [(i & 0xFFFF, 1000 + i % 7, 10.0 + i * 0.004, 1 if 500 <= i < 510 else None)
               for i in range(65530, 65530 + 1200)]
    for seq, size, now, cluster in packets:
        one.on_packet_sent(seq, size, now, cluster)
    batch.on_packets_sent(packets[:600])
    batch.on_packets_sent(packets[600:])
    assert one._sent == batch._sent  # type: ignore[attr-defined]
    assert one._highest_sent == batch._highest_sent  # type: ignore[attr-defined]
    assert one.pop_probes() == batch.pop_probes()
    assert one.get_timer() == batch.get_timer()


def test_forward_stamps_abs_send_time_for_a_remb_viewer() -> None:
    from sfu.wire import abs_send_time

    link = Downlink(bwe.create("remb"), ext_id=0)  # no transport-cc: nothing numbered
    _, dt = _video()
    link.add_track(dt)
    dt.downlink = link
    dt.abs_send_time_id = 3
    dt.ext_map = {2: 2}  # the publisher's id 2 is forwarded as 2
    dt.ext_key = tuple(dt.ext_map.items())
    dt.ext_identity = False
    out = []
    for i, payload in enumerate((KEY, DELTA)):
        data = _rtp(10 + i, payload, [(9, b"\xff\xff"), (2, b"\x30")])
        pkt = dt.forward(data, parse_header(data), i == 0, 7.0 + i)
        assert pkt is not None
        out.append(pkt)
    for i, pkt in enumerate(out):
        elements = iter_extensions(pkt, parse_header(pkt))
        assert elements[0] == (3, abs_send_time.value(7.0 + i).to_bytes(3, "big"))
        assert dict(elements)[2] == b"\x30"  # the forwarded extension is kept
    assert out[0].endswith(KEY) and link.sent == [] and link.seq == 0


def test_remb_starts_the_warmup() -> None:
    link = Downlink(bwe.create("remb"), ext_id=0, warmup=1.0)
    _, dt = _video()
    link.add_track(dt)
    assert link.update(0.5) is None
    link.on_remb(800_000, 0.5)
    assert link.update(1.0) is None  # warm-up
    alloc = link.update(1.6)
    # No congestion yet: the REMB is no ceiling and the viewer gets its preferred layer.
    assert alloc is not None and link.estimate is None
    assert dt.allocated_rank == 2
    link.on_remb(700_000, 2.0)  # fell, below what f forwards: congestion
    assert link.estimate == 700_000
    link.update(2.1)
    assert dt.allocated_rank == 1  # h fits 700 kbit/s, f does not


def test_paced_video_takes_no_number_in_forward() -> None:
    # The pacer numbers it when it leaves, so numbers follow the order on the wire.
    est = Recorder()
    link = Downlink(est, ext_id=5)
    _, dt = _video()
    link.add_track(dt)
    dt.downlink = link
    dt.number_at_send = True
    data = _rtp(10, KEY, [(2, b"\x30")])
    pkt = dt.forward(data, parse_header(data), True, 1.0)
    assert pkt is not None
    assert read_transport_seq(pkt, parse_header(pkt), 5) == 0  # a placeholder, first
    assert link.seq == 0 and link.sent == []
