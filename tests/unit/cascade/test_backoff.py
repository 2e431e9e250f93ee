"""Reconnection delays of an edge (sans-I/O)."""

from __future__ import annotations

import random

import pytest

from sfu.cascade.backoff import Backoff


def test_delays_grow_to_the_ceiling_and_reset() -> None:
    b = Backoff(initial=0.25, maximum=2.0, jitter=0.0)
    assert [b.delay() for _ in range(6)] == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    b.reset()
    assert b.delay() == 0.25


def test_jitter_stays_within_bounds_and_the_ceiling() -> None:
    b = Backoff(initial=1.0, maximum=4.0, jitter=0.1, rng=random.Random(7))
    delays = [b.delay() for _ in range(50)]
    assert 0.9 <= delays[0] <= 1.1
    assert all(d <= 4.0 for d in delays)
    assert len(set(delays[5:])) > 1  # edges do not retry in lockstep


def test_bad_parameters_raise() -> None:
    with pytest.raises(ValueError):
        Backoff(initial=0.0)
    with pytest.raises(ValueError):
        Backoff(initial=2.0, maximum=1.0)
