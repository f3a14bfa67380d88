"""Where a proxied edit goes: the config's ``model_list`` as a :class:`tracking.Router`.

:func:`build_dispatcher` builds the router from the config exactly as
:meth:`tracking.Router.from_config` reads a LiteLLM config: several entries under one
``model_name`` are load-balanced by ``router_settings.routing_strategy``; ``num_retries``
(``router_settings``, else ``litellm_settings``) governs retries; ``fallbacks``, cooldowns and
each deployment's ``rpm`` / ``tpm`` apply. The call then takes the SDK's own path (validation,
pricing, the event on the bus), and the event's ``model`` is the name the caller asked for.

Two settings the router does not take per deployment are applied here: a deployment's
``timeout`` falls back to ``litellm_settings.request_timeout``, and ``drop_params`` holds for a
model name when ``litellm_settings`` or every deployment of that name sets it.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

if TYPE_CHECKING:
    from ..config import ProxyConfig
    from ..response import ImageResponse
    from ..router import Deployment, Router
    from ..streaming import AsyncImageEditStream

__all__ = ["Dispatcher", "RoutedModels", "build_dispatcher", "router_config", "router_deployments"]

log = logging.getLogger("tracking.proxy")


#: What a dispatched call answers: the image response, or with ``stream=True`` its stream.
Answer: TypeAlias = "ImageResponse | AsyncImageEditStream"


class Dispatcher(Protocol):
    async def aimage_edit(self, *, model: str, **params: Any) -> Answer: ...

    async def aimage_generation(self, *, model: str, **params: Any) -> Answer: ...


def router_config(config: ProxyConfig) -> dict[str, Any]:
    """The config as :meth:`tracking.Router.from_config` reads it (references resolved)."""
    # a deployment's own timeout, else router_settings.timeout (applied by the router), else
    # litellm_settings.request_timeout
    request_timeout = config.litellm_settings.request_timeout
    if config.router_settings.get("timeout") is not None:
        request_timeout = None
    model_list = []
    for deployment in config.model_list:
        params = dict(deployment.litellm_params)
        if request_timeout is not None:
            params.setdefault("timeout", request_timeout)
        model_list.append(
            {
                "model_name": deployment.model_name,
                "litellm_params": params,
                "model_info": dict(deployment.model_info),
            }
        )
    litellm_settings: dict[str, Any] = {}
    if config.litellm_settings.num_retries is not None:
        litellm_settings["num_retries"] = config.litellm_settings.num_retries
    if config.litellm_settings.fallbacks:
        litellm_settings["fallbacks"] = list(config.litellm_settings.fallbacks)
    return {
        "model_list": model_list,
        "router_settings": dict(config.router_settings),
        "litellm_settings": litellm_settings,
    }


def router_deployments(config: ProxyConfig) -> tuple[Deployment, ...]:
    """The config's deployments as the proxy's router routes and prices their calls, in the
    model_list's order (``/health`` and the warning at start read them), without a router."""
    from ..router.router import load_deployments
    from .prices import model_list_prices_of

    return load_deployments(router_config(config)["model_list"], model_list_prices_of(config))[0]


class RoutedModels:
    """The proxy's dispatcher: the router, plus the per-model-name call defaults."""

    def __init__(self, router: Router, config: ProxyConfig) -> None:
        self.router = router
        self._defaults: dict[str, dict[str, Any]] = {}
        everywhere = config.litellm_settings.drop_params
        for name in config.model_names():
            deployments = config.deployments(name)
            if everywhere or all(d.litellm_params.get("drop_params") for d in deployments):
                self._defaults[name] = {"drop_params": True}

    # With params of unknown shape either overload applies (stream or not): both are an Answer.
    async def aimage_edit(self, *, model: str, **params: Any) -> Answer:
        params = self._with_defaults(model, params)
        answer: Answer = await self.router.aimage_edit(model=model, **params)
        return answer

    async def aimage_generation(self, *, model: str, **params: Any) -> Answer:
        params = self._with_defaults(model, params)
        answer: Answer = await self.router.aimage_generation(model=model, **params)
        return answer

    def _with_defaults(self, model: str, params: dict[str, Any]) -> dict[str, Any]:
        defaults = self._defaults.get(model)
        return {**defaults, **params} if defaults else params

    def close(self) -> None:
        self.router.close()


def build_dispatcher(config: ProxyConfig) -> RoutedModels:
    """The object every proxied call is handed to: a router over the config's model_list."""
    from ..router import Router
    from .accounts import PREFIX_ENV
    from .prices import model_list_prices_of

    # TRACKING_REDIS_PREFIX namespaces the routing state too, as it does the budgets: proxies
    # of different deployments sharing one Redis must not share cooldowns and rpm windows
    prefix = os.environ.get(PREFIX_ENV)
    overrides: dict[str, Any] = {"redis_prefix": f"{prefix}router:"} if prefix else {}
    # the proxy registers its config's prices itself, its prices: section over the deployments'
    overrides["register_prices"] = False
    # the prices of its model_list as the process read them, once (tracking.proxy.prices)
    overrides["model_list_prices"] = model_list_prices_of(config)
    router = Router.from_config(router_config(config), **overrides)
    for name in config.model_names():
        if len(router.groups.get(name, ())) > 1:
            log.info(
                "model %r: %d deployments, routed by %s",
                name,
                len(router.groups[name]),
                type(router.strategy).__name__,
            )
    return RoutedModels(router, config)
