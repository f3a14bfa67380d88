"""``tracking.Router``: image edits and generations load-balanced over a LiteLLM-style
``model_list``.

A router owns the deployments, the routing strategy, the fallbacks and the routing state (in
memory, or in Redis with ``redis_url``). ``router.image_edit(...)`` and
``await router.aimage_edit(...)`` take exactly the parameters of :func:`tracking.image_edit`,
``router.image_generation(...)`` and ``await router.aimage_generation(...)`` those of
:func:`tracking.image_generation` (each signature is written once, in :mod:`tracking.request`);
``model`` names a model group. Each
call runs the one call flow with a :class:`~tracking.router.route.CallRoute`, so it still yields
exactly one event, which records the asked model, the group and deployment that served, the
fallback chain, the attempts and the retries.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ParamSpec, Protocol, cast

from ..api import AsyncEdit, SyncEdit, call_async, call_sync
from ..errors import ConfigurationError
from ..redis_outage import timeout_from_environment
from ..request import (
    MAX_RETRIES,
    MAX_TIMEOUT,
    call_params,
    image_edit_params,
    image_generation_params,
)
from ..targets import Steps, run_steps
from .deployments import Deployment, parse_fallbacks, parse_model_list, resolve_env, seconds
from .redis_state import SOCKET_TIMEOUT, RedisState
from .route import CallRoute
from .state import MemoryState, RouterState, stepwise
from .strategies import RoutingStrategy, strategy_named

__all__ = ["CooldownObserver", "Router", "load_deployments", "lone_redis_settings"]

log = logging.getLogger("tracking.router")

P = ParamSpec("P")

#: Called with (model group, deployment id) when this process puts a deployment in cooldown.
CooldownObserver = Callable[[str, str], None]

#: router_settings keys read by :meth:`Router.from_config`; others are accepted and ignored.
_SETTINGS = (
    "routing_strategy",
    "num_retries",
    "cooldown_time",
    "allowed_fails",
    "fallbacks",
    "redis_url",
    "redis_host",
    "redis_port",
    "redis_password",
    "redis_startup_nodes",
)


def _check_fallbacks(
    model_list: Any, litellm_settings: Mapping[str, Any], router_settings: Mapping[str, Any]
) -> None:
    """Both sections' ``fallbacks`` checked, each error naming its key: when both are set,
    router_settings' are the ones used (as LiteLLM's router does), but a group unknown in
    litellm_settings' is a mistake all the same, never silently ignored."""
    sections = [
        (section["fallbacks"], f"{name}.fallbacks")
        for section, name in (
            (litellm_settings, "litellm_settings"),
            (router_settings, "router_settings"),
        )
        if "fallbacks" in section
    ]
    if not sections:
        return
    groups = {deployment.model_name for deployment in parse_model_list(model_list)}
    for fallbacks, where in sections:
        parse_fallbacks(fallbacks, groups, where=where)
    if len(sections) > 1:
        log.warning(
            "router: fallbacks are set in both litellm_settings and router_settings; "
            "router_settings' are used"
        )


def _with_timeout(entry: Any, timeout: Any) -> Any:
    """A ``model_list`` entry with ``timeout`` in its ``litellm_params`` unless it has its own
    (anything malformed is left for the deployment parser to report)."""
    params = entry.get("litellm_params") if isinstance(entry, Mapping) else None
    if not isinstance(params, Mapping) or params.get("timeout") is not None:
        return entry
    return {**entry, "litellm_params": {**params, "timeout": timeout}}


class _RoutedSync(Protocol[P]):
    """``Router.image_edit``'s (and ``image_generation``'s) type: read on a router, the
    module-level function's type (:class:`~tracking.api.SyncEdit`): a stream with
    ``stream=True``, else the response."""

    def __get__(self, router: Router, owner: type[Router] | None = None) -> SyncEdit[P]: ...


class _RoutedAsync(Protocol[P]):
    """``Router.aimage_edit``'s (and ``aimage_generation``'s) type, as :class:`_RoutedSync`
    (:class:`~tracking.api.AsyncEdit`)."""

    def __get__(self, router: Router, owner: type[Router] | None = None) -> AsyncEdit[P]: ...


def _routed_sync(params: Callable[P, dict[str, Any]], name: str) -> _RoutedSync[P]:
    def routed(self: Router, /, *args: P.args, **kwargs: P.kwargs) -> Any:
        call = call_params(params, args, kwargs)
        return call_sync(call, CallRoute(self, call))

    functools.update_wrapper(routed, params)
    routed.__name__ = routed.__qualname__ = name
    return cast("_RoutedSync[P]", routed)


