"""The commerce timeline beside a recording: JSON lines of the room's commerce events
(``product.card``, ``sale.*``, ``stock.updated``) with their media-time offsets, and a WebVTT
track of the pinned cards. Pure formatting; the recorder decides the times.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

TIMELINE_TYPES = frozenset(
    {"product.card", "sale.scheduled", "sale.started", "sale.ended", "stock.updated"}
)


@dataclass(slots=True)
class TimelineEvent:
    t: float  # media seconds (may be negative for an event just before media time 0)
    type: str
    at: float  # server wall clock (Unix seconds)
    data: dict[str, Any]
    source: str  # "rtp": placed by the card's video RTP timestamp; "clock": by arrival


def event_line(event: TimelineEvent) -> str:
    return json.dumps(
        {"t": round(event.t, 4), "type": event.type, "at": round(event.at, 4),
         "source": event.source, "data": event.data},
        separators=(",", ":"), sort_keys=True,
    ) + "\n"


def vtt_time(seconds: float) -> str:
    ms = max(0, round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


def card_text(data: dict[str, Any]) -> str:
    price = data.get("price_cents")
    amount = f"{price / 100:.2f} {data.get('currency', '')}".strip() if isinstance(
        price, int) else ""
    name = str(data.get("name", data.get("product_id", "")))
    return " - ".join(p for p in (name, amount) if p)


def webvtt(events: list[TimelineEvent], end: float) -> str:
    """One cue per pinned card, from its pin until the next pin (or `end`); the cue id names
    the product."""
    cards = sorted((e for e in events if e.type == "product.card"), key=lambda e: e.t)
    lines = ["WEBVTT", ""]
    for i, card in enumerate(cards):
        start = max(0.0, card.t)
        stop = cards[i + 1].t if i + 1 < len(cards) else end
        if stop <= start:
            continue
        lines += [
            f"card-{i + 1}-{card.data.get('product_id', '')}",
            f"{vtt_time(start)} --> {vtt_time(stop)}",
            card_text(card.data),
            "",
        ]
    return "\n".join(lines)
