"""Allocator: splits one viewer's bandwidth estimate across that viewer's down-tracks.

Order of service:
1. audio first: every audio down-track gets its measured bitrate (default 64 kbit/s) whatever
   the estimate, because a frozen picture with sound is a stream and the reverse is not;
2. video by `priority` (higher first; e.g. the host's camera above a screen share): first every
   video track its lowest layer while it fits, in priority order, then each, in priority order,
   the highest layer that fits what is left. A track whose lowest layer does not fit is paused
   (`allocated_rank = -1`): video is paused before audio suffers.

Hysteresis, per video track, so a layer does not flap around a threshold:
* down at once: when the layer in force no longer fits (estimate below its bitrate);
* up only when the higher layer fits with `up_margin` to spare (x1.15) continuously for
  `up_hold` seconds; each down-switch within `flap_window` of an up-switch doubles that track's
  hold (up to `max_hold`), and a quiet `flap_window` restores it.

Layer bitrates are measured: the allocator samples each layer Receiver's byte counter
(`stats.bytes`) with a `RateMeter` when it runs, and falls back to `default_bitrates` for a
layer that never sent (and to at least that for a layer dynacast has paused, whose last
measurement may be stale). It writes `allocated_rank` on the down-tracks (the ceiling
`sfu.core.layers.choose_layer` applies) and returns an `Allocation`: what it gave, what was
available, what it would use with unlimited bandwidth, and the estimate that would let it
(`probe_goal`: what the estimator probes for).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sfu.core.bwe.meter import RateMeter
from sfu.core.downtrack import DownTrack
from sfu.core.layers import desired_rank

AUDIO_DEFAULT = 64_000.0
DEFAULT_BITRATES = (150_000.0, 500_000.0, 1_500_000.0)
UP_MARGIN = 1.15
UP_HOLD = 2.0
MAX_HOLD = 16.0
FLAP_WINDOW = 10.0
PAUSED = -1
KEEP_FRACTION = 0.5  # a running lowest layer stays while the estimate covers this share


@dataclass(slots=True)
class _Track:
    dt: DownTrack
    priority: int
    rank: int | None = None  # rank in force; None before the first allocation
    candidate: int | None = None  # a higher rank waiting out the hold
    candidate_since: float = 0.0
    hold: float = UP_HOLD
    last_up: float | None = None
    last_change: float | None = None
    changes: int = 0


@dataclass(slots=True)
class Allocation:
    available: float | None  # the estimate it divided (None: no estimate, no ceiling)
    allocated: float  # bits/s of what it gave
    desired: float  # bits/s with unlimited bandwidth (what probing should look for)
    ranks: dict[int, int] = field(default_factory=dict)  # down-track ssrc -> rank (-1 paused)
    changed: list[DownTrack] = field(default_factory=list)  # whose allocated_rank moved
    up_margin: float = UP_MARGIN

    @property
    def probe_goal(self) -> float:
        """What the estimate must reach before the desired layers are allowed up: `desired`
        with the up margin. Probing for `desired` alone would stop just short of it (an
        estimate of 1.05 x the top layer fits it but never lets the allocator move to it)."""
        return self.desired * self.up_margin

    @property
    def deficient(self) -> bool:
        return self.available is not None and self.allocated < self.desired - 1


class Allocator:
    """One viewer's allocation. Call `update(estimate, now)` on each estimate change or tick."""

    def __init__(
        self,
        *,
        up_margin: float = UP_MARGIN,
        up_hold: float = UP_HOLD,
        max_hold: float = MAX_HOLD,
        flap_window: float = FLAP_WINDOW,
        default_bitrates: tuple[float, ...] = DEFAULT_BITRATES,
        audio_default: float = AUDIO_DEFAULT,
    ) -> None:
        self.up_margin = up_margin
        self.up_hold = up_hold
        self.max_hold = max_hold
        self.flap_window = flap_window
        self.default_bitrates = default_bitrates
        self.audio_default = audio_default
        self._tracks: dict[int, _Track] = {}
        self._meters: dict[int, RateMeter] = {}  # id(Receiver) -> meter
        self.last: Allocation | None = None

    # --- membership ------------------------------------------------------------------------

    def add_track(self, dt: DownTrack, priority: int = 0) -> None:
        self._tracks[id(dt)] = _Track(dt, priority)

    def remove_track(self, dt: DownTrack) -> None:
        self._tracks.pop(id(dt), None)
        dt.allocated_rank = None

    def set_priority(self, dt: DownTrack, priority: int) -> None:
        self._tracks[id(dt)].priority = priority

    def changes(self, dt: DownTrack) -> int:
        """How many times this track's allocated rank moved."""
        return self._tracks[id(dt)].changes

    # --- measurement -----------------------------------------------------------------------

    def layer_bitrates(self, dt: DownTrack, now: float) -> list[float]:
        """Measured bits/s of each layer of `dt`'s track, lowest first."""
        receiver = dt.receiver
        if receiver is None:
            return []
        out: list[float] = []
        for i, layer in enumerate(receiver.ranked()):
            meter = self._meters.get(id(layer))
            if meter is None:
                meter = self._meters[id(layer)] = RateMeter()
            rate = meter.sample(layer.stats.bytes, now)
            if not rate:
                rate = meter.last_rate
            if layer.paused and dt.kind != "audio":
                # Dynacast stopped it: what the meter shows is decaying or from the
                # publisher's ramp-up; never count it below the nominal rate.
                d = self.default_bitrates
                rate = max(rate or 0.0, d[min(i, len(d) - 1)])
            if not rate:
                if dt.kind == "audio":
                    rate = self.audio_default
                else:
                    d = self.default_bitrates
                    rate = d[min(i, len(d) - 1)]
            out.append(rate)
        return out

    # --- allocation ------------------------------------------------------------------------

    def update(self, estimate: float | None, now: float) -> Allocation:
        tracks = [t for t in self._tracks.values() if t.dt.receiver is not None]
        audio = [t for t in tracks if t.dt.kind == "audio"]
        video = sorted((t for t in tracks if t.dt.kind != "audio"), key=lambda t: -t.priority)
        rates: dict[int, list[float]] = {id(t.dt): self.layer_bitrates(t.dt, now) for t in tracks}
        alloc = Allocation(available=estimate, allocated=0.0, desired=0.0,
                           up_margin=self.up_margin)
        for t in audio:
            r = rates[id(t.dt)][0]
            alloc.allocated += r
            alloc.desired += r
            alloc.ranks[t.dt.ssrc] = 0
        tops: dict[int, int] = {}
        for t in video:
            saved, t.dt.allocated_rank = t.dt.allocated_rank, None
            top = desired_rank(t.dt, t.dt.receiver.ranked())  # type: ignore[union-attr]
            t.dt.allocated_rank = saved
            tops[id(t)] = top
            alloc.desired += rates[id(t.dt)][top]
        if estimate is None:
            for t in video:
                self._set(t, tops[id(t)], now, alloc)
                alloc.allocated += rates[id(t.dt)][tops[id(t)]]
            self.last = alloc
            return alloc
        left = estimate - alloc.allocated
        # Pass 1: the lowest layer for each track, in priority order, while it fits. A paused
        # track needs the up margin to resume, a running one only needs to fit.
        chosen: dict[int, int] = {}
        for t in video:
            low = rates[id(t.dt)][0]
            running = t.rank is not None and t.rank >= 0
            need = low if running else low * self.up_margin
            # A running track is kept on its lowest layer while the estimate covers a good
            # part of it: random loss drags a loss-based estimate below the stream's rate,
            # and a paused picture is worse than a congested one.
            single = len(rates[id(t.dt)]) == 1
            if single:
                # Nothing lower to go to: pausing would only trade a congested picture for
                # none, and under random loss a loss-based estimate collapses far below the
                # rate the link actually carries. Keep it flowing.
                keep = True
            else:
                keep = left >= need or (running and left >= low * KEEP_FRACTION)
            if keep:
                chosen[id(t)] = 0
                left -= low
            else:
                chosen[id(t)] = PAUSED
        # Pass 2: upgrade in priority order.
        for t in video:
            if chosen[id(t)] < 0:
                continue
            layer_rates = rates[id(t.dt)]
            base = layer_rates[0]
            best = 0
            for r in range(1, tops[id(t)] + 1):
                extra = layer_rates[r] - base
                held = t.rank is not None and r <= t.rank
                need = extra if held else layer_rates[r] * self.up_margin - base
                if left >= need:
                    best = r
            left -= layer_rates[best] - base
            chosen[id(t)] = best
        for t in video:
            rank = self._hysteresis(t, chosen[id(t)], now)
            self._set(t, rank, now, alloc)
            if rank >= 0:
                alloc.allocated += rates[id(t.dt)][rank]
        self.last = alloc
        return alloc

    def _hysteresis(self, t: _Track, fits: int, now: float) -> int:
        current = t.rank
        if current is None or fits <= current:
            t.candidate = None
            return fits  # first allocation, or down at once
        # Going up: the higher rank must keep fitting for the hold time.
        if t.candidate is None or fits < t.candidate:
            t.candidate = fits
            t.candidate_since = now
        elif fits > t.candidate:
            t.candidate = fits  # keep the clock: it has fitted at least the old candidate
        if t.last_up is not None and now - t.last_up > self.flap_window:
            t.hold = self.up_hold
        # Resuming paused video waits only the base hold: a frozen picture costs more than a
        # flap, so the flap backoff applies to layer upgrades only.
        hold = self.up_hold if current < 0 else t.hold
        if now - t.candidate_since >= hold:
            t.candidate = None
            return fits
        return current

    def _set(self, t: _Track, rank: int, now: float, alloc: Allocation) -> None:
        previous = t.rank
        if previous is not None and rank != previous:
            t.changes += 1
            if rank > previous:
                t.last_up = now
            elif t.last_up is not None and now - t.last_up < self.flap_window:
                t.hold = min(self.max_hold, t.hold * 2)  # it went up and had to come down
            t.last_change = now
        t.rank = rank
        alloc.ranks[t.dt.ssrc] = rank
        if t.dt.kind != "audio" and t.dt.allocated_rank != rank:
            t.dt.allocated_rank = rank
            alloc.changed.append(t.dt)

    def stats(self) -> dict[str, Any]:
        a = self.last
        return {
            "available": None if a is None else a.available,
            "allocated": None if a is None else a.allocated,
            "desired": None if a is None else a.desired,
            "ranks": {} if a is None else dict(a.ranks),
        }
