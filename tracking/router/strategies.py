"""Routing strategies: each picks one deployment of a model group from a state snapshot.

All share one small protocol, :class:`RoutingStrategy`: ``choose(candidates, snapshot, call)``.
The router has already removed deployments that are cooling down or at their rpm/tpm limit, so
a strategy only ranks what is left; ties are broken at random so that equal deployments share
the load. Names follow LiteLLM's ``routing_strategy`` values (short aliases are accepted too):

=========================  ==================  =================================================
``simple-shuffle``         weighted random     by ``weight`` (default 1 each); the default
``least-busy``             least busy          fewest calls in flight (shared through Redis)
``latency-based-routing``  lowest latency      lowest mean of the last ``latency_window``
                                               latencies; deployments never measured go first
``usage-based-routing``    usage based         lowest share of the minute's tpm (else rpm) used
``cost-based-routing``     lowest cost         cheapest for the call's size, quality and n
=========================  ==================  =================================================

The three that measure deployments (least busy, lowest latency, usage based) rank one that
failed within the failure window after those that did not: a deployment failing every call
ends its calls at once and records no latency and no tokens, so by their own measure it looked
the least busy, never measured or least used, and every call went to it first.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from ..errors import ConfigurationError
from ..frozen import fast_init
from .deployments import Deployment
from .state import Snapshot

__all__ = [
    "STRATEGIES",
    "CallShape",
    "CostFunction",
    "LeastBusy",
    "LowestCost",
    "LowestLatency",
    "RoutingStrategy",
    "UsageBased",
    "WeightedRandom",
    "model_info_cost",
    "strategy_named",
]


@fast_init
@dataclass(frozen=True, slots=True)
class CallShape:
    """What a strategy may know of the call itself (enough to price it)."""

    model_group: str
    n: int = 1
    size: str | None = None
    quality: str | None = None
    input_images: int = 1


class RoutingStrategy(Protocol):
    """Picks one of ``candidates`` (never empty) for a call."""

    def choose(
        self, candidates: Sequence[Deployment], snapshot: Snapshot, call: CallShape
    ) -> Deployment: ...


def _lowest(candidates: Sequence[Deployment], score: Callable[[Deployment], Any]) -> Deployment:
    scores = [score(d) for d in candidates]
    best = min(scores)
    return random.choice([d for d, s in zip(candidates, scores, strict=True) if s == best])


class WeightedRandom:
    """Random, in proportion to each deployment's ``weight``."""

    def choose(
        self, candidates: Sequence[Deployment], snapshot: Snapshot, call: CallShape
    ) -> Deployment:
        weights = [d.weight for d in candidates]
        heaviest = max(weights)
        if heaviest <= 0:
            return random.choice(list(candidates))
        # Relative to the heaviest: huge weights (1e308 each) would otherwise sum to infinity.
        return random.choices(list(candidates), weights=[w / heaviest for w in weights])[0]


def _failing(snapshot: Snapshot, deployment: Deployment) -> bool:
    """Whether ``deployment`` failed within the failure window (see the module docstring)."""
    return snapshot.failures.get(deployment.id, 0) > 0


class LeastBusy:
    """The deployment with the fewest calls in flight (one failing recently last)."""

    def choose(
        self, candidates: Sequence[Deployment], snapshot: Snapshot, call: CallShape
    ) -> Deployment:
        return _lowest(
            candidates, lambda d: (_failing(snapshot, d), snapshot.in_flight.get(d.id, 0))
        )


class LowestLatency:
    """The lowest mean latency over the recent window; unmeasured deployments are tried first
    so that every deployment gets measured (one failing recently last)."""

    def choose(
        self, candidates: Sequence[Deployment], snapshot: Snapshot, call: CallShape
    ) -> Deployment:
        def mean(d: Deployment) -> tuple[bool, float]:
            recent = snapshot.latency_ms.get(d.id, ())
            return _failing(snapshot, d), sum(recent) / len(recent) if recent else -1.0

        return _lowest(candidates, mean)


