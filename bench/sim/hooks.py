"""Where loss recovery and bandwidth estimation plug into the simulated node and subscribers.

The simulated node calls these at the same points the real node will: on every uplink packet
(`on_ingress`: the node's own NACK generator toward the publisher), when a packet is about to
leave for a subscriber (`prepare`: RED for audio), after it left (`on_forwarded`: History
for NACK/RTX, FEC encoder), on subscriber RTCP other than PLI (`on_feedback`: NACK ->
responder, receiver reports -> RED/FEC adaptation), and on the node's tick (`poll`).
`NoRecovery` does nothing (reports say ``recovery: none``); `NackRtxRecovery` drives the
real cores in sfu.core.nack/history/redundancy/fec. `SubscriberRecovery` is the viewer's
side (what a browser does): NACK generator, RTX unwrap, RED decode, FlexFEC recovery and
receiver reports carrying the loss fraction.

RTT: the simulator has no SR/RR round-trip measurement, so every RTT-driven core is given
the configured propagation RTT of its path (queueing not included).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from bench.sim.publisher import AUDIO_PT, VIDEO_PT
from sfu.core.fec import FecDecoder, FecEncoder
from sfu.core.history import History
from sfu.core.nack import NackGenerator, NackResponder, RtxConfig, UpstreamNackAggregator
from sfu.core.redundancy import RedDecoder, RedEncoder
from sfu.wire import rtcp
from sfu.wire.rtcp import RtcpPacket
from sfu.wire.rtp import RtpHeader, build_packet, parse_header
from sfu.wire.rtx import unwrap

RECOVERY_MODES = ("none", "nack", "nack+red", "nack+red+fec")
RTX_PT = 97
RED_PT = 63
FLEXFEC_PT = 120
NODE_RTCP_SSRC = 0x0DE0_0001
FEC_NACK_DELAY = 0.01  # with FEC on, give the frame's parity packets a moment before NACKing

Sink = Callable[[bytes, float], None]
Schedule = Callable[[float, Callable[[float], None]], None]


def rtx_ssrc(media_ssrc: int) -> int:
    return media_ssrc ^ 0x1000_0000


def fec_ssrc(media_ssrc: int) -> int:
    return media_ssrc ^ 0x4000_0000


class Recovery(Protocol):
    """Loss recovery on the node: upstream NACK generator, NACK responder/RTX, RED, FEC."""

    name: str
    rtx_packets: int
    fec_packets: int
    overhead_bytes: int

    def bind(self, upstream_rtcp: Sink, request_keyframe: Callable[[int, float], None]) -> None:
        """The node's ways out: RTCP to the publisher, a keyframe ask for an uplink SSRC."""
        ...

    def on_ingress(self, hdr: RtpHeader, keyframe: bool, now: float) -> None:
        """An uplink packet arrived (before forwarding)."""
        ...

    def poll(self, now: float) -> None:
        """Run due timers (the node calls this per packet and on its tick)."""
        ...

    def prepare(self, subscriber: str, data: bytes, now: float) -> bytes:
        """The packet to send in place of forwarded `data` (e.g. RED-wrapped audio)."""
        ...

    def on_forwarded(self, subscriber: str, data: bytes, now: float,
                     source: tuple[int, int] | None = None) -> list[bytes]:
        """`data` went to `subscriber` (from uplink (ssrc, seq) `source`); extra packets (FEC)."""
        ...

    def on_feedback(self, subscriber: str, packet: RtcpPacket, now: float) -> list[bytes]:
        """Subscriber RTCP (e.g. NACK); packets (RTX) to send in answer."""
        ...


class NoRecovery:
    """Nothing is retransmitted or protected: what is lost on a link stays lost."""

    name = "none"

    def __init__(self) -> None:
        self.rtx_packets = 0
        self.fec_packets = 0
        self.overhead_bytes = 0

    def bind(self, upstream_rtcp: Sink, request_keyframe: Callable[[int, float], None]) -> None:
        return None

    def on_ingress(self, hdr: RtpHeader, keyframe: bool, now: float) -> None:
        return None

    def poll(self, now: float) -> None:
        return None

    def prepare(self, subscriber: str, data: bytes, now: float) -> bytes:
        return data

    def on_forwarded(self, subscriber: str, data: bytes, now: float,
                     source: tuple[int, int] | None = None) -> list[bytes]:
        return []

    def on_feedback(self, subscriber: str, packet: RtcpPacket, now: float) -> list[bytes]:
        return []


@dataclass(slots=True)
class _Down:
    """Recovery state of one down-track (keyed by its outgoing SSRC)."""

    audio: bool
    history: History
    responder: NackResponder
    red: RedEncoder | None
    fec: FecEncoder | None
    source_ssrc: int | None = None


@dataclass(slots=True)
class _Up:
    generator: NackGenerator
    aggregator: UpstreamNackAggregator


