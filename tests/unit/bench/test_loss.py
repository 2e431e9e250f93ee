"""Loss models converge to their analytic mean loss and burst length; spec parsing."""

from __future__ import annotations

import random

import pytest

from bench.loss import (
    Bernoulli,
    GilbertElliott,
    LossModel,
    LossSpecError,
    NoLoss,
    parse_loss,
)

N = 100_000


def measure(model: LossModel, n: int = N) -> tuple[float, float]:
    """(loss fraction, mean length of runs of consecutive losses) over n draws."""
    lost = 0
    bursts = 0
    previous = False
    for _ in range(n):
        x = model.lost()
        lost += x
        if x and not previous:
            bursts += 1
        previous = x
    return lost / n, (lost / bursts if bursts else 0.0)


def test_no_loss() -> None:
    assert measure(NoLoss(), 1000) == (0.0, 0.0)
    assert NoLoss().mean_loss == 0.0


@pytest.mark.parametrize("p", [0.02, 0.2, 0.5])
def test_bernoulli_converges(p: float) -> None:
    model = Bernoulli(p, random.Random(1))
    loss, burst = measure(model)
    assert loss == pytest.approx(p, rel=0.1)
    assert model.mean_loss == p
    assert burst == pytest.approx(1 / (1 - p), rel=0.1)
    assert model.mean_burst == pytest.approx(1 / (1 - p))


@pytest.mark.parametrize(("loss", "burst"), [(0.05, 3.0), (0.1, 2.0), (0.2, 5.0), (0.3, 1.5)])
def test_gilbert_elliott_from_loss_and_burst_converges(loss: float, burst: float) -> None:
    model = GilbertElliott.from_loss_and_burst(loss, burst, random.Random(7))
    assert model.mean_loss == pytest.approx(loss)
    assert model.mean_burst == pytest.approx(burst)
    assert model.r == pytest.approx(1 / burst)
    assert model.p == pytest.approx(loss / (1 - loss) / burst)
    got_loss, got_burst = measure(model)
    assert got_loss == pytest.approx(loss, rel=0.1)
    assert got_burst == pytest.approx(burst, rel=0.1)


@pytest.mark.parametrize(
    ("p", "r", "one_minus_h", "one_minus_k", "loss", "burst"),
    [
        # Simple Gilbert: loss = p/(p+r), burst = 1/r.
        (0.05, 0.5, 1.0, 0.0, 0.05 / 0.55, 2.0),
        (0.01, 0.25, 1.0, 0.0, 0.01 / 0.26, 4.0),
        # Full Gilbert-Elliott: hand-computed. pb = 0.1/0.4 = 0.25;
        # loss = 0.75*0.01 + 0.25*0.8 = 0.2075;
        # starts = 0.75*0.99*(0.9*0.01 + 0.1*0.8) + 0.25*0.2*(0.3*0.01 + 0.7*0.8)
        #        = 0.0660825 + 0.02815 = 0.0942325; burst = 0.2075/0.0942325.
        (0.1, 0.3, 0.8, 0.01, 0.2075, 0.2075 / 0.0942325),
    ],
)
def test_gilbert_elliott_netem_parameters_converge(
    p: float, r: float, one_minus_h: float, one_minus_k: float, loss: float, burst: float
) -> None:
    model = GilbertElliott(p, r, one_minus_h, one_minus_k, random.Random(3))
    assert model.mean_loss == pytest.approx(loss)
    assert model.mean_burst == pytest.approx(burst)
    got_loss, got_burst = measure(model)
    assert got_loss == pytest.approx(loss, rel=0.1)
    assert got_burst == pytest.approx(burst, rel=0.1)


def test_gilbert_elliott_is_bursty_not_bernoulli() -> None:
    # Same mean loss, very different bursts: the test above could not pass by accident.
    ge = GilbertElliott.from_loss_and_burst(0.1, 5.0, random.Random(1))
    be = Bernoulli(0.1, random.Random(1))
    assert measure(ge)[1] > 3 * measure(be)[1]


def test_same_seed_same_pattern() -> None:
    a = parse_loss("ge:loss=10%,burst=3", seed=42)
    b = parse_loss("ge:loss=10%,burst=3", seed=42)
    c = parse_loss("ge:loss=10%,burst=3", seed=43)
    pa = [a.lost() for _ in range(2000)]
    assert pa == [b.lost() for _ in range(2000)]
    assert pa != [c.lost() for _ in range(2000)]


def test_invalid_constructor_arguments() -> None:
    with pytest.raises(ValueError, match="p must be"):
        Bernoulli(1.5)
    with pytest.raises(ValueError, match="burst"):
        GilbertElliott.from_loss_and_burst(0.6, 1.0)  # needs burst >= 1.5
    with pytest.raises(ValueError, match="1-h"):
        GilbertElliott(0.1, 0.1, one_minus_h=2.0)


def test_parse_loss_forms() -> None:
    assert isinstance(parse_loss("none", 0), NoLoss)
    for spec in ("bernoulli:5%", "bernoulli:0.05", "bernoulli:p=5%", " Bernoulli : 5 % "):
        m = parse_loss(spec, 0)
        assert isinstance(m, Bernoulli) and m.p == pytest.approx(0.05), spec
    a = parse_loss("ge:p=0.05,r=0.5,h=0,k=1", 0)
    b = parse_loss("ge:p=5%,r=50%,1-h=100%,1-k=0%", 0)
    c = parse_loss("ge:p=5%,r=50%", 0)
    for m in (a, b, c):
        assert isinstance(m, GilbertElliott)
        assert (m.p, m.r, m.one_minus_h, m.one_minus_k) == pytest.approx((0.05, 0.5, 1.0, 0.0))
    d = parse_loss("ge:p=1%,r=30%,h=0.9,k=0.99", 0)
    assert isinstance(d, GilbertElliott)
    assert (d.one_minus_h, d.one_minus_k) == pytest.approx((0.1, 0.01))
    e = parse_loss("ge:loss=10%,burst=3", 0)
    assert isinstance(e, GilbertElliott)
    assert (e.mean_loss, e.mean_burst) == pytest.approx((0.1, 3.0))


@pytest.mark.parametrize(
    ("spec", "names"),
    [
        ("wifi:5%", "unknown loss model 'wifi'"),
        ("bernoulli:", "'p'"),
        ("bernoulli:abc", "p: not a number"),
        ("bernoulli:5", "p: must be a probability"),
        ("bernoulli:120%", "p: must be a probability"),
        ("ge:p=0.1", "missing parameter 'r'"),
        ("ge:p=0.1,r=0.5,q=3", "unknown parameter 'q'"),
        ("ge:p=0.1,r=x", "r: not a number"),
        ("ge:p=0.1,r=0.5,h=2", "h: must be a probability"),
        ("ge:p=0.1,r=0.5,h=0,1-h=1", "'h' or '1-h'"),
        ("ge:loss=10%", "missing parameter 'burst'"),
        ("ge:loss=10%,burst=abc", "burst: not a number"),
        ("ge:loss=60%,burst=1", "burst"),
        ("ge:loss=10%,burst=0.5", "burst"),
        ("ge:loss=10%,burst=3,p=0.1", "'p' cannot be combined"),
        ("ge:p", "expected name=value"),
        ("none:5", "none"),
    ],
)
def test_parse_loss_errors_name_the_parameter(spec: str, names: str) -> None:
    with pytest.raises(LossSpecError) as e:
        parse_loss(spec, 0)
    assert names in str(e.value)
