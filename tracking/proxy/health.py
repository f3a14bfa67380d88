"""``GET /health`` in LiteLLM's shape, from the configuration alone (no paid upstream call).

LiteLLM's ``/health`` sends a real request to every deployment; for image edits that is a billed
call each time a load balancer probes. Ours builds each deployment's upstream request as a real
call would (the provider's ``prepare``: model name, credential present, endpoint) without sending
it, and also reports whether its calls are priced (``priced``: found as billing will find the
price, :meth:`tracking.router.Deployment.priced`). Answer: ``healthy_endpoints`` and
``unhealthy_endpoints`` (each ``model``, ``model_name``, ``model_id``, ``api_base`` as
``host[:port]``, and ``error`` for an unhealthy one), ``healthy_count`` and ``unhealthy_count``,
and ``"checks": "configuration"`` to say what was checked. Secrets never appear.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import TrackingError

if TYPE_CHECKING:
    from ..config import ProxyConfig
    from ..router import Deployment

__all__ = ["HealthReport", "unpriced_deployments"]

# A 1x1 PNG: enough for the provider to encode a request; never sent.
_PROBE_IMAGE = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


def _check(deployment: Deployment) -> dict[str, Any]:
    from ..providers import get_provider
    from ..request import parse_call, split_provider

    entry: dict[str, Any] = {
        "model": deployment.model,
        "model_name": deployment.model_name,
        "model_id": deployment.model_info.get("id"),
    }
    try:
        # the request the router makes for this deployment (its model, key, endpoint and the
        # model its calls are priced as), never sent
        request, options = parse_call(
            image=_PROBE_IMAGE,
            prompt="health check (never sent)",
            **deployment.overrides(None),
        )
        provider = get_provider(split_provider(deployment.model)[0])
        prepared = provider.prepare(request, options)
    except TrackingError as exc:
        entry["error"] = exc.message
        return entry
    entry["api_base"] = prepared.host
    entry["priced"] = deployment.priced()
    return entry


@dataclass(frozen=True, slots=True)
class HealthReport:
    healthy: list[dict[str, Any]]
    unhealthy: list[dict[str, Any]]

    @classmethod
    def of(cls, deployments: Iterable[Deployment]) -> HealthReport:
        """The report of a router's deployments (the proxy's, or
        :func:`~tracking.proxy.models.router_deployments` of its config)."""
        checked = [_check(d) for d in deployments]
        return cls([e for e in checked if "error" not in e], [e for e in checked if "error" in e])

    def to_dict(self) -> dict[str, Any]:
        return {
            "healthy_endpoints": self.healthy,
            "unhealthy_endpoints": self.unhealthy,
            "healthy_count": len(self.healthy),
            "unhealthy_count": len(self.unhealthy),
            "checks": "configuration",
        }


def unpriced_deployments(config: ProxyConfig, deployments: Sequence[Deployment]) -> list[str]:
    """A line for each deployment whose calls are recorded unpriced (as ``/health`` says it:
    ``"priced": false``; both ask :meth:`~tracking.router.Deployment.priced`, which finds the
    price as billing will), which ``tracking serve`` logs as a warning at start: a misspelt
    model name, or a model the price table does not know, was found at its first call only.
    ``deployments`` are the config's router's (in the model_list's order); call it once the
    config's prices are registered."""
    budgets = (
        "not counted by budgets (allow_unpriced_with_budgets)"
        if config.general_settings.allow_unpriced_with_budgets
        else "refused for a key, end user or proxy with a budget"
    )
    lines = []
    for index, deployment in enumerate(deployments):
        if _check(deployment).get("priced") is not False:
            continue
        routes = deployment.unpriced_routes() if deployment.price_entry() is not None else []
        if routes:  # its own calls are priced, those it serves with another model are not
            lines.append(
                f"model_list[{index}] ({deployment.model_name}): {deployment.model}'s calls "
                f"served by {', '.join(routes)} (a masked edit) have no known price: they are "
                f"recorded unpriced (no cost, never $0) and {budgets}; give "
                f"{', '.join(routes)} a price (prices:)"
            )
        else:
            lines.append(
                f"model_list[{index}] ({deployment.model_name}): {deployment.model} has no known "
                f"price: its calls are recorded unpriced (no cost, never $0) and {budgets}; "
                "check the model's name, or give it a price (prices:, or model_info)"
            )
    return lines