class NackRtxRecovery:
    """The node side of NACK/RTX (+ RED for audio, + FlexFEC for video) on the real cores.

    Call sequence per uplink packet: `on_ingress` (NackGenerator.on_packet) then `poll`;
    per forwarded packet: `prepare` (RedEncoder.encode) -> send -> `on_forwarded`
    (History.push, NackResponder.on_media, FecEncoder.on_packet -> send the FEC packets);
    per subscriber RTCP: `on_feedback` (NACK -> NackResponder.on_nack -> send RTX, and the
    "missing upstream" seqs -> UpstreamNackAggregator.request -> one NACK to the publisher;
    RR -> RedEncoder/FecEncoder.set_loss).
    """

    def __init__(self, mode: str = "nack", *, down_rtt: float = 0.05,
                 up_rtt: float = 0.02) -> None:
        if mode not in RECOVERY_MODES or mode == "none":
            raise ValueError(f"recovery mode must be one of {RECOVERY_MODES[1:]}, got {mode!r}")
        self.name = mode
        self.red = "red" in mode
        self.fec = "fec" in mode
        self.down_rtt = down_rtt
        self.up_rtt = up_rtt
        self._downs: dict[int, _Down] = {}
        self._ups: dict[int, _Up] = {}
        self._upstream: Sink | None = None
        self._keyframe: Callable[[int, float], None] | None = None
        self._next_timer: float | None = None
        self.rtx_packets = 0
        self.fec_packets = 0
        self.overhead_bytes = 0
        self.rtx_bytes = 0
        self.fec_bytes = 0
        self.red_bytes = 0
        self.nack_bytes_upstream = 0
        self.upstream_nacks = 0  # seq entries NACKed toward the publisher
        self.retransmits_suppressed = 0

    def bind(self, upstream_rtcp: Sink, request_keyframe: Callable[[int, float], None]) -> None:
        self._upstream = upstream_rtcp
        self._keyframe = request_keyframe

    # --- uplink ------------------------------------------------------------------------------

    def on_ingress(self, hdr: RtpHeader, keyframe: bool, now: float) -> None:
        if hdr.payload_type != VIDEO_PT:
            return  # Opus publishers do not answer NACK by default (Chromium): RED instead
        up = self._ups.get(hdr.ssrc)
        if up is None:
            gen = NackGenerator(rtt=self.up_rtt)
            up = self._ups[hdr.ssrc] = _Up(gen, UpstreamNackAggregator(rtt=self.up_rtt,
                                                                      generator=gen))
        up.generator.on_packet(hdr.seq, now, is_keyframe=keyframe)
        t = up.generator.get_timer()
        if t is not None and (self._next_timer is None or t < self._next_timer):
            self._next_timer = t
        self.poll(now)

    def poll(self, now: float) -> None:
        if self._next_timer is None or self._next_timer > now:
            return
        nxt: float | None = None
        for ssrc, up in self._ups.items():
            gen = up.generator
            t = gen.get_timer()
            if t is not None and t <= now:
                self._send_upstream_nack(ssrc, gen.handle_timer(now), now)
                if gen.take_keyframe_request() and self._keyframe is not None:
                    # Through the Receiver's KeyframeRequester: throttled per layer.
                    self._keyframe(ssrc, now)
                t = gen.get_timer()
            if t is not None and (nxt is None or t < nxt):
                nxt = t
        self._next_timer = nxt

    def _send_upstream_nack(self, ssrc: int, seqs: list[int], now: float) -> None:
        if not seqs or self._upstream is None:
            return
        data = rtcp.serialize_compound([rtcp.Nack(NODE_RTCP_SSRC, ssrc, seqs)])
        self.upstream_nacks += len(seqs)
        self.nack_bytes_upstream += len(data)
        self._upstream(data, now)

    # --- downlink ----------------------------------------------------------------------------

    def _down(self, ssrc: int, payload_type: int) -> _Down:
        st = self._downs.get(ssrc)
        if st is None:
            audio = payload_type in (AUDIO_PT, RED_PT)
            history = History()
            rtx = None if audio else RtxConfig(rtx_ssrc(ssrc), RTX_PT, seq_start=ssrc & 0xFFFF)
            st = self._downs[ssrc] = _Down(
                audio=audio, history=history,
                responder=NackResponder(history, rtx=rtx, rtt=self.down_rtt),
                red=RedEncoder(RED_PT, max_distance=12, max_packet=1200)
                if audio and self.red else None,
                fec=FecEncoder(media_ssrc=ssrc, fec_ssrc=fec_ssrc(ssrc),
                               payload_type=FLEXFEC_PT, rtt=self.down_rtt)
                if self.fec and not audio else None,
            )
        return st

    def prepare(self, subscriber: str, data: bytes, now: float) -> bytes:
        hdr = parse_header(data)
        st = self._down(hdr.ssrc, hdr.payload_type)
        if st.red is None:
            return data
        before = st.red.overhead_bytes
        out = st.red.encode(data, now)
        extra = st.red.overhead_bytes - before
        self.red_bytes += extra
        self.overhead_bytes += extra
        return out

    def on_forwarded(self, subscriber: str, data: bytes, now: float,
                     source: tuple[int, int] | None = None) -> list[bytes]:
        hdr = parse_header(data)
        st = self._down(hdr.ssrc, hdr.payload_type)
        if source is not None:
            st.source_ssrc = source[0]
        st.history.push(hdr.seq, data, now, incoming_seq=source[1] if source else None)
        st.responder.on_media(len(data), now)
        if st.fec is None:
            return []
        out = st.fec.on_packet(data, now)
        for p in out:
            self.fec_packets += 1
            self.fec_bytes += len(p)
            self.overhead_bytes += len(p)
        return out

    def on_feedback(self, subscriber: str, packet: RtcpPacket, now: float) -> list[bytes]:
        if isinstance(packet, rtcp.Nack):
            return self._on_nack(packet, now)
        if isinstance(packet, rtcp.ReceiverReport):
            for block in packet.reports:
                st = self._downs.get(block.ssrc)
                if st is None:
                    continue
                loss = block.fraction_lost / 256
                st.responder.set_loss(loss, now)
                if st.red is not None:
                    st.red.set_loss(loss, now)
                if st.fec is not None:
                    st.fec.set_loss(loss, now)
        return []

    def _on_nack(self, packet: rtcp.Nack, now: float) -> list[bytes]:
        st = self._downs.get(packet.media_ssrc)
        if st is None:
            return []
        before = st.responder.suppressed_rate + st.responder.suppressed_budget
        out: list[bytes] = []
        missing: list[int] = []
        for r in st.responder.on_nack(packet.lost, now):
            if r.data is not None:
                out.append(r.data)
                self.rtx_packets += 1
                self.rtx_bytes += len(r.data)
                self.overhead_bytes += len(r.data)
            elif r.upstream_seq is not None:
                missing.append(r.upstream_seq)
        self.retransmits_suppressed += (st.responder.suppressed_rate
                                        + st.responder.suppressed_budget - before)
        if missing and st.source_ssrc is not None:
            up = self._ups.get(st.source_ssrc)
            if up is not None:
                self._send_upstream_nack(st.source_ssrc, up.aggregator.request(missing, now), now)
        return out


