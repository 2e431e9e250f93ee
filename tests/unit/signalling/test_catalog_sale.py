"""Products, sale windows and the start/stop transition table."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from signalling.domain.catalog import CatalogError, Product
from signalling.domain.sale import Sale, SaleTransitionError, sale_state, start, stop

GOOD: dict[str, Any] = {
    "id": "p1",
    "room": "r1",
    "name": "Sneaker",
    "price_cents": 0,
    "currency": "EUR",
    "image_url": "",
    "initial_stock": 0,
}


def test_valid_product() -> None:
    p = Product(**GOOD)
    assert dataclasses.replace(p, image_url="https://x/y.png").image_url == "https://x/y.png"


@pytest.mark.parametrize(
    "override",
    [
        {"id": ""},
        {"id": "a b"},
        {"id": "x" * 65},
        {"room": "r/1"},
        {"name": ""},
        {"name": "n" * 201},
        {"price_cents": -1},
        {"price_cents": 1.5},
        {"price_cents": True},
        {"currency": "eur"},
        {"currency": "EURO"},
        {"image_url": "javascript:alert(1)"},
        {"image_url": "data:image/png;base64,AAAA"},
        {"initial_stock": -1},
        {"initial_stock": 10_000_001},
    ],
)
def test_invalid_products(override: dict[str, Any]) -> None:
    with pytest.raises(CatalogError):
        Product(**{**GOOD, **override})


def sale(starts: float = 100.0, ends: float = 200.0) -> Sale:
    return Sale(id="s1", room="r1", product_id="p1", starts_at=starts, ends_at=ends)


def test_state_is_a_function_of_the_window() -> None:
    s = sale()
    assert sale_state(s, 99.999) == "scheduled"
    assert sale_state(s, 100.0) == "open"  # starts_at is inclusive
    assert sale_state(s, 199.999) == "open"
    assert sale_state(s, 200.0) == "ended"  # ends_at is exclusive


@pytest.mark.parametrize(
    "override",
    [
        {"starts_at": 200.0, "ends_at": 100.0},
        {"starts_at": float("nan")},
        {"ends_at": float("inf")},
        {"starts_at": -1.0},
        {"starts_at": True},
        {"id": ""},
        {"product_id": "bad id"},
    ],
)
def test_invalid_sales(override: dict[str, Any]) -> None:
    with pytest.raises(CatalogError):
        dataclasses.replace(sale(), **override)


def test_start_scheduled_opens_now() -> None:
    opened = start(sale(), 50.0)
    assert (opened.starts_at, opened.ends_at) == (50.0, 200.0)
    assert sale_state(opened, 50.0) == "open"


def test_start_open_is_a_no_op() -> None:
    assert start(sale(), 150.0) == sale()


def test_start_ended_is_refused() -> None:
    with pytest.raises(SaleTransitionError):
        start(sale(), 200.0)


def test_stop_open_ends_now() -> None:
    stopped = stop(sale(), 150.0)
    assert (stopped.starts_at, stopped.ends_at) == (100.0, 150.0)
    assert sale_state(stopped, 150.0) == "ended"


def test_stop_ended_is_a_no_op() -> None:
    assert stop(sale(), 250.0) == sale()


def test_stop_scheduled_is_refused() -> None:
    with pytest.raises(SaleTransitionError):
        stop(sale(), 50.0)


def test_stop_in_the_instant_of_start_gives_an_empty_ended_window() -> None:
    stopped = stop(start(sale(), 50.0), 50.0)
    assert stopped.starts_at == stopped.ends_at == 50.0
    assert sale_state(stopped, 50.0) == "ended"
