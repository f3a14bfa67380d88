"""Routing image edits over several deployments: load balancing, retries, cooldowns, fallbacks.

:class:`Router` takes a LiteLLM-style ``model_list``; its strategies live in
:mod:`~tracking.router.strategies`, the shared state in :mod:`~tracking.router.state` (in
memory) and :mod:`~tracking.router.redis_state` (in Redis), the per-call decisions in
:mod:`~tracking.router.route`, and the contract with the call flow in
:mod:`~tracking.router.protocol`.
"""

from __future__ import annotations

from .deployments import Deployment
from .protocol import Route, Target
from .redis_state import RedisState
from .route import NoDeploymentAvailableError
from .router import CooldownObserver, Router
from .state import MemoryState, RouterState, Snapshot
from .strategies import (
    CallShape,
    CostFunction,
    LeastBusy,
    LowestCost,
    LowestLatency,
    RoutingStrategy,
    UsageBased,
    WeightedRandom,
)

__all__ = [
    "CallShape",
    "CooldownObserver",
    "CostFunction",
    "Deployment",
    "LeastBusy",
    "LowestCost",
    "LowestLatency",
    "MemoryState",
    "NoDeploymentAvailableError",
    "RedisState",
    "Route",
    "Router",
    "RouterState",
    "RoutingStrategy",
    "Snapshot",
    "Target",
    "UsageBased",
    "WeightedRandom",
]
