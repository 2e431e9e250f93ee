"""Which simulcast layer each viewer should get, and which layers anyone needs at all.

Three things cap a viewer's layer:
1. its preference (`low`/`mid`/`high`, rank 0-2),
2. the largest size it renders,
3. the bandwidth allocator's ceiling (set through `DownTrack.allocated_rank`).

The result is clamped to the layers actually arriving. When the wanted layer stops (a
publisher drops its top layer on a weak uplink), the viewer falls back to the best lower
layer, or the lowest higher one. When the layer comes back, the same rule moves the viewer up
again. Pure functions of the track, the down-track and `now`.
"""

from __future__ import annotations

from collections.abc import Iterable

from sfu.core.downtrack import DownTrack
from sfu.core.receiver import Receiver

RANKS = {"low": 0, "mid": 1, "high": 2}


def parse_rank(name: str) -> int:
    """`low`/`mid`/`high` (also `l`/`m`/`h`, `q`/`f`, 0-2) to a rank; ValueError otherwise."""
    key = name.strip().lower()
    aliases = {"l": "low", "q": "low", "m": "mid", "h": "high", "f": "high", "medium": "mid",
               "0": "low", "1": "mid", "2": "high"}
    key = aliases.get(key, key)
    if key not in RANKS:
        raise ValueError(f"unknown layer {name!r}: use low, mid or high")
    return RANKS[key]


def desired_rank(dt: DownTrack, ranked: list[Receiver]) -> int:
    """The highest rank the viewer should get if every layer were arriving."""
    want = len(ranked) - 1
    if dt.preferred_rank is not None:
        want = min(want, dt.preferred_rank)
    if dt.max_size is not None:
        width, height = dt.max_size
        sizes = _estimated_sizes(ranked)
        if any(s is not None for s in sizes):
            fitting = [i for i, s in enumerate(sizes) if s is not None and s[0] <= width
                       and s[1] <= height]
            want = min(want, max(fitting) if fitting else 0)
    if dt.allocated_rank is not None:
        want = min(want, max(dt.allocated_rank, 0))
    return max(want, 0)


def _estimated_sizes(ranked: list[Receiver]) -> list[tuple[int, int] | None]:
    """Frame sizes by rank; a layer not seen yet is guessed from the nearest known one.

    Without the guess, a paused layer (dynacast) would never show its size and so would never
    count as fitting. Simulcast layers are conventionally a factor of 2 apart.
    """
    sizes = [la.frame_size for la in ranked]
    known = [(i, s) for i, s in enumerate(sizes) if s is not None]
    if not known:
        return sizes
    out: list[tuple[int, int] | None] = []
    for i, size in enumerate(sizes):
        if size is None:
            j, (w, h) = min(known, key=lambda k: abs(k[0] - i))
            factor = 2.0 ** (i - j)
            size = (round(w * factor), round(h * factor))
        out.append(size)
    return out


def choose_layer(dt: DownTrack, track: Receiver, now: float) -> Receiver:
    """The layer `dt` should forward now (the wanted one, or the nearest that is arriving)."""
    ranked = track.ranked()
    want = desired_rank(dt, ranked)
    live = [la.available(now) for la in ranked]
    for i in range(want, -1, -1):
        if live[i]:
            return ranked[i]
    for i in range(want + 1, len(ranked)):
        if live[i]:
            return ranked[i]
    return ranked[want]  # nothing arriving yet: wait for the wanted one


def needed_layers(track: Receiver, downtracks: Iterable[DownTrack]) -> set[int]:
    """Indices (SDP order) of the layers some viewer wants, forwards or waits for (dynacast)."""
    ranked = track.ranked()
    needed: set[int] = set()
    for dt in downtracks:
        needed.add(ranked[desired_rank(dt, ranked)].layer)
        for la in (dt.current, dt.pending):
            if la is not None:
                needed.add(la.layer)
    return needed