class UsageBased:
    """The deployment with the most headroom this minute: lowest share of its tpm limit used
    (tokens used when it has none), then of its rpm limit (one failing recently last)."""

    def choose(
        self, candidates: Sequence[Deployment], snapshot: Snapshot, call: CallShape
    ) -> Deployment:
        def used(d: Deployment) -> tuple[bool, float, float]:
            tokens = snapshot.tpm.get(d.id, 0)
            requests = snapshot.rpm.get(d.id, 0)
            return (
                _failing(snapshot, d),
                tokens / d.tpm if d.tpm else float(tokens),
                requests / d.rpm if d.rpm else float(requests),
            )

        return _lowest(candidates, used)


#: Prices one call on one deployment, in USD; None when it cannot.
CostFunction = Callable[[Deployment, CallShape], Decimal | None]


def model_info_cost(deployment: Deployment, call: CallShape) -> Decimal | None:
    """The default cost function: the call's cost by the rule it is billed by. The price entry
    its calls are billed from (the deployment's own registered prices, its ``base_model``'s,
    else its model's: ``model_info`` prices once the router or the proxy registered them, a
    ``prices:`` section, a prices file, the packaged table) prices it per image, as billing
    does (:func:`tracking.pricing.table.per_image_price`), when it bills per image; else, and
    for a size or quality it has no per-image price for, the price table's estimate
    (:func:`tracking.pricing.estimate.entry_estimate`, which a billed call whose usage cannot be
    read is billed at). Where no entry prices it (``Router(register_prices=False)``), the
    deployment's own ``model_info`` per-image prices
    (:func:`tracking.pricing.model_info.model_info_price`). Times ``n``; a deployment without
    prices is ranked last."""
    from ..pricing.estimate import entry_estimate
    from ..pricing.model_info import model_info_price
    from ..pricing.table import per_image_price

    entry = deployment.price_entry()
    if entry is None:
        each = model_info_price(deployment.model_info, call.size, call.quality, deployment.model)
        return None if each is None else each * call.n
    if not entry.tokens:  # billed per image, at the size and quality made
        each = per_image_price(entry.per_image, call.size, call.quality)
        if each is not None:
            return each * call.n
    return entry_estimate(entry, call.n, call.quality, call.size, 0, call.input_images)


class LowestCost:
    """The cheapest deployment for this call; unpriced ones last, ties at random."""

    def __init__(self, cost: CostFunction | None = None) -> None:
        self.cost: CostFunction = cost or model_info_cost

    def choose(
        self, candidates: Sequence[Deployment], snapshot: Snapshot, call: CallShape
    ) -> Deployment:
        def price(d: Deployment) -> tuple[int, Decimal]:
            value = self.cost(d, call)
            return (1, Decimal(0)) if value is None else (0, value)

        return _lowest(candidates, price)


#: routing_strategy names (LiteLLM's, and short aliases) -> strategy class.
STRATEGIES: dict[str, Callable[[], RoutingStrategy]] = {
    "simple-shuffle": WeightedRandom,
    "weighted-random": WeightedRandom,
    "least-busy": LeastBusy,
    "latency-based-routing": LowestLatency,
    "lowest-latency": LowestLatency,
    "usage-based-routing": UsageBased,
    "usage-based-routing-v2": UsageBased,
    "usage-based": UsageBased,
    "cost-based-routing": LowestCost,
    "lowest-cost": LowestCost,
}


def strategy_named(value: str | RoutingStrategy) -> RoutingStrategy:
    """A strategy from its name, or the given strategy object itself."""
    if not isinstance(value, str):
        if not callable(getattr(value, "choose", None)):
            raise ConfigurationError("routing_strategy: expected a name or an object with choose()")
        return value
    factory = STRATEGIES.get(value)
    if factory is None:
        known = ", ".join(sorted(STRATEGIES))
        raise ConfigurationError(f"routing_strategy: unknown {value!r}; known: {known}")
    return factory()
