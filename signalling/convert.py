"""Conversions between the domain values and the wire messages, in one place.

The domain (``signalling.domain``) knows nothing about JSON and the protocol
(``signalling.messages``) knows nothing about rules; the service uses these functions at the
boundary so that field mappings are written once and tested once.
"""

from __future__ import annotations

from typing import Any

from signalling import messages as m
from signalling.domain.cart import Cart
from signalling.domain.catalog import Product
from signalling.domain.orders import OrderRequest, OrderResult
from signalling.domain.sale import Sale, sale_state


def order_request(msg: m.OrderPlace, *, viewer: str, room: str) -> OrderRequest:
    """``viewer`` and ``room`` come from the sender's verified token, never from the message."""
    return OrderRequest(
        viewer=viewer,
        room=room,
        sale_id=msg.sale_id,
        product_id=msg.product_id,
        quantity=msg.quantity,
        idempotency_key=msg.idempotency_key,
    )


def order_result(result: OrderResult, seq: int | None = None) -> m.OrderResultMessage:
    return m.OrderResultMessage(
        idempotency_key=result.idempotency_key,
        status=result.status,
        order_id=result.order_id,
        quantity=result.quantity,
        remaining=result.remaining,
        seq=seq,
    )


def rate_limited(msg: m.OrderPlace, seq: int | None = None) -> m.OrderResultMessage:
    """The answer to an order refused by the viewer's token bucket (never stored)."""
    return m.OrderResultMessage(
        idempotency_key=msg.idempotency_key, status="rate_limited", quantity=msg.quantity, seq=seq
    )


def product_card(
    product: Product,
    *,
    stock: int,
    pinned_at: float,
    pinned_at_rtp: int | None = None,
    seq: int | None = None,
) -> m.ProductCard:
    return m.ProductCard(
        product_id=product.id,
        name=product.name,
        price_cents=product.price_cents,
        currency=product.currency,
        image_url=product.image_url,
        stock=stock,
        pinned_at_rtp=pinned_at_rtp,
        pinned_at=pinned_at,
        seq=seq,
    )


def sale_event(
    sale: Sale, *, stock: int, now: float, seq: int | None = None
) -> m.SaleScheduled | m.SaleStarted | m.SaleEnded:
    """The ``sale.*`` message matching the sale's state at ``now``."""
    fields: dict[str, Any] = {
        "sale_id": sale.id,
        "product_id": sale.product_id,
        "starts_at": sale.starts_at,
        "ends_at": sale.ends_at,
        "stock": stock,
        "seq": seq,
    }
    state = sale_state(sale, now)
    if state == "scheduled":
        return m.SaleScheduled(**fields)
    if state == "open":
        return m.SaleStarted(**fields)
    return m.SaleEnded(**fields)


def sale_info(sale: Sale, now: float) -> m.SaleInfo:
    return m.SaleInfo(
        sale_id=sale.id,
        product_id=sale.product_id,
        starts_at=sale.starts_at,
        ends_at=sale.ends_at,
        state=sale_state(sale, now),
    )


def cart_lines(cart: Cart) -> list[m.CartLine]:
    return [m.CartLine(product_id=line.product_id, quantity=line.quantity) for line in cart.lines()]


def cart_updated(cart: Cart, seq: int | None = None) -> m.CartUpdated:
    return m.CartUpdated(lines=cart_lines(cart), seq=seq)


def clock_pong(ping: m.ClockPing, server_time: float) -> m.ClockPong:
    """Answer a ping; ``server_time`` is read as late as possible before sending."""
    return m.ClockPong(id=ping.id, client_time=ping.client_time, server_time=server_time)
