"""KeyframeRequester: throttling and coalescing of upstream PLIs on a virtual clock."""

from __future__ import annotations

import pytest

from sfu.core.keyframe import KeyframeRequester


def test_first_request_sends_immediately() -> None:
    k = KeyframeRequester(min_interval=0.5)
    assert k.get_timer() is None
    assert k.request(now=10.0) is True
    assert k.get_timer() is None
    assert (k.requests, k.sent, k.suppressed) == (1, 1, 0)


def test_requests_inside_window_coalesce_into_one_deferred_send() -> None:
    k = KeyframeRequester(min_interval=0.5)
    assert k.request(now=10.0)
    assert not k.request(now=10.1)
    assert not k.request(now=10.2)
    assert not k.request(now=10.3)
    assert k.pending
    assert k.get_timer() == pytest.approx(10.5)
    assert not k.handle_timer(now=10.49)  # early wake-up is harmless
    assert k.handle_timer(now=10.5)
    assert not k.handle_timer(now=10.5)  # exactly one coalesced send
    assert k.get_timer() is None
    assert (k.requests, k.sent, k.suppressed) == (4, 2, 3)


def test_deferred_send_restarts_the_window() -> None:
    k = KeyframeRequester(min_interval=0.5)
    k.request(now=0.0)
    k.request(now=0.2)
    assert k.handle_timer(now=0.6)
    assert not k.request(now=0.9)
    assert k.get_timer() == pytest.approx(1.1)
    assert k.request(now=1.1)
    assert k.get_timer() is None


def test_keyframe_cancels_pending_request() -> None:
    k = KeyframeRequester(min_interval=0.5)
    k.request(now=0.0)
    k.request(now=0.1)
    k.keyframe_received(now=0.2)
    assert k.last_keyframe_at == 0.2
    assert not k.pending
    assert k.get_timer() is None
    assert not k.handle_timer(now=1.0)
    assert k.sent == 1


def test_keyframe_does_not_reopen_the_window() -> None:
    k = KeyframeRequester(min_interval=0.5)
    k.request(now=0.0)
    k.keyframe_received(now=0.1)
    assert not k.request(now=0.2)
    assert k.handle_timer(now=0.5)


def test_request_after_window_sends_even_if_timer_not_yet_handled() -> None:
    k = KeyframeRequester(min_interval=0.5)
    k.request(now=0.0)
    k.request(now=0.1)
    assert k.request(now=0.7)
    assert not k.pending
    assert not k.handle_timer(now=0.8)
    assert k.sent == 2


def test_sustained_requests_send_at_most_once_per_interval() -> None:
    k = KeyframeRequester(min_interval=0.5)
    sent_at: list[float] = []
    for step in range(100):  # a request every 50 ms for 5 s
        now = step * 0.05
        timer = k.get_timer()
        if timer is not None and timer <= now and k.handle_timer(now):
            sent_at.append(now)
        if k.request(now):
            sent_at.append(now)
    gaps = [b - a for a, b in zip(sent_at, sent_at[1:], strict=False)]
    assert all(g >= 0.5 - 1e-9 for g in gaps)
    assert len(sent_at) == 10
    assert (k.requests, k.sent) == (100, len(sent_at))


def test_negative_interval_rejected() -> None:
    with pytest.raises(ValueError):
        KeyframeRequester(min_interval=-1)
