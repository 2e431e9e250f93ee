"""Orders against limited stock: the request, the result, and the one rule deciding it.

``decide`` is the whole business rule as a pure function. The stores do not reimplement it
loosely: SQLite calls it inside its write transaction and Redis mirrors it line by line in
a Lua script, and the contract tests hold both to the same outcomes.

Outcomes, checked in this order (the first that applies wins):

1. ``invalid``: the request breaks a shape rule (``validate_request``), or names a sale
   that does not exist, belongs to another room, or sells another product;
2. ``sale_not_open``: ``now < starts_at``;
3. ``sale_ended``: ``now >= ends_at``;
4. ``sold_out``: fewer than ``quantity`` items remain (``remaining`` tells how many, so a
   client may retry with a smaller quantity under a new key);
5. ``confirmed``: ``remaining`` is the stock after this order.

``rate_limited`` is never decided here: the service answers it before reaching the store.

Idempotency: a result is keyed by ``(viewer, idempotency_key)``. Whatever the store decided
for a key (any status but a shape-``invalid`` one, which never reaches storage) is recorded
with it and returned unchanged for every later request with that key, even if the later
request differs or the sale has since changed. A client therefore makes a new key per
purchase attempt and reuses it only for retries of that attempt.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final, Literal

from signalling.domain.catalog import is_valid_id
from signalling.domain.sale import Sale, sale_state

OrderStatus = Literal[
    "confirmed", "sold_out", "sale_not_open", "sale_ended", "invalid", "rate_limited"
]
ORDER_STATUSES: Final[tuple[OrderStatus, ...]] = (
    "confirmed",
    "sold_out",
    "sale_not_open",
    "sale_ended",
    "invalid",
    "rate_limited",
)
MAX_ORDER_QUANTITY: Final = 10


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """One purchase attempt. ``viewer`` is the authenticated identity (from the token, never
    from the message) and scopes the idempotency key; ``room`` is the viewer's room."""

    viewer: str
    room: str
    sale_id: str
    product_id: str
    quantity: int
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class OrderResult:
    """What the viewer is told. ``order_id`` is set only when confirmed; ``remaining`` is the
    stock after the decision when the store knew it."""

    idempotency_key: str
    status: OrderStatus
    quantity: int
    order_id: str | None = None
    remaining: int | None = None


@dataclass(frozen=True, slots=True)
class Order:
    """A confirmed order as the stores list it."""

    order_id: str
    viewer: str
    room: str
    sale_id: str
    product_id: str
    quantity: int
    idempotency_key: str
    created_at: float


def validate_request(request: OrderRequest) -> str | None:
    """The reason the request is malformed, or None if its shape is fine."""
    for name in ("viewer", "room", "sale_id", "product_id", "idempotency_key"):
        if not is_valid_id(getattr(request, name)):
            return f"{name} must be 1-64 characters of A-Z a-z 0-9 . _ : -"
    if type(request.quantity) is not int or not 1 <= request.quantity <= MAX_ORDER_QUANTITY:
        return f"quantity must be an integer in 1..{MAX_ORDER_QUANTITY}"
    return None


def invalid(request: OrderRequest) -> OrderResult:
    quantity = request.quantity if type(request.quantity) is int else 0
    return OrderResult(request.idempotency_key, "invalid", quantity)


def decide(sale: Sale | None, stock: int, request: OrderRequest, now: float) -> OrderResult:
    """Decide ``request`` against the sale it names and the product's current ``stock``.

    A confirmed result has ``order_id=None``: the store assigns the id when it records the
    order (``with_order_id``)."""
    if validate_request(request) is not None:
        return invalid(request)
    if (
        sale is None
        or sale.id != request.sale_id
        or sale.room != request.room
        or sale.product_id != request.product_id
    ):
        return invalid(request)
    state = sale_state(sale, now)
    if state == "scheduled":
        return OrderResult(request.idempotency_key, "sale_not_open", request.quantity)
    if state == "ended":
        return OrderResult(request.idempotency_key, "sale_ended", request.quantity)
    if stock < request.quantity:
        return OrderResult(request.idempotency_key, "sold_out", request.quantity, remaining=stock)
    return OrderResult(
        request.idempotency_key, "confirmed", request.quantity, remaining=stock - request.quantity
    )


def with_order_id(result: OrderResult, order_id: str) -> OrderResult:
    return replace(result, order_id=order_id)
