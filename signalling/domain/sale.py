"""Timed sales: the window during which a product can be ordered, and how hosts move it.

A sale's state is a pure function of its window and the server clock, so every node, store
and viewer that knows ``starts_at``/``ends_at`` (server Unix seconds) agrees on it without
being told when it flips:

    now <  starts_at            -> "scheduled"
    starts_at <= now < ends_at  -> "open"
    ends_at <= now              -> "ended"

Manual control is expressed as rewriting the window, never as a stored flag, so the rule
above stays the only source of truth (and the stores can evaluate it atomically with an
order):

| state now  | start(sale, now)               | stop(sale, now)              |
|------------|--------------------------------|------------------------------|
| scheduled  | starts_at := now  -> open      | SaleTransitionError          |
| open       | unchanged (idempotent)         | ends_at := now   -> ended    |
| ended      | SaleTransitionError            | unchanged (idempotent)       |

Repeating a command that already took effect is a no-op because hosts double-click and
retry over lossy links; the commands that make no sense (reviving an ended sale, stopping
one that never ran) are errors so the host sees them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

from signalling.domain.catalog import CatalogError, check_id

SaleState = Literal["scheduled", "open", "ended"]

# Upper bound for timestamps (year ~2286): keeps garbage and infinities out of the stores.
MAX_TIMESTAMP = 10_000_000_000.0


class SaleTransitionError(ValueError):
    """A start/stop command that is not allowed from the sale's current state."""


@dataclass(frozen=True, slots=True)
class Sale:
    """A sale window for one product in one room; times are server Unix seconds."""

    id: str
    room: str
    product_id: str
    starts_at: float
    ends_at: float

    def __post_init__(self) -> None:
        check_id(self.id, "sale id")
        check_id(self.room, "room")
        check_id(self.product_id, "product id")
        for name in ("starts_at", "ends_at"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or not 0 <= value <= MAX_TIMESTAMP
            ):
                raise CatalogError(f"{name} must be a Unix timestamp in seconds")
        # Equal is allowed: it is what stop() produces when a sale is stopped the instant it
        # was started (an empty window, "ended" at once).
        if self.ends_at < self.starts_at:
            raise CatalogError("ends_at must not be before starts_at")


def sale_state(sale: Sale, now: float) -> SaleState:
    if now < sale.starts_at:
        return "scheduled"
    if now < sale.ends_at:
        return "open"
    return "ended"


def start(sale: Sale, now: float) -> Sale:
    """Open the sale now (see the table in the module docstring)."""
    state = sale_state(sale, now)
    if state == "scheduled":
        return replace(sale, starts_at=now)
    if state == "open":
        return sale
    raise SaleTransitionError(f"sale {sale.id} has ended and cannot be started again")


def stop(sale: Sale, now: float) -> Sale:
    """End the sale now (see the table in the module docstring)."""
    state = sale_state(sale, now)
    if state == "open":
        return replace(sale, ends_at=now)
    if state == "ended":
        return sale
    raise SaleTransitionError(f"sale {sale.id} has not started; reschedule it instead")
