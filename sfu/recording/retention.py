"""Retention policy: which finished recordings are old enough to delete. Pure: `now` is given,
so a test drives it with a virtual clock; the node's periodic task applies it."""

from __future__ import annotations

from collections.abc import Iterable

from sfu.recording.storage import RecordingMeta

DAY = 86400.0


def expired(recordings: Iterable[RecordingMeta], now: float, days: float) -> list[str]:
    """Ids of recordings that ended at least `days` days before `now` (0 or less: keep all).

    A recording still being written is never expired; one that never recorded an end (the
    node died mid-recording) ages from its start.
    """
    if days <= 0:
        return []
    horizon = now - days * DAY
    out = []
    for meta in recordings:
        if meta.state == "recording":
            continue
        ended = meta.ended_at if meta.ended_at is not None else meta.started_at
        if ended <= horizon:
            out.append(meta.id)
    return out
