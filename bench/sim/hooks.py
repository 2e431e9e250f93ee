"""Where loss recovery and bandwidth estimation plug into the simulated node (none exist yet).

The simulated node calls these at the same points the real node will: after a packet is
forwarded to a subscriber (History for NACK/RTX, FEC encoder), on subscriber RTCP other than
PLI (NACK, TWCC), and when choosing what to send (the estimator's target). The null versions
below do nothing, so reports say ``recovery: none`` and ``estimator: none`` honestly, with
zero overhead. A later implementation replaces them without touching the engine.
"""

from __future__ import annotations

from typing import Protocol

from sfu.wire.rtcp import RtcpPacket


class Recovery(Protocol):
    """Loss recovery on one down-track: NACK responder/RTX, FEC."""

    name: str
    rtx_packets: int
    fec_packets: int
    overhead_bytes: int

    def on_forwarded(self, subscriber: str, data: bytes, now: float) -> list[bytes]:
        """A media packet went to `subscriber`; extra packets (FEC) to send after it."""
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

    def on_forwarded(self, subscriber: str, data: bytes, now: float) -> list[bytes]:
        return []

    def on_feedback(self, subscriber: str, packet: RtcpPacket, now: float) -> list[bytes]:
        return []


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
