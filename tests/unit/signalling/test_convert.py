"""Domain values become valid wire messages (they re-decode and carry the right fields)."""

from __future__ import annotations

from signalling import convert
from signalling import messages as m
from signalling.domain.cart import Cart
from signalling.domain.catalog import Product
from signalling.domain.orders import OrderResult
from signalling.domain.sale import Sale

SALE = Sale(id="s1", room="r1", product_id="p1", starts_at=100.0, ends_at=200.0)


def wire_trip(msg: m.Message) -> m.Message:
    return m.decode_server_message(m.encode(msg))


def test_order_place_to_request_uses_the_token_identity() -> None:
    msg = m.OrderPlace(idempotency_key="k", product_id="p1", quantity=2, sale_id="s1")
    req = convert.order_request(msg, viewer="alice", room="r1")
    assert (req.viewer, req.room, req.quantity, req.idempotency_key) == ("alice", "r1", 2, "k")
    limited = convert.rate_limited(msg, seq=4)
    assert (limited.status, limited.quantity, limited.seq) == ("rate_limited", 2, 4)


def test_order_result() -> None:
    out = convert.order_result(OrderResult("k", "confirmed", 2, "o_1", 8), seq=3)
    assert wire_trip(out) == out
    assert (out.order_id, out.remaining, out.seq) == ("o_1", 8, 3)


def test_sale_event_follows_the_state() -> None:
    assert isinstance(convert.sale_event(SALE, stock=5, now=50.0), m.SaleScheduled)
    started = convert.sale_event(SALE, stock=5, now=150.0)
    assert isinstance(started, m.SaleStarted) and wire_trip(started) == started
    assert isinstance(convert.sale_event(SALE, stock=0, now=250.0), m.SaleEnded)
    assert convert.sale_info(SALE, 150.0).state == "open"


def test_card_cart_and_pong() -> None:
    p = Product("p1", "r1", "Hat", 1999, "EUR", "https://x/h.png", 10)
    card = convert.product_card(p, stock=7, pinned_at=123.5, pinned_at_rtp=9000)
    assert wire_trip(card) == card and card.price_cents == 1999
    cart = Cart()
    cart.add("p1", 2)
    updated = convert.cart_updated(cart)
    assert wire_trip(updated) == updated
    snap = m.Snapshot(
        card=card, sale=convert.sale_info(SALE, 1.0), stock=7, cart=convert.cart_lines(cart)
    )
    assert wire_trip(snap) == snap
    pong = convert.clock_pong(m.ClockPing(id=3, client_time=-1.5), 1000.25)
    assert wire_trip(pong) == pong
