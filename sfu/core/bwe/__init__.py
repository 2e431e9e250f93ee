"""Downlink bandwidth estimation, one estimator per viewer, pluggable by name.

    from sfu.core import bwe
    est = bwe.create("gcc")          # or "remb", "null"; bwe.available() lists them

See `base.Estimator` for the interface and docs/bench.md ("Bandwidth estimation") for how the
node shell drives it together with `sfu.core.allocator.Allocator` and `sfu.core.pacer.Pacer`.
"""

from sfu.core.bwe.base import (
    NORMAL,
    OVERUSING,
    UNDERUSING,
    Estimator,
    NullEstimator,
    ProbeCluster,
    available,
    create,
    register,
)
from sfu.core.bwe.gcc import GccEstimator
from sfu.core.bwe.meter import RateMeter
from sfu.core.bwe.remb import RembEstimator

__all__ = [
    "NORMAL",
    "OVERUSING",
    "UNDERUSING",
    "Estimator",
    "GccEstimator",
    "NullEstimator",
    "ProbeCluster",
    "RateMeter",
    "RembEstimator",
    "available",
    "create",
    "register",
]
