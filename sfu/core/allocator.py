"""Allocator: splits one viewer's bandwidth estimate across that viewer's down-tracks.

Order of service:
1. audio first: every audio down-track gets its measured bitrate (default 64 kbit/s) whatever
   the estimate, because a frozen picture with sound is a stream and the reverse is not;
2. video by `priority` (higher first; e.g. the host's camera above a screen share): first every
   video track its lowest layer while it fits, in priority order, then each, in priority order,
   the highest layer that fits what is left. A track whose lowest layer does not fit is paused
   (`allocated_rank = -1`): video is paused before audio suffers.

Hysteresis, per video track, so a layer does not flap around a threshold:
* down at once when the layer in force no longer fits (estimate below its bitrate), unless
  the dip is shallow (the estimate still >= 0.8 x the allocation in force): then only once
  it has lasted 1 s or keeps deepening (below 0.95 x where it started). A key frame's delay
  spike makes GCC cut an application-limited viewer to 0.85 x its acknowledged rate and its
  probe restores the estimate within a second; a narrowing link cuts again and again;
* up only when the higher layer fits with `up_margin` to spare (x1.15) continuously for
  `up_hold` seconds; each down-switch within `flap_window` of an up-switch doubles that track's
  hold (up to `max_hold`), and a quiet `flap_window` restores it.

Steps (`temporal_steps`; the node's default is off, `--bwe-temporal-steps`): with VP8
temporal layers (TIDs in the payload descriptor; Chromium's VP8 simulcast
sends three per layer) each spatial layer is several steps, one per TID ceiling, at the
measured share of the layer's bytes up to that TID (libwebrtc's 40/60/100 % split until
measured). A viewer on a 1 Mbit/s link can then get the top layer at 15 fps (0.9 Mbit/s of a
1.5 Mbit/s layer) instead of the middle layer. Above the lowest layer no step goes below half
the frame rate (`MIN_FPS_SHARE`): 7.5 fps of a sharp picture is worse than 30 fps of the
next size down. Steps are ordered by (spatial rank, TID): resolution first. A temporal step
needs no key frame (the forwarder drops or admits upper-TID frames at frame starts), so it
costs nothing in either direction; the hysteresis above applies to it as to a layer.

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
from sfu.core.downtrack import MAX_TEMPORAL, DownTrack
from sfu.core.layers import desired_rank
from sfu.core.receiver import Receiver

AUDIO_DEFAULT = 64_000.0
DEFAULT_BITRATES = (150_000.0, 500_000.0, 1_500_000.0)
UP_MARGIN = 1.15
UP_HOLD = 1.5
MAX_HOLD = 16.0
FLAP_WINDOW = 10.0
PAUSED = -1
KEEP_FRACTION = 0.5  # a running lowest layer stays while the estimate covers this share
# A shallow dip (estimate still >= SHALLOW_DIP x what the allocation in force gives) moves a
# track down only once it has lasted DOWN_HOLD, unless it keeps deepening (FURTHER_DIP). A key
# frame's delay spike makes GCC cut an application-limited viewer to 0.85 x its acknowledged
# rate, and its probe restores the estimate within about a second; a down-switch (and the key
# frames of the way back up) would cost more than the dip. A deeper cut goes down at once.
SHALLOW_DIP = 0.8
DOWN_HOLD = 1.0
UP_GRACE = 1.5  # seconds after a spatial up-switch in which a dip is measured against before
FURTHER_DIP = 0.95  # an estimate falling below this x the one that started a dip ends the hold


MAX_TID = MAX_TEMPORAL  # the key's TID part for "every temporal layer"
# libwebrtc's cumulative share of a VP8 layer's bitrate up to each TID, by TID count
TEMPORAL_SHARES: dict[int, tuple[float, ...]] = {2: (0.6, 1.0), 3: (0.4, 0.6, 1.0),
                                                 4: (0.25, 0.4, 0.6, 1.0)}
MIN_FPS_SHARE = 0.5  # above the lowest spatial layer, no step under half the frame rate
Key = tuple[int, int]  # (spatial rank, TID ceiling or MAX_TID); (-1, 0) is paused
PAUSED_KEY: Key = (PAUSED, 0)


def offered_tids(rank: int, count: int, max_temporal: int = MAX_TEMPORAL) -> list[int]:
    """The TID ceilings a layer of `rank` with `count` TIDs is offered at: all of them on the
    lowest layer, none under half the frame rate above it, none above `max_temporal`."""
    top = min(count - 1, max_temporal)
    return [tid for tid in range(top + 1)
            if rank == 0 or 2.0 ** (tid - (count - 1)) >= MIN_FPS_SHARE]


@dataclass(slots=True, frozen=True)
class Step:
    """One thing the allocator can give a video track: a spatial layer up to a TID."""

    rank: int
    tid: int  # TID ceiling; MAX_TID: every temporal layer
    rate: float

    @property
    def key(self) -> Key:
        return (self.rank, self.tid)


@dataclass(slots=True)
class _Track:
    dt: DownTrack
    priority: int
    rank: Key | None = None  # step in force; None before the first allocation
    candidate: Key | None = None  # a higher step waiting out the hold
    candidate_since: float = 0.0
    down_since: float | None = None  # when a shallow dip first left the step in force
    down_estimate: float = 0.0  # the estimate when it did
    before_up: float = 0.0  # the viewer's whole allocation before the last spatial up-switch
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
        shallow_dip: float = SHALLOW_DIP,
        down_hold: float = DOWN_HOLD,
        temporal_steps: bool = False,
        default_bitrates: tuple[float, ...] = DEFAULT_BITRATES,
        audio_default: float = AUDIO_DEFAULT,
    ) -> None:
        self.up_margin = up_margin
        self.up_hold = up_hold
        self.max_hold = max_hold
        self.flap_window = flap_window
        self.shallow_dip = shallow_dip
        self.temporal_steps = temporal_steps
        self.down_hold = down_hold
        self.default_bitrates = default_bitrates
        self.audio_default = audio_default
        self._tracks: dict[int, _Track] = {}
        self._meters: dict[int, RateMeter] = {}  # id(Receiver) -> meter
        self._tid_meters: dict[tuple[int, int], RateMeter] = {}  # (id(Receiver), TID) -> meter
        self.last: Allocation | None = None

    # --- membership ------------------------------------------------------------------------

    def add_track(self, dt: DownTrack, priority: int = 0) -> None:
        self._tracks[id(dt)] = _Track(dt, priority, hold=self.up_hold)

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

    def temporal_shares(self, layer: Receiver, now: float) -> tuple[float, ...]:
        """Cumulative share of `layer`'s bytes up to each TID (measured; libwebrtc's split
        until every TID has been seen)."""
        count = layer.temporal_layers
        rates = []
        for tid in range(count):
            key = (id(layer), tid)
            meter = self._tid_meters.get(key)
            if meter is None:
                meter = self._tid_meters[key] = RateMeter()
            rate = meter.sample(layer.tid_bytes[tid], now) or meter.last_rate
            rates.append(rate or 0.0)
        total = sum(rates)
        if total <= 0 or any(r <= 0 for r in rates) or layer.paused:
            default = TEMPORAL_SHARES.get(count)
            if default is not None:
                return default
            return tuple((t + 1) / count for t in range(count))
        out, acc = [], 0.0
        for r in rates:
            acc += r
            out.append(acc / total)
        return tuple(out)

    def steps(self, dt: DownTrack, now: float) -> list[Step]:
        """What `dt` can be given, in quality order (spatial rank, then TID), with rates."""
        receiver = dt.receiver
        if receiver is None:
            return []
        rates = self.layer_bitrates(dt, now)
        if dt.kind == "audio":
            return [Step(0, MAX_TID, rates[0])]
        out: list[Step] = []
        for rank, layer in enumerate(receiver.ranked()):
            count = layer.temporal_layers if self.temporal_steps else 0
            if count <= 1:
                out.append(Step(rank, MAX_TID, rates[rank]))
                continue
            shares = self.temporal_shares(layer, now)
            for tid in offered_tids(rank, count, dt.max_temporal):
                out.append(Step(rank, MAX_TID if tid == count - 1 else tid,
                                rates[rank] * shares[tid]))
        return out

    # --- allocation ------------------------------------------------------------------------

    def update(self, estimate: float | None, now: float) -> Allocation:
        tracks = [t for t in self._tracks.values() if t.dt.receiver is not None]
        audio = [t for t in tracks if t.dt.kind == "audio"]
        video = sorted((t for t in tracks if t.dt.kind != "audio"), key=lambda t: -t.priority)
        steps: dict[int, list[Step]] = {id(t): self.steps(t.dt, now) for t in tracks}
        alloc = Allocation(available=estimate, allocated=0.0, desired=0.0,
                           up_margin=self.up_margin)
        for t in audio:
            r = steps[id(t)][0].rate
            alloc.allocated += r
            alloc.desired += r
            alloc.ranks[t.dt.ssrc] = 0
        tops: dict[int, int] = {}  # index of the best step the viewer wants
        for t in video:
            saved, t.dt.allocated_rank = t.dt.allocated_rank, None
            want = desired_rank(t.dt, t.dt.receiver.ranked())  # type: ignore[union-attr]
            t.dt.allocated_rank = saved
            tops[id(t)] = max(i for i, st in enumerate(steps[id(t)]) if st.rank <= want)
            alloc.desired += steps[id(t)][tops[id(t)]].rate
        if estimate is None:
            for t in video:
                top = steps[id(t)][tops[id(t)]]
                self._set(t, top.key, now, alloc)
                alloc.allocated += top.rate
            self.last = alloc
            return alloc
        left = estimate - alloc.allocated
        # Pass 1: the lowest step for each track, in priority order, while it fits. A paused
        # track needs the up margin to resume, a running one only needs to fit.
        chosen: dict[int, int] = {}  # index into the track's steps, -1 paused
        for t in video:
            low = steps[id(t)][0].rate
            running = t.rank is not None and t.rank[0] >= 0
            need = low if running else low * self.up_margin
            if len(t.dt.receiver.ranked()) == 1:  # type: ignore[union-attr]
                # Nothing lower to go to: pausing would only trade a congested picture for
                # none, and under random loss a loss-based estimate collapses far below the
                # rate the link actually carries. Keep it flowing.
                keep = True
            else:
                # A running track is kept on its lowest step while the estimate covers a
                # good part of it: random loss drags a loss-based estimate below the
                # stream's rate, and a paused picture is worse than a congested one.
                keep = left >= need or (running and left >= low * KEEP_FRACTION)
            if keep:
                chosen[id(t)] = 0
                left -= low
            else:
                chosen[id(t)] = -1
        # Pass 2: upgrade in priority order.
        for t in video:
            if chosen[id(t)] < 0:
                continue
            track_steps = steps[id(t)]
            base = track_steps[0].rate
            best = 0
            for i in range(1, tops[id(t)] + 1):
                st = track_steps[i]
                held = t.rank is not None and st.key <= t.rank
                need = st.rate - base if held else st.rate * self.up_margin - base
                if left >= need:
                    best = i
            left -= track_steps[best].rate - base
            chosen[id(t)] = best
        previous = self.last.allocated if self.last is not None else None
        shallow = previous is not None and estimate >= self.shallow_dip * previous
        for t in video:
            track_steps = steps[id(t)]
            i = chosen[id(t)]
            dip = shallow
            if (not dip and t.last_up is not None and now - t.last_up < UP_GRACE
                    and estimate >= self.shallow_dip * t.before_up):
                # Just after a spatial up-switch GCC's acknowledged rate is still the old
                # layer's: the new layer's key frame spike cuts the estimate to 0.85 x that,
                # far under the new allocation. Measure the dip against the allocation
                # before the switch.
                dip = True
            key = self._hysteresis(t, PAUSED_KEY if i < 0 else track_steps[i].key, now,
                                   dip, estimate)
            self._set(t, key, now, alloc)
            if key[0] >= 0:
                alloc.allocated += _rate_of(track_steps, key)
        self.last = alloc
        return alloc

    def _hysteresis(self, t: _Track, fits: Key, now: float, shallow: bool = False,
                    estimate: float | None = None) -> Key:
        current = t.rank
        if current is not None and fits < current and shallow and estimate is not None:
            t.candidate = None
            if t.down_since is None:
                t.down_since = now
                t.down_estimate = estimate
            # A dip that keeps deepening is a narrowing link, not a key frame's spike: GCC
            # cuts once per overuse and then holds, a shrinking capacity makes it cut again.
            deepening = estimate < FURTHER_DIP * t.down_estimate
            if now - t.down_since < self.down_hold and not deepening:
                return current  # a shallow dip: wait and see
        t.down_since = None  # no dip in progress from here on
        if current is None or fits <= current:
            t.candidate = None
            return fits  # first allocation, or down (at once, or after a lasting dip)
        # Going up: the higher step must keep fitting for the hold time.
        if t.candidate is None or fits < t.candidate:
            t.candidate = fits
            t.candidate_since = now
        elif fits > t.candidate:
            t.candidate = fits  # keep the clock: it has fitted at least the old candidate
        if t.last_up is not None and now - t.last_up > self.flap_window:
            t.hold = self.up_hold
        # Resuming paused video waits only the base hold: a frozen picture costs more than a
        # flap, so the flap backoff applies to spatial upgrades only (a temporal step within
        # the layer in force costs no key frame).
        hold = self.up_hold if current[0] < 0 or t.candidate[0] == current[0] else t.hold
        if now - t.candidate_since >= hold:
            t.candidate = None
            return fits
        return current

    def _set(self, t: _Track, key: Key, now: float, alloc: Allocation) -> None:
        previous = t.rank
        if previous is not None and key != previous:
            t.changes += 1
            if key[0] > previous[0]:
                t.last_up = now
                t.before_up = self.last.allocated if self.last is not None else 0.0
            elif (key[0] < previous[0] and t.last_up is not None
                  and now - t.last_up < self.flap_window):
                # it went up a spatial layer and had to come down
                t.hold = min(self.max_hold, t.hold * 2)
            t.last_change = now
        t.rank = key
        rank, tid = key
        alloc.ranks[t.dt.ssrc] = rank
        if t.dt.kind == "audio":
            return
        cap = None if tid >= MAX_TID else tid
        if t.dt.allocated_rank != rank or t.dt.allocated_temporal != cap:
            t.dt.allocated_rank = rank
            t.dt.allocated_temporal = cap
            alloc.changed.append(t.dt)

    def stats(self) -> dict[str, Any]:
        a = self.last
        return {
            "available": None if a is None else a.available,
            "allocated": None if a is None else a.allocated,
            "desired": None if a is None else a.desired,
            "ranks": {} if a is None else dict(a.ranks),
        }


def _rate_of(steps: list[Step], key: Key) -> float:
    """The rate of step `key`, or of the best step below it when the steps changed (a layer
    stopped or its temporal layers were learnt since it was chosen)."""
    rate = steps[0].rate
    for st in steps:
        if st.key <= key:
            rate = st.rate
    return rate
