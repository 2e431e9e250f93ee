"""Token bucket under a virtual clock, and the bounded cart."""

from __future__ import annotations

import pytest

from signalling.domain.cart import Cart, CartError, CartLine
from signalling.domain.ratelimit import TokenBucket


def test_burst_then_steady_rate() -> None:
    bucket = TokenBucket(rate_per_s=2.0, burst=5)
    assert [bucket.allow(0.0) for _ in range(6)] == [True] * 5 + [False]
    assert not bucket.allow(0.49)  # 0.98 tokens
    assert bucket.allow(0.5)
    assert not bucket.allow(0.5)
    assert bucket.retry_after(0.5) == pytest.approx(0.5)
    # Over 10 s at 2/s: 20 events, never more, however often the viewer tries.
    allowed = sum(bucket.allow(0.5 + i * 0.01) for i in range(1, 1001))
    assert allowed == 20


def test_refill_caps_at_burst() -> None:
    bucket = TokenBucket(rate_per_s=1.0, burst=3)
    for _ in range(3):
        bucket.allow(0.0)
    assert bucket.tokens(1000.0) == 3


def test_clock_going_backwards_refills_nothing() -> None:
    bucket = TokenBucket(rate_per_s=1.0, burst=1)
    assert bucket.allow(100.0)
    assert not bucket.allow(50.0)
    assert not bucket.allow(100.5)
    assert bucket.allow(101.0)


def test_cost_and_bad_parameters() -> None:
    bucket = TokenBucket(rate_per_s=1.0, burst=4)
    assert bucket.allow(0.0, cost=3)
    assert not bucket.allow(0.0, cost=2)
    for rate, burst in [(0.0, 1.0), (1.0, 0.5), (float("inf"), 1.0)]:
        with pytest.raises(ValueError):
            TokenBucket(rate, burst)


def test_cart_add_remove() -> None:
    cart = Cart()
    cart.add("p1", 2)
    cart.add("p2", 1)
    cart.add("p1", 3)
    assert cart.lines() == (CartLine("p1", 5), CartLine("p2", 1))
    cart.remove("p1", 4)
    assert cart.quantity("p1") == 1
    cart.remove("p2", 99)  # more than present empties the line
    assert cart.lines() == (CartLine("p1", 1),)
    cart.clear()
    assert len(cart) == 0


def test_cart_limits_are_all_or_nothing() -> None:
    cart = Cart(max_lines=2, max_quantity=10)
    cart.add("a", 9)
    with pytest.raises(CartError) as info:
        cart.add("a", 2)
    assert info.value.code == "quantity_limit" and cart.quantity("a") == 9
    cart.add("b", 1)
    with pytest.raises(CartError) as info:
        cart.add("c", 1)
    assert info.value.code == "cart_full"
    cart.add("b", 1)  # an existing line may still grow
    assert len(cart) == 2


@pytest.mark.parametrize(("pid", "qty"), [("", 1), ("bad id", 1), ("p", 0), ("p", -1)])
def test_cart_rejects_bad_edits(pid: str, qty: int) -> None:
    with pytest.raises(CartError) as info:
        Cart().add(pid, qty)
    assert info.value.code == "invalid"


def test_cart_remove_missing() -> None:
    with pytest.raises(CartError) as info:
        Cart().remove("p1", 1)
    assert info.value.code == "not_in_cart"
