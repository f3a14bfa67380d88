"""Prices written in the proxy's config, handed to :func:`tracking.register_prices` at start.

Two places hold them. A top-level ``prices:`` section maps a model (as the upstream is called,
e.g. ``azure/my-deployment``) to ``register_prices`` fields (``tokens_per_million``,
``per_image``, ``base_model``, ``discount``, ``effective_from`` / ``effective_to``). A
deployment's ``model_info`` prices its ``litellm_params.model``: the same fields, or LiteLLM's
per-token spelling (``input_cost_per_token``, ``output_cost_per_token``,
``cache_read_input_token_cost`` and their ``*_image_token`` forms, in USD per token, turned into
USD per million tokens exactly), which LiteLLM also reads in ``litellm_params`` and so do we (the
two places may not disagree). Entries of the ``prices:`` section win over the deployment's for
the same model. A bad entry
fails the start with the path of the key in the config, and so does a ``base_model`` that names
no known price (:func:`check_base_models`). ``general_settings.prices_file`` names a user's
prices file (as ``tracking prices import`` writes it), loaded at start too.

A process reads a config's prices once (:func:`model_list_prices_of`): ``tracking serve``'s
check registers them, and the routers it and the app build are given what it read, and the
app's start finds them registered already (:func:`register_config_prices`). They were read four
times in one start, and the prices file's warnings said twice. They are read again only when
the price table changed since (:func:`tracking.pricing.prices_version`), or for another config.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from ..config import ProxyConfig

__all__ = [
    "check_base_models",
    "config_prices",
    "deployment_ids",
    "model_list_prices_of",
    "priced_models",
    "register_config_prices",
]


class _Read(NamedTuple):
    """A config's prices as this process last read them."""

    config: ProxyConfig
    #: :func:`tracking.pricing.prices_version` when they were read (or registered)
    version: int
    #: :func:`~tracking.pricing.model_info.model_list_prices` of its model_list
    model_list: dict[str, tuple[str, dict[str, Any]]]
    #: how many models :func:`register_config_prices` registered, None: not registered
    registered: int | None


_last: _Read | None = None
_last_lock = threading.Lock()


def _current(config: ProxyConfig) -> _Read | None:
    """What this process read of ``config``'s prices, while the price table is unchanged."""
    from ..pricing import prices_version

    last = _last
    if last is not None and last.config is config and last.version == prices_version():
        return last
    return None


def model_list_prices_of(config: ProxyConfig) -> dict[str, tuple[str, dict[str, Any]]]:
    """The prices ``config``'s model_list writes
    (:func:`~tracking.pricing.model_info.model_list_prices`, with the router's deployment ids),
    read once for the process: what it read last, while the price table has not changed since.
    The proxy's routers are given them (``Router(model_list_prices=...)``)."""
    global _last
    from ..pricing import prices_version
    from ..pricing.model_info import model_list_prices

    last = _current(config)
    if last is not None:
        return last.model_list
    version = prices_version()
    found = model_list_prices(
        (f"model_list[{index}]", d.model, d.model_info, d.litellm_params, deployment_id)
        for index, (d, deployment_id) in enumerate(
            zip(config.model_list, deployment_ids(config), strict=True)
        )
    )
    with _last_lock:
        _last = _Read(config, version, found, None)
    return found


def config_prices(config: ProxyConfig) -> dict[str, tuple[str, dict[str, Any]]]:
    """model -> (where in the config, ``register_prices`` fields), in the order they apply.

    Deployments of one model priced differently (or some not at all) register their own prices
    each, under the name their calls are priced as
    (:func:`~tracking.pricing.model_info.own_price_key`, with the router's deployment ids),
    and the model's name none of them; a model the ``prices:`` section names is priced by it
    alone, every deployment's calls included."""
    from ..pricing.model_info import own_price_key

    deployments = list(zip(config.model_list, deployment_ids(config), strict=True))
    found = dict(model_list_prices_of(config))
    for model, spec in config.prices.items():
        where = f"prices.{model}"
        if not isinstance(spec, Mapping):
            raise ConfigurationError(f"{where}: expected a mapping of register_prices fields")
        found[str(model)] = (where, dict(spec))
        for d, deployment_id in deployments:
            if d.model == model:
                found.pop(own_price_key(d.model, deployment_id), None)
    return found


def deployment_ids(config: ProxyConfig) -> list[str]:
    """The ids the router gives the config's deployments, in the model_list's order."""
    from ..router.deployments import deployment_id
    from .models import router_config

    return [deployment_id(entry) for entry in router_config(config)["model_list"]]


def priced_models(config: ProxyConfig, model_name: str) -> list[str]:
    """What the calls of the group ``model_name`` are priced as, one name per deployment: its
    own prices' name where it has its own, else its model (for the most a call may cost)."""
    from ..pricing.model_info import own_price_key

    found = config_prices(config)
    names = []
    for d, deployment_id in zip(config.model_list, deployment_ids(config), strict=True):
        if d.model_name == model_name:
            own = own_price_key(d.model, deployment_id)
            names.append(own if own in found else d.model)
    return names


def register_config_prices(config: ProxyConfig) -> int:
    """Register every price of the config; returns how many models got one. Once per process:
    when this process registered this config's prices and nothing changed the price table
    since, they are registered already, and the config is not read again."""
    global _last
    from ..pricing import prices_version, use_prices_file
    from ..pricing.model_info import register_found

    last = _current(config)
    if last is not None and last.registered is not None:
        return last.registered
    prices_file = config.general_settings.prices_file
    if prices_file is not None:
        try:
            use_prices_file(prices_file)
        except ConfigurationError as exc:
            raise ConfigurationError(
                f"{_source(config)}general_settings.prices_file: {exc.message}"
            ) from None
    model_list = model_list_prices_of(config)  # (the prices file's tiers read first)
    count = register_found(config_prices(config), _source(config))
    check_base_models(config)
    with _last_lock:  # (registering changed the version: what was read holds still)
        _last = _Read(config, prices_version(), model_list, count)
    return count


def check_base_models(config: ProxyConfig) -> None:
    """Refuse a ``base_model`` (a deployment's ``model_info``'s, or a ``prices:`` entry's) that
    names no price in force today once the config's prices are registered: its calls would be
    recorded unpriced (they are never priced by another name), which is a fault of the config,
    said at start with its path rather than found at the first call."""
    from ..pricing import billing_entry

    given = [
        (f"model_list[{index}].model_info.base_model", d.model_info.get("base_model"))
        for index, d in enumerate(config.model_list)
    ]
    given += [
        (f"prices.{model}.base_model", spec.get("base_model"))
        for model, spec in config.prices.items()
        if isinstance(spec, Mapping)
    ]
    for where, base_model in given:
        if isinstance(base_model, str) and billing_entry(base_model) is None:
            raise ConfigurationError(
                f"{_source(config)}{where}: {base_model!r} names no known price (not in the "
                "bundled price table, the prices: section, a prices file or a deployment's "
                "model_info): its calls would be recorded unpriced; check the name, or give it "
                "a price"
            )


def _source(config: ProxyConfig) -> str:
    return f"{config.source}: " if config.source else ""
