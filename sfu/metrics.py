"""The node's counters, exported in Prometheus format.

The forwarding path bumps plain integers in dicts (a few nanoseconds); prometheus-client only
reads them when /metrics is scraped, through a custom collector. Each node owns its registry,
so several nodes can live in one process (tests, the bench).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

PREFIX = "sfu"

# Every drop reason the node counts; listed so a dashboard sees zeros, not missing series.
DROP_REASONS = (
    "garbage",
    "unknown_peer",
    "stun_malformed",
    "stun_integrity",
    "stun_unknown_user",
    "rtp_malformed",
    "rtcp_malformed",
    "srtp_unprotect",
    "unknown_ssrc",
    "not_connected",
    "codec_mismatch",
    "awaiting_keyframe",
    "send_error",
    "cascade_datagram_malformed",
    "cascade_datagram_unexpected",
    "cascade_control_malformed",
    "cascade_unknown_channel",
    "cascade_send_dropped",
)

CASCADE_EVENTS = (
    "packets_out", "bytes_out", "packets_in", "bytes_in", "nack_sent", "nacked_packets",
    "nack_received", "repair_sent", "repair_missing", "repaired", "repair_unneeded",
    "keyframe_sent", "keyframe_received", "reconnects", "connect_failed", "track_conflict",
)

BWE_BUCKETS = (50e3, 100e3, 200e3, 300e3, 500e3, 750e3, 1e6, 1.5e6, 2e6, 3e6, 5e6, 10e6)


class Histogram:
    """A fixed-bucket histogram kept as plain numbers (exported by the collector)."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        total = 0
        for le, n in zip((*self.buckets, float("inf")), self.counts, strict=True):
            total += n
            out.append(("+Inf" if le == float("inf") else repr(float(le)), total))
        return out


class NodeMetrics:
    """Counters and gauge sources for one node."""

    def __init__(self) -> None:
        self.packets_in: Counter[str] = Counter()
        self.bytes_in: Counter[str] = Counter()
        self.packets_out: Counter[str] = Counter()
        self.bytes_out: Counter[str] = Counter()
        self.drops: Counter[str] = Counter({r: 0 for r in DROP_REASONS})
        self.http_errors: Counter[str] = Counter()
        self.keyframe_requests: Counter[str] = Counter()  # requested / sent / suppressed / unaddressed
        self.sessions_total: Counter[str] = Counter()  # by kind: whip / whep / ws
        self.sessions_closed: Counter[str] = Counter()  # by reason
        self.layer_switch_requests = 0
        self.recovery: Counter[str] = Counter()  # NACK/RTX/RED events by name
        self.viewer_loss: dict[str, float] = {}  # last reported fraction lost, by kind
        self.twcc_feedback = 0  # transport-cc feedback messages sent to publishers
        # downlink bandwidth estimation: events (feedback, probes, pauses, state changes, ...)
        self.bwe: Counter[str] = Counter()
        self.bwe_estimate = Histogram(BWE_BUCKETS)  # per viewer, observed at each allocation
        # cascade (sfu.cascade): relayed packets/bytes in and out, upstream NACKs and
        # keyframe requests, repairs, reconnects; auth rejections by side (origin/edge)
        self.cascade: Counter[str] = Counter({e: 0 for e in CASCADE_EVENTS})
        self.cascade_auth_rejections: Counter[str] = Counter({"origin": 0, "edge": 0})
        self.gauges: dict[str, Callable[[], dict[tuple[str, ...], float]]] = {}
        self.gauge_labels: dict[str, tuple[str, ...]] = {}
        self.gauge_help: dict[str, str] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))

    def drop(self, reason: str) -> None:
        self.drops[reason] += 1

    def add_gauge(
        self,
        name: str,
        help_text: str,
        labels: tuple[str, ...],
        read: Callable[[], dict[tuple[str, ...], float]],
    ) -> None:
        self.gauges[name] = read
        self.gauge_labels[name] = labels
        self.gauge_help[name] = help_text

    def render(self) -> bytes:
        return generate_latest(self.registry)


def _counter(
    name: str, help_text: str, label: str, values: Counter[str]
) -> CounterMetricFamily:
    fam = CounterMetricFamily(f"{PREFIX}_{name}", help_text, labels=[label])
    for key, value in sorted(values.items()):
        fam.add_metric([key], value)
    return fam


class _Collector(Collector):
    def __init__(self, m: NodeMetrics) -> None:
        self.m = m

    def collect(self) -> Iterator[Metric]:
        m = self.m
        yield _counter("packets_in", "Datagrams received, by kind", "kind", m.packets_in)
        yield _counter("bytes_in", "Bytes received, by kind", "kind", m.bytes_in)
        yield _counter("packets_out", "Datagrams sent, by kind", "kind", m.packets_out)
        yield _counter("bytes_out", "Bytes sent, by kind", "kind", m.bytes_out)
        yield _counter("drops", "Packets or requests dropped, by reason", "reason", m.drops)
        yield _counter("http_errors", "HTTP requests refused, by status", "status", m.http_errors)
        yield _counter(
            "keyframe_requests", "Keyframe requests by outcome", "outcome", m.keyframe_requests
        )
        yield _counter("sessions", "Sessions created, by kind", "kind", m.sessions_total)
        yield _counter(
            "sessions_closed", "Sessions closed, by reason", "reason", m.sessions_closed
        )
        yield _counter("recovery", "Loss recovery events (NACKs, retransmits, ...)", "event",
                       m.recovery)
        switches = CounterMetricFamily(
            f"{PREFIX}_layer_switch_requests", "Simulcast layer changes requested for viewers"
        )
        switches.add_metric([], m.layer_switch_requests)
        yield switches
        twcc = CounterMetricFamily(
            f"{PREFIX}_twcc_feedback", "Transport-cc feedback messages sent to publishers"
        )
        twcc.add_metric([], m.twcc_feedback)
        yield twcc
        yield _counter("bwe_events", "Downlink bandwidth estimation events (feedback, probes, "
                       "pauses, layer moves, state changes)", "event", m.bwe)
        yield _counter("cascade_events", "Cascade relay events: packets/bytes relayed in and "
                       "out, upstream NACKs and keyframe requests, repairs, reconnects",
                       "event", m.cascade)
        yield _counter("cascade_auth_rejections", "Cascade links refused by the node-secret "
                       "handshake, by the side that refused", "side",
                       m.cascade_auth_rejections)
        h = m.bwe_estimate
        yield HistogramMetricFamily(
            f"{PREFIX}_bwe_estimate_bps", "Viewers' downlink estimates, bits/s (one sample "
            "per viewer and second)", buckets=h.cumulative(), sum_value=h.sum,
        )
        for name, read in m.gauges.items():
            fam = GaugeMetricFamily(
                f"{PREFIX}_{name}", m.gauge_help[name], labels=list(m.gauge_labels[name])
            )
            for labels, value in sorted(read().items()):
                fam.add_metric(list(labels), value)
            yield fam
