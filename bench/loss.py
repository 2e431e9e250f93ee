"""Random packet-loss models for the impairment link: none, Bernoulli, Gilbert-Elliott.

Sans-I/O: a model draws from the ``random.Random`` it was given, so a seed fixes the loss
pattern. Call :meth:`LossModel.lost` once per packet, in order.

Gilbert-Elliott follows Linux netem's ``loss gemodel p r 1-h 1-k``: a two-state Markov
chain that starts in the good state; ``p`` = P(good -> bad), ``r`` = P(bad -> good) per
packet; a packet is lost with probability ``1-h`` in the bad state and ``1-k`` in the good
state (the state the packet finds, as in netem; the transition follows).

Spec strings (:func:`parse_loss`); probabilities are fractions (``0.05``) or percentages
(``5%``), never bare numbers above 1:

- ``none``
- ``bernoulli:5%`` or ``bernoulli:0.05`` (also ``bernoulli:p=5%``)
- ``ge:p=5%,r=50%`` with optional ``h=`` and ``k=`` in the textbook meaning (h = probability
  a packet *survives* in the bad state, default 0; k = survives in the good state, default
  1), or, equivalently, netem's ``1-h=`` (loss in bad) and ``1-k=`` (loss in good). So
  ``ge:p=0.05,r=0.5,h=0,k=1`` == ``ge:p=5%,r=50%,1-h=100%,1-k=0%``.
- ``ge:loss=10%,burst=3``: mean loss and mean burst length (packets), as libwebrtc's
  ``BuiltInNetworkBehaviorConfig`` (``loss_percent``, ``avg_burst_loss_length``) derives its
  chain: ``r = 1/burst``, ``p = loss / (1 - loss) / burst``, ``1-h = 1``, ``1-k = 0``.
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod

__all__ = [
    "Bernoulli",
    "GilbertElliott",
    "LossModel",
    "LossSpecError",
    "NoLoss",
    "parse_loss",
]


class LossSpecError(ValueError):
    """A loss spec string that cannot be parsed; the message names the parameter."""


def _check_probability(name: str, value: float) -> float:
    if not (0.0 <= value <= 1.0) or math.isnan(value):
        raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
    return float(value)


class LossModel(ABC):
    """Decides, packet by packet, whether a packet is lost."""

    @abstractmethod
    def lost(self) -> bool:
        """Draw for the next packet: True if it is lost."""

    @property
    @abstractmethod
    def mean_loss(self) -> float:
        """Long-run fraction of packets lost (analytic)."""

    def reseed(self, seed: int) -> None:
        """Restart the random stream (for independent copies of one configuration)."""
        return None


class NoLoss(LossModel):
    """Never loses a packet."""

    def lost(self) -> bool:
        return False

    @property
    def mean_loss(self) -> float:
        return 0.0

    def __repr__(self) -> str:
        return "NoLoss()"


class Bernoulli(LossModel):
    """Independent loss with probability ``p`` per packet."""

    def __init__(self, p: float, rng: random.Random | None = None) -> None:
        self.p = _check_probability("p", p)
        self.rng = rng if rng is not None else random.Random(0)

    def lost(self) -> bool:
        return self.p > 0.0 and self.rng.random() < self.p

    @property
    def mean_loss(self) -> float:
        return self.p

    @property
    def mean_burst(self) -> float:
        """Mean length of a run of consecutive losses: 1 / (1 - p)."""
        return math.inf if self.p >= 1.0 else (1.0 / (1.0 - self.p) if self.p > 0 else 0.0)

    def reseed(self, seed: int) -> None:
        self.rng.seed(seed)

    def __repr__(self) -> str:
        return f"Bernoulli(p={self.p})"


class GilbertElliott(LossModel):
    """Two-state bursty loss with netem's parameters (see the module docstring)."""

    def __init__(
        self,
        p: float,
        r: float,
        one_minus_h: float = 1.0,
        one_minus_k: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        self.p = _check_probability("p", p)
        self.r = _check_probability("r", r)
        self.one_minus_h = _check_probability("1-h", one_minus_h)
        self.one_minus_k = _check_probability("1-k", one_minus_k)
        self.rng = rng if rng is not None else random.Random(0)
        self.bad = False

    @classmethod
    def from_loss_and_burst(
        cls, loss: float, mean_burst: float, rng: random.Random | None = None
    ) -> GilbertElliott:
        """The chain libwebrtc's simulated network builds from loss percent + burst length.

        A lost packet is a bad-state packet: ``r = 1/mean_burst``,
        ``p = loss / (1 - loss) / mean_burst``; needs ``mean_burst >= loss / (1 - loss)``
        so that ``p <= 1`` (libwebrtc asks for strictly more than the ceiling of it).
        """
        if not (0.0 <= loss < 1.0):
            raise ValueError(f"loss must be in [0, 1), got {loss!r}")
        if not (mean_burst >= 1.0) or math.isinf(mean_burst):
            raise ValueError(f"burst must be a finite mean length >= 1 packet, got {mean_burst!r}")
        p = loss / (1.0 - loss) / mean_burst
        if p > 1.0:
            raise ValueError(
                f"burst: a mean loss of {loss:g} needs a mean burst >= {loss / (1 - loss):g}"
            )
        return cls(p, 1.0 / mean_burst, 1.0, 0.0, rng)

    def lost(self) -> bool:
        loss_p = self.one_minus_h if self.bad else self.one_minus_k
        lost = loss_p > 0.0 and (loss_p >= 1.0 or self.rng.random() < loss_p)
        flip = self.r if self.bad else self.p
        if flip > 0.0 and self.rng.random() < flip:
            self.bad = not self.bad
        return lost

    @property
    def bad_fraction(self) -> float:
        """Stationary probability of the bad state."""
        return 0.0 if self.p + self.r == 0 else self.p / (self.p + self.r)

    @property
    def mean_loss(self) -> float:
        pb = self.bad_fraction
        return (1.0 - pb) * self.one_minus_k + pb * self.one_minus_h

    @property
    def mean_burst(self) -> float:
        """Mean length of a run of consecutive lost packets (stationary, analytic).

        = P(loss) / P(a packet is delivered and the next one lost); 1/r for the simple
        Gilbert model (1-h = 1, 1-k = 0). 0 if nothing is ever lost, inf if everything is.
        """
        loss = self.mean_loss
        if loss <= 0.0:
            return 0.0
        pb = self.bad_fraction
        pg = 1.0 - pb
        eg, eb = self.one_minus_k, self.one_minus_h
        # Sum over (state now, state next): P(state) * P(delivered) * P(move) * P(lost next).
        starts = pg * (1.0 - eg) * ((1.0 - self.p) * eg + self.p * eb) + pb * (1.0 - eb) * (
            self.r * eg + (1.0 - self.r) * eb
        )
        return math.inf if starts <= 0.0 else loss / starts

    def reseed(self, seed: int) -> None:
        self.rng.seed(seed)
        self.bad = False

    def __repr__(self) -> str:
        return (
            f"GilbertElliott(p={self.p:g}, r={self.r:g}, "
            f"one_minus_h={self.one_minus_h:g}, one_minus_k={self.one_minus_k:g})"
        )


def _fraction(model: str, name: str, text: str) -> float:
    s = text.strip()
    percent = s.endswith("%")
    try:
        value = float(s[:-1] if percent else s)
    except ValueError:
        raise LossSpecError(f"{model}: {name}: not a number: {text!r}") from None
    if percent:
        value /= 100.0
    if math.isnan(value) or not (0.0 <= value <= 1.0):
        hint = "" if percent else f" (use {s}% for a percentage)"
        raise LossSpecError(f"{model}: {name}: must be a probability in [0, 1]{hint}: {text!r}")
    return value


def _params(model: str, body: str, allowed: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in body.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise LossSpecError(f"{model}: expected name=value, got {part.strip()!r}")
        key, _, value = part.partition("=")
        key = key.strip().lower()
        if key not in allowed:
            raise LossSpecError(
                f"{model}: unknown parameter {key!r} (expected one of {', '.join(allowed)})"
            )
        if key in out:
            raise LossSpecError(f"{model}: parameter {key!r} given twice")
        out[key] = value
    return out


def parse_loss(spec: str, seed: int) -> LossModel:
    """A loss model from a spec string (syntax in the module docstring), seeded with ``seed``."""
    s = spec.strip()
    model, _, body = s.partition(":")
    model = model.strip().lower()
    rng = random.Random(seed)
    if model in ("none", "no", "off", "0"):
        if body.strip():
            raise LossSpecError(f"none: takes no parameters, got {body!r}")
        return NoLoss()
    if model == "bernoulli":
        if "=" in body:
            params = _params(model, body, ("p",))
            if "p" not in params:
                raise LossSpecError("bernoulli: missing parameter 'p'")
            text = params["p"]
        else:
            text = body
        if not text.strip():
            raise LossSpecError("bernoulli: missing parameter 'p' (e.g. bernoulli:5%)")
        return Bernoulli(_fraction(model, "p", text), rng)
    if model in ("ge", "gilbert", "gilbert-elliott"):
        params = _params("ge", body, ("p", "r", "h", "k", "1-h", "1-k", "loss", "burst"))
        if "loss" in params or "burst" in params:
            extra = sorted(set(params) - {"loss", "burst"})
            if extra:
                raise LossSpecError(f"ge: {extra[0]!r} cannot be combined with loss=/burst=")
            for key in ("loss", "burst"):
                if key not in params:
                    raise LossSpecError(f"ge: missing parameter {key!r}")
            loss = _fraction("ge", "loss", params["loss"])
            try:
                burst = float(params["burst"])
            except ValueError:
                raise LossSpecError(f"ge: burst: not a number: {params['burst']!r}") from None
            try:
                return GilbertElliott.from_loss_and_burst(loss, burst, rng)
            except ValueError as e:
                name = "loss" if str(e).startswith("loss") else "burst"
                raise LossSpecError(f"ge: {name}: {e}") from None
        for key in ("p", "r"):
            if key not in params:
                raise LossSpecError(f"ge: missing parameter {key!r}")
        if "h" in params and "1-h" in params:
            raise LossSpecError("ge: give 'h' or '1-h', not both")
        if "k" in params and "1-k" in params:
            raise LossSpecError("ge: give 'k' or '1-k', not both")
        one_minus_h = 1.0
        if "h" in params:
            one_minus_h = 1.0 - _fraction("ge", "h", params["h"])
        elif "1-h" in params:
            one_minus_h = _fraction("ge", "1-h", params["1-h"])
        one_minus_k = 0.0
        if "k" in params:
            one_minus_k = 1.0 - _fraction("ge", "k", params["k"])
        elif "1-k" in params:
            one_minus_k = _fraction("ge", "1-k", params["1-k"])
        return GilbertElliott(
            _fraction("ge", "p", params["p"]),
            _fraction("ge", "r", params["r"]),
            one_minus_h,
            one_minus_k,
            rng,
        )
    raise LossSpecError(f"unknown loss model {model!r} (expected none, bernoulli or ge)")
