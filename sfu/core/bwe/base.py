"""The estimator interface every downlink bandwidth estimator implements, and its registry.

One estimator serves one viewer (one transport). Like aioquic's congestion controllers it is a
plain object behind an ABC, picked by name from a registry (`register`/`create`), so the node
can serve viewers that negotiated transport-cc with `gcc`, viewers that only send REMB with
`remb`, and anything else with `null` (LiveKit's null_bwe: no estimate, no layer ceiling).

Sans-I/O: every input carries `now` (seconds, any monotonic clock); the shell calls
`handle_timer(now)` at `get_timer()`. Nothing here imports asyncio, socket or time.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sfu.wire.twcc import TransportFeedback

NORMAL = "normal"
OVERUSING = "overusing"
UNDERUSING = "underusing"


@dataclass(frozen=True, slots=True)
class ProbeCluster:
    """A burst the pacer sends at `bitrate` to measure the path: at least `min_packets`
    packets and `min_bytes` bytes over about `duration` seconds. Media fills it first;
    padding (or RTX of recent packets) makes up the rest. Every packet sent for it is reported
    back through `on_packet_sent(..., probe_cluster=id)`."""

    id: int
    bitrate: float  # bits/s
    min_packets: int
    min_bytes: int
    duration: float  # seconds


class Estimator(ABC):
    """Downlink bandwidth estimate for one viewer.

    Inputs (all optional for an implementation; the defaults ignore them):
    `on_packet_sent` per packet put on the wire with a transport-wide sequence number,
    `on_feedback` per transport-cc message, `on_remb` per REMB, `on_loss_report` per RTCP
    receiver report's fraction lost, `set_desired_bitrate` when the allocator would use more.
    Outputs: `target_bitrate` (bits/s, what the allocator may spend), `state`, and
    `pop_probes()` (clusters for the pacer).
    """

    name: str = "abstract"

    def on_packet_sent(
        self, transport_seq: int, size: int, now: float, probe_cluster: int | None = None
    ) -> None:
        """A packet of `size` bytes carrying `transport_seq` (16 bits) left for the viewer."""
        return None

    def on_packets_sent(self, packets: list[tuple[int, int, float, int | None]]) -> None:
        """Several `on_packet_sent` calls at once: (transport_seq, size, now, probe_cluster)
        in send order. The node batches what it sends between feedbacks and timers (the
        per-packet call is the costly part of numbering); an implementation may override
        this with a tighter loop, with the same result as the calls one by one."""
        for seq, size, now, cluster in packets:
            self.on_packet_sent(seq, size, now, cluster)

    def on_feedback(self, feedback: TransportFeedback, now: float) -> None:
        """A transport-cc feedback message from the viewer arrived at `now`."""
        return None

    def on_remb(self, bitrate: float, now: float) -> None:
        """The viewer's receive-side estimate (REMB), bits/s."""
        return None

    def on_loss_report(self, fraction_lost: float, now: float) -> None:
        """Fraction lost (0..1) from an RTCP receiver report block for this viewer."""
        return None

    def on_rtt(self, rtt: float, now: float) -> None:
        """A round-trip time measurement (seconds), e.g. from RR LSR/DLSR."""
        return None

    def set_desired_bitrate(self, bitrate: float, now: float) -> None:
        """What the allocator would spend if it could (drives probing); bits/s."""
        return None

    def set_send_rate(self, bitrate: float, now: float) -> None:
        """What the allocation forwards (bits/s), after each allocation."""
        return None

    def pop_probes(self) -> list[ProbeCluster]:
        """Probe clusters to hand to the pacer now (each returned once)."""
        return []

    def padding_rate(self) -> float:
        """Bits/s the pacer should keep the link at with padding when media is below it
        (a receive-side estimate only grows with what arrives); 0 for none."""
        return 0.0

    @property
    @abstractmethod
    def target_bitrate(self) -> float | None:
        """Bits/s the viewer's downlink should carry, or None for "no estimate"."""

    @property
    def state(self) -> str:
        """`normal`, `overusing` or `underusing` (the delay detector's view)."""
        return NORMAL

    def get_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        return None

    def stats(self) -> dict[str, Any]:
        """Counters and internal values for metrics and the bench."""
        return {"name": self.name, "target_bitrate": self.target_bitrate, "state": self.state}


class NullEstimator(Estimator):
    """No estimate at all: the allocator leaves every down-track at its preferred layer."""

    name = "null"

    @property
    def target_bitrate(self) -> float | None:
        return None


Factory = Callable[..., Estimator]
_REGISTRY: dict[str, Factory] = {}


def register(name: str, factory: Factory) -> None:
    """Make `create(name, **kwargs)` build `factory(**kwargs)`. Re-registering replaces."""
    if not name:
        raise ValueError("estimator name must not be empty")
    _REGISTRY[name] = factory


def create(name: str, **kwargs: Any) -> Estimator:
    """A new estimator by registered name; ValueError naming the known ones otherwise."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise ValueError(f"unknown estimator {name!r}: known are {known}") from None
    return factory(**kwargs)


def available() -> list[str]:
    """Registered estimator names, sorted."""
    return sorted(_REGISTRY)


register("null", NullEstimator)