def _routed_async(params: Callable[P, dict[str, Any]], name: str) -> _RoutedAsync[P]:
    async def routed(self: Router, /, *args: P.args, **kwargs: P.kwargs) -> Any:
        call = call_params(params, args, kwargs)
        return await call_async(call, CallRoute(self, call))

    functools.update_wrapper(routed, params)
    routed.__name__ = routed.__qualname__ = name
    return cast("_RoutedAsync[P]", routed)


def lone_redis_settings(settings: Mapping[str, Any]) -> list[str]:
    """A fault for each of ``redis_port`` / ``redis_password`` in ``router_settings`` that
    names no Redis (no ``redis_host``, no ``redis_url``): whoever wrote one believes the
    processes share Redis (routing state, the proxy's budgets and rate limits), and they
    would not. The proxy's config check and :meth:`Router.from_config` both use it."""
    if (
        settings.get("redis_host")
        or settings.get("redis_url")
        or settings.get("redis_startup_nodes")
    ):
        return []
    return [
        f"router_settings.{key}: has no effect without redis_host (or give redis_url, or "
        "redis_startup_nodes)"
        for key in ("redis_port", "redis_password")
        if settings.get(key) is not None
    ]


def _price_params(entry: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The LiteLLM price keys of an entry's ``litellm_params``, ``os.environ/`` resolved."""
    from ..config import LITELLM_PRICE_KEYS

    params = entry.get("litellm_params") or {}
    return {
        key: resolve_env(params[key], f"{where}.litellm_params.{key}")
        for key in LITELLM_PRICE_KEYS
        if key in params
    }


def load_deployments(
    model_list: Iterable[Mapping[str, Any]],
    prices: Mapping[str, tuple[str, dict[str, Any]]] | None = None,
) -> tuple[tuple[Deployment, ...], dict[str, tuple[str, dict[str, Any]]]]:
    """A ``model_list``'s deployments as a router routes and prices their calls, and the prices
    written in it (:func:`tracking.pricing.model_info.model_list_prices`). A deployment priced
    unlike another of its model (or beside one without prices) gets its own prices' name
    (``price_key``), which its calls are billed by; the proxy's ``/health`` and its warning
    at start read the deployments so too."""
    from ..pricing.model_info import model_list_prices, own_price_key

    entries: Any = model_list
    if isinstance(entries, Iterable) and not isinstance(entries, str | bytes | Mapping):
        entries = list(entries)  # read twice: the deployments, then their prices
    deployments = parse_model_list(entries)
    if prices is None:
        prices = model_list_prices(
            (
                f"model_list[{index}]",
                deployment.model,
                deployment.model_info,
                _price_params(entry, f"model_list[{index}]"),
                deployment.id,
            )
            for index, (deployment, entry) in enumerate(zip(deployments, entries, strict=True))
        )
    else:
        prices = dict(prices)
    priced = tuple(
        dataclasses.replace(d, price_key=key)
        if (own := prices.get(key := own_price_key(d.model, d.id))) is not None
        and own[1].keys() != {"base_model"}  # its base_model is sent with its calls already
        else d
        for d in deployments
    )
    return priced, prices


class Router:
    """Routes image edits and generations across the deployments of each model group.

    ``routing_strategy`` is a name (``simple-shuffle``, the default; ``least-busy``,
    ``latency-based-routing``, ``usage-based-routing``, ``cost-based-routing``) or a strategy
    object. ``num_retries`` is the number of retries within a model group (the call's own
    ``max_retries``, when given, replaces it for that call); ``cooldown_time`` seconds a
    failing deployment is skipped; ``allowed_fails`` the failures per minute it may have
    before that. ``fallbacks`` is LiteLLM's ``[{"group": ["other-group", ...]}]``.
    ``redis_url`` shares the routing state between processes under ``redis_prefix``.

    Prices written in the deployments (``model_info``'s ``output_cost_per_image`` /
    ``output_cost_per_image_by_size`` / ``tokens_per_million`` / ``per_image`` / ``base_model``
    / ``discount``, and LiteLLM's per-token keys in ``model_info`` or ``litellm_params``) are
    registered with :func:`tracking.register_prices` for each deployment's model (under the
    deployment's own name when another deployment of its model is priced otherwise or not at
    all), as the proxy registers its config's, so calls are billed at the prices they are
    routed by;
    ``register_prices=False`` leaves the price table alone. ``model_list_prices`` are those
    prices when the caller has read them already
    (:func:`~tracking.pricing.model_info.model_list_prices` of this ``model_list``, with these
    deployments' ids: the proxy reads its config's once per process,
    :func:`tracking.proxy.prices.model_list_prices_of`).
    """

    image_edit = _routed_sync(image_edit_params, "image_edit")
    aimage_edit = _routed_async(image_edit_params, "aimage_edit")
    image_generation = _routed_sync(image_generation_params, "image_generation")
    aimage_generation = _routed_async(image_generation_params, "aimage_generation")

    def __init__(
        self,
        model_list: Iterable[Mapping[str, Any]],
        *,
        fallbacks: Iterable[Mapping[str, Any]] | None = None,
        routing_strategy: str | RoutingStrategy = "simple-shuffle",
        num_retries: int = 2,
        cooldown_time: float = 5.0,
        allowed_fails: int = 3,
        redis_url: str | None = None,
        redis_prefix: str = "tracking:router:",
        latency_window: int = 10,
        state: RouterState | None = None,
        register_prices: bool = True,
        model_list_prices: Mapping[str, tuple[str, dict[str, Any]]] | None = None,
    ) -> None:
        deployments, prices = load_deployments(model_list, model_list_prices)
        self.deployments: tuple[Deployment, ...] = deployments
        groups: dict[str, list[Deployment]] = {}
        for deployment in self.deployments:
            groups.setdefault(deployment.model_name, []).append(deployment)
        self.groups: dict[str, tuple[Deployment, ...]] = {k: tuple(v) for k, v in groups.items()}
        self.fallbacks = parse_fallbacks(fallbacks, self.groups)
        self.strategy = strategy_named(routing_strategy)
        self.num_retries = _count("num_retries", num_retries, high=MAX_RETRIES)
        self.allowed_fails = _count("allowed_fails", allowed_fails)
        if isinstance(cooldown_time, bool) or not isinstance(cooldown_time, int | float):
            raise ConfigurationError("cooldown_time: expected a number of seconds")
        if not 0 <= cooldown_time <= MAX_TIMEOUT:  # also False for NaN
            raise ConfigurationError(
                f"cooldown_time: must be between 0 and {MAX_TIMEOUT:g} seconds, "
                f"got {cooldown_time!r}"
            )
        self.cooldown_time = float(cooldown_time)
        if (
            isinstance(latency_window, bool)
            or not isinstance(latency_window, int)
            or latency_window < 1
        ):
            raise ConfigurationError(
                f"latency_window: expected an integer >= 1, got {latency_window!r}"
            )
        if redis_url is not None and not isinstance(redis_url, str):
            raise ConfigurationError(
                f"redis_url: expected a redis:// URL, got {type(redis_url).__name__}"
            )
        if not isinstance(redis_prefix, str):
            raise ConfigurationError(f"redis_prefix: expected a string, got {redis_prefix!r}")
        if state is None and redis_url:
            try:
                state = RedisState(
                    redis_url,
                    prefix=redis_prefix,
                    latency_window=latency_window,
                    socket_timeout=timeout_from_environment(SOCKET_TIMEOUT),
                )
            except ValueError as exc:  # redis-py's reading of the URL
                raise ConfigurationError(f"redis_url: {exc}") from None
        if state is None:
            state = MemoryState(latency_window=latency_window)
        self.state: RouterState = state
        #: The state's operations as routing steps: awaited on the async path (see ``stepwise``).
        self.stepwise_state = stepwise(state)
        #: Called with (model group, deployment id) whenever this router starts a cooldown;
        #: the Prometheus integration counts ``image_edit_deployment_cooldowns_total`` here.
        self.cooldown_observers: list[CooldownObserver] = []
        if register_prices:  # last: a config refused above registers nothing
            from ..pricing.model_info import register_model_list_prices

            register_model_list_prices(prices)

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any] | str | os.PathLike[str], **overrides: Any
    ) -> Router:
        """A router from a LiteLLM-style proxy config: ``model_list``, ``router_settings``
        (and ``fallbacks`` / ``num_retries`` under ``litellm_settings``, where LiteLLM also
        reads them). ``redis_host`` / ``redis_port`` / ``redis_password`` become a URL;
        ``router_settings.timeout`` is the timeout of every deployment that sets none in its
        ``litellm_params``.

        ``config`` is the parsed mapping or the path of a ``config.yaml``. A path is read as
        ``tracking serve`` reads it (:func:`tracking.config.read_yaml`: bounded, and every price
        the exact decimal written); a mapping from ``yaml.safe_load`` holds binary floats, and a
        price written with more than 15 significant digits is then the float's amount. As
        ``tracking serve`` (and LiteLLM's proxy) does, a file's ``environment_variables`` are put
        into ``os.environ`` first, the file winning over the process's own, so that its
        ``os.environ/NAME`` references and the providers' own variables find them."""
        if isinstance(config, (str, os.PathLike)):
            from ..config import file_environment, read_yaml

            config = read_yaml(config)
            if isinstance(config, Mapping):
                os.environ.update(file_environment(config))
        if not isinstance(config, Mapping):
            raise ConfigurationError("config: expected a mapping")
        settings: dict[str, Any] = {}
        litellm_settings = config.get("litellm_settings") or {}
        router_settings = config.get("router_settings") or {}
        for section, name in (
            (litellm_settings, "litellm_settings"),
            (router_settings, "router_settings"),
        ):
            if not isinstance(section, Mapping):
                raise ConfigurationError(f"{name}: expected a mapping")
        for key in ("fallbacks", "num_retries"):
            if key in litellm_settings:
                settings[key] = litellm_settings[key]
        settings.update({k: v for k, v in router_settings.items() if k in _SETTINGS})
        _check_fallbacks(config.get("model_list") or [], litellm_settings, router_settings)
        for key in ("redis_url", "redis_host", "redis_password"):
            if key in settings:
                settings[key] = resolve_env(settings[key], f"router_settings.{key}")
        host = settings.pop("redis_host", None)
        port = settings.pop("redis_port", None)
        if port is not None and (
            isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536
        ):
            raise ConfigurationError(
                f"router_settings.redis_port: expected a port from 1 to 65535, got {port!r}"
            )
        password = settings.pop("redis_password", None)
        nodes = settings.pop("redis_startup_nodes", None)
        lone = lone_redis_settings(
            {
                **settings,
                "redis_host": host,
                "redis_port": port,
                "redis_password": password,
                "redis_startup_nodes": nodes,
            }
        )
        if lone:
            raise ConfigurationError(lone[0])
        if (nodes or host) and not settings.get("redis_url"):
            from ..redis_outage import settings_redis_url

            settings["redis_url"] = settings_redis_url(
                {
                    "redis_startup_nodes": nodes,
                    "redis_host": host,
                    "redis_port": port,
                    "redis_password": password,
                }
            )
        settings.update(overrides)
        model_list = config.get("model_list") or []
        seconds(router_settings.get("timeout"), "router_settings.timeout")
        if router_settings.get("timeout") is not None and isinstance(model_list, list):
            model_list = [_with_timeout(d, router_settings["timeout"]) for d in model_list]
        return cls(model_list, **settings)

    def cool_down(self, deployment: Deployment, reason: str) -> bool:
        """Skip ``deployment`` for ``cooldown_time`` seconds, in every process sharing state;
        True when this started its cooldown, False when it was cooling down already (the
        observers are told only of a cooldown this router started)."""
        return run_steps(self.cool_down_steps(deployment, reason))

    def cool_down_steps(self, deployment: Deployment, reason: str) -> Steps[bool]:
        """:meth:`cool_down` as routing steps (a routed call's state exchange is yielded)."""
        if self.cooldown_time <= 0:
            return False
        started = yield from self.stepwise_state.cool_down(deployment.id, self.cooldown_time)
        # calls failing together each ask; one cooldown starts, and is logged and counted once
        # (a state of your own written before cool_down answered, returning None, counts each)
        if started is False:
            return False
        log.warning(
            "router: deployment %s of %r cooling down for %.3g s (%s)",
            deployment.id,
            deployment.model_name,
            self.cooldown_time,
            reason,
        )
        for observer in tuple(self.cooldown_observers):
            try:
                observer(deployment.model_name, deployment.id)
            except Exception:
                log.exception("router: cooldown observer %r failed", observer)
        return True

    def cooling(self, model_group: str | None = None) -> dict[str, float]:
        """Deployment id -> seconds of cooldown left, for the group (or all) cooling now."""
        deployments = self.groups.get(model_group, ()) if model_group else self.deployments
        return dict(self.state.snapshot([d.id for d in deployments]).cooling)

    def close(self) -> None:
        """Release the state backend's connections (the Redis client)."""
        self.state.close()

    def __enter__(self) -> Router:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Router({len(self.deployments)} deployments in {len(self.groups)} groups, "
            f"strategy={type(self.strategy).__name__})"
        )


def _count(name: str, value: Any, *, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(f"{name}: expected an integer >= 0, got {value!r}")
    if high is not None and value > high:
        raise ConfigurationError(f"{name}: must be at most {high}, got {value!r}")
    return value
