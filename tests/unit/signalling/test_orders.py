"""``decide``: the order rule both stores implement atomically."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from signalling.domain.orders import (
    OrderRequest,
    OrderResult,
    decide,
    validate_request,
    with_order_id,
)
from signalling.domain.sale import Sale

SALE = Sale(id="s1", room="r1", product_id="p1", starts_at=100.0, ends_at=200.0)
REQ = OrderRequest(
    viewer="alice", room="r1", sale_id="s1", product_id="p1", quantity=2, idempotency_key="k1"
)


def test_confirmed_reports_stock_after_the_order() -> None:
    assert decide(SALE, 5, REQ, 150.0) == OrderResult("k1", "confirmed", 2, None, 3)
    assert decide(SALE, 2, REQ, 150.0).remaining == 0
    assert with_order_id(decide(SALE, 2, REQ, 150.0), "o_1").order_id == "o_1"


def test_sold_out_when_fewer_than_requested_remain() -> None:
    assert decide(SALE, 1, REQ, 150.0) == OrderResult("k1", "sold_out", 2, None, 1)
    assert decide(SALE, 0, REQ, 150.0).status == "sold_out"


def test_window_edges() -> None:
    assert decide(SALE, 5, REQ, 99.99).status == "sale_not_open"
    assert decide(SALE, 5, REQ, 100.0).status == "confirmed"
    assert decide(SALE, 5, REQ, 200.0).status == "sale_ended"


def test_window_is_checked_before_stock() -> None:
    # A closed sale says so even when it is also sold out: the truer reason for the viewer.
    assert decide(SALE, 0, REQ, 50.0).status == "sale_not_open"
    assert decide(SALE, 0, REQ, 250.0).status == "sale_ended"


@pytest.mark.parametrize(
    "sale",
    [
        None,
        dataclasses.replace(SALE, id="s2"),
        dataclasses.replace(SALE, room="r2"),
        dataclasses.replace(SALE, product_id="p2"),
    ],
)
def test_wrong_or_missing_sale_is_invalid(sale: Sale | None) -> None:
    assert decide(sale, 5, REQ, 150.0).status == "invalid"


@pytest.mark.parametrize(
    "override",
    [
        {"quantity": 0},
        {"quantity": 11},
        {"quantity": True},
        {"quantity": 1.0},
        {"idempotency_key": ""},
        {"idempotency_key": "k" * 65},
        {"viewer": "a b"},
        {"room": ""},
    ],
)
def test_malformed_requests_are_invalid(override: dict[str, Any]) -> None:
    req = dataclasses.replace(REQ, **override)
    assert validate_request(req) is not None
    result = decide(SALE, 5, req, 150.0)
    assert result.status == "invalid"
    assert result.order_id is None and result.remaining is None


def test_valid_request_has_no_complaint() -> None:
    assert validate_request(REQ) is None
    assert validate_request(dataclasses.replace(REQ, quantity=10)) is None