def make_recovery(mode: str, *, down_rtt: float, up_rtt: float) -> Recovery:
    """The node-side recovery for a `--recovery` mode."""
    if mode == "none":
        return NoRecovery()
    return NackRtxRecovery(mode, down_rtt=down_rtt, up_rtt=up_rtt)


# --- the viewer's side -----------------------------------------------------------------------


class _Counted(Protocol):
    nacks_sent: int


class SubscriberRecovery:
    """What a WebRTC receiver does for recovery, on the same cores as the node.

    `on_packet` turns what arrives into the media packets the receiver model processes
    (RTX unwrapped, RED split, FEC-recovered); `on_video` feeds the NACK generator with
    every new video seq; NACKs and a receiver report per `report_interval` go out through
    `send_rtcp`; a give-up calls `on_unrecoverable` (the receiver asks for a keyframe).
    """

    def __init__(self, mode: str, *, video_ssrc: int, audio_ssrc: int, rtcp_ssrc: int,
                 rtt: float, schedule: Schedule, send_rtcp: Sink,
                 report_interval: float = 1.0) -> None:
        self.nack = mode != "none"
        self.fec = "fec" in mode
        self.video_ssrc = video_ssrc
        self.audio_ssrc = audio_ssrc
        self.rtcp_ssrc = rtcp_ssrc
        self._schedule = schedule
        self._send = send_rtcp
        self.generator = NackGenerator(rtt=rtt, delay=FEC_NACK_DELAY if self.fec else 0.0)
        self.red = RedDecoder()
        self.fec_decoder = FecDecoder(video_ssrc) if self.fec else None
        self.report_interval = report_interval
        self._rtt = rtt
        self._last_nack: float | None = None
        self._armed: float | None = None
        self._reporting = False
        self._owner: _Counted | None = None
        self._on_unrecoverable: Callable[[float], None] | None = None
        # receiver-report state per media SSRC: (highest ext seq, received) now / at last RR
        self._rr: dict[int, list[int]] = {}
        self.nack_bytes = 0
        self.rtx_received = 0
        self.fec_recovered = 0
        self.red_recovered = 0

    @property
    def playout_delay(self) -> float:
        """Jitter-buffer target delay on top of the transit (see Subscriber._render_time):
        one RTT while NACKs are frequent (one in the last 10 s), else none."""
        return self._rtt if self._last_nack is not None else 0.0

    def bind(self, owner: _Counted, on_unrecoverable: Callable[[float], None]) -> None:
        self._owner = owner
        self._on_unrecoverable = on_unrecoverable

    def on_packet(self, data: bytes, now: float) -> list[bytes]:
        """The media packets (plain RTP on the media SSRCs) that `data` stands for."""
        if not self._reporting:
            self._reporting = True
            self._schedule(now + self.report_interval, self._report)
        hdr = parse_header(data)
        ssrc = hdr.ssrc
        if ssrc == rtx_ssrc(self.video_ssrc):
            self.rtx_received += 1
            _, original = unwrap(data, media_ssrc=self.video_ssrc, media_pt=VIDEO_PT)
            return [original, *self._fec_media(original, now)]
        if ssrc == fec_ssrc(self.video_ssrc):
            if self.fec_decoder is None:
                return []
            got = self.fec_decoder.on_flexfec(data, now)
            self.fec_recovered += len(got)
            return got
        self._count(ssrc, hdr.seq)
        if ssrc == self.audio_ssrc and hdr.payload_type == RED_PT:
            out = []
            for pt, ts, payload, redundant in self.red.decode(data, now):
                self.red_recovered += redundant
                out.append(build_packet(payload_type=pt, seq=hdr.seq, timestamp=ts, ssrc=ssrc,
                                        payload=payload))
            return out
        if ssrc == self.video_ssrc:
            return [data, *self._fec_media(data, now)]
        return [data]

    def _fec_media(self, data: bytes, now: float) -> list[bytes]:
        if self.fec_decoder is None:
            return []
        got = self.fec_decoder.on_media(data, now)
        self.fec_recovered += len(got)
        return got

    def on_video(self, seq: int, keyframe_start: bool, now: float) -> None:
        """A video seq not seen before reached the receiver (any way: original, RTX, FEC)."""
        if not self.nack:
            return
        self.generator.on_packet(seq, now, is_keyframe=keyframe_start)
        self._arm()

    def _arm(self) -> None:
        t = self.generator.get_timer()
        if t is not None and (self._armed is None or t < self._armed):
            self._armed = t
            self._schedule(t, self._fire)

    def _fire(self, now: float) -> None:
        if self._armed is not None and now < self._armed - 1e-12:
            return  # superseded by an earlier timer that already ran
        self._armed = None
        seqs = self.generator.handle_timer(now)
        if self._last_nack is not None and now - self._last_nack > 10.0:
            self._last_nack = None
        if seqs:
            self._last_nack = now
            data = rtcp.serialize_compound([rtcp.Nack(self.rtcp_ssrc, self.video_ssrc, seqs)])
            self.nack_bytes += len(data)
            if self._owner is not None:
                self._owner.nacks_sent += 1
            self._send(data, now)
        if self.generator.take_keyframe_request() and self._on_unrecoverable is not None:
            self._on_unrecoverable(now)
        self._arm()

    # --- receiver reports ----------------------------------------------------------------------

    def _count(self, ssrc: int, seq: int) -> None:
        st = self._rr.get(ssrc)
        if st is None:
            self._rr[ssrc] = [seq, 1, seq, 0]  # highest ext, received, highest at RR, recv at RR
            return
        diff = ((seq - st[0] + 0x8000) & 0xFFFF) - 0x8000
        if diff > 0:
            st[0] += diff
        st[1] += 1

    def _report(self, now: float) -> None:
        blocks = []
        for ssrc, st in self._rr.items():
            expected = st[0] - st[2]
            received = st[1] - st[3]
            lost = max(0, expected - received)
            fraction = min(255, lost * 256 // expected) if expected > 0 else 0
            st[2], st[3] = st[0], st[1]
            blocks.append(rtcp.ReportBlock(ssrc, fraction, 0, st[0] & 0xFFFF_FFFF, 0, 0, 0))
        if blocks:
            self._send(rtcp.serialize_compound([rtcp.ReceiverReport(self.rtcp_ssrc, blocks)]),
                       now)
        self._schedule(now + self.report_interval, self._report)


class Estimator(Protocol):
    """Downlink bandwidth estimation (TWCC/REMB driven), feeding layer selection."""

    name: str
    layer_switches: int

    def on_feedback(self, subscriber: str, packet: RtcpPacket, now: float) -> None: ...

    def target_bitrate(self, subscriber: str, now: float) -> float | None: ...


class NoEstimator:
    """No estimate: every subscriber gets the one layer the publisher sends."""

    name = "none"

    def __init__(self) -> None:
        self.layer_switches = 0

    def on_feedback(self, subscriber: str, packet: RtcpPacket, now: float) -> None:
        return None

    def target_bitrate(self, subscriber: str, now: float) -> float | None:
        return None
