"""Gauges over viewers for /metrics: what loss recovery is doing towards them right now.

Read only when /metrics is scraped (sfu.metrics calls them), so walking every viewer's
down-tracks here costs the forwarding path nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sfu.core.downtrack import DownTrack
    from sfu.net.peer import Peer

MAX_DISTANCE_LABEL = 12  # RED distances above this share one label ("12+")


def _downtracks(peers: Iterable[Peer]) -> Iterable[DownTrack]:
    for peer in peers:
        if peer.state != "connected":
            continue
        for slot in peer.slots:
            if slot.downtrack.bound:
                yield slot.downtrack


def red_distance_gauge(peers: Iterable[Peer]) -> dict[tuple[str, ...], float]:
    """Audio viewers with RED by the distance in use (the node's adaptive one, or the
    publisher's when its RED is passed through)."""
    out: dict[tuple[str, ...], float] = {("0",): 0, ("1",): 0}
    for dt in _downtracks(peers):
        if dt.red is not None:
            d = dt.red.distance_in_use
            key = (str(d) if d < MAX_DISTANCE_LABEL else f"{MAX_DISTANCE_LABEL}+",)
            out[key] = out.get(key, 0) + 1
    return out


def fec_gauge(peers: Iterable[Peer]) -> dict[tuple[str, ...], float]:
    """Video viewers that negotiated red+ulpfec: `protecting` (FEC on now) or `idle`."""
    out: dict[tuple[str, ...], float] = {("protecting",): 0, ("idle",): 0}
    for dt in _downtracks(peers):
        if dt.fec is not None:
            out[("protecting",) if dt.fec.protection > 0 else ("idle",)] += 1
    return out


def loss_gauge(peers: Iterable[Peer]) -> dict[tuple[str, ...], float]:
    """Viewers' loss, mean over viewers by kind. `link`: the fraction their last receiver
    report gave (before any repair: RTX-repaired and FEC-recovered packets do not count as
    received in RTCP). `unrepaired` (video with NACK): the share of packets sent whose NACK
    the node could not answer (gone from History, or over the retransmission budget), the
    node's view of the residual loss (a lower bound: FEC repairs are invisible to it, and a
    lost retransmission is NACKed and answered again)."""
    link: dict[str, list[float]] = {"audio": [], "video": []}
    unrepaired: list[float] = []
    for dt in _downtracks(peers):
        if dt.loss is not None:
            link[dt.kind].append(dt.loss)
        r = dt.responder
        if r is not None and dt.stats.packet_count:
            unrepaired.append((r.not_found + r.suppressed_budget) / dt.stats.packet_count)
    out: dict[tuple[str, ...], float] = {}
    for kind, values in link.items():
        out[(kind, "link")] = sum(values) / len(values) if values else 0.0
    out[("video", "unrepaired")] = sum(unrepaired) / len(unrepaired) if unrepaired else 0.0
    return out
