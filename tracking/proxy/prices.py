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
fails the start with the path of the key in the config. ``general_settings.prices_file`` names a
user's prices file (as ``tracking prices import`` writes it), loaded at start too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from ..config import ProxyConfig

__all__ = ["config_prices", "register_config_prices"]


def config_prices(config: ProxyConfig) -> dict[str, tuple[str, dict[str, Any]]]:
    """model -> (where in the config, ``register_prices`` fields), in the order they apply."""
    from ..pricing.model_info import model_list_prices

    found = model_list_prices(
        (f"model_list[{index}]", d.model, d.model_info, d.litellm_params)
        for index, d in enumerate(config.model_list)
    )
    for model, spec in config.prices.items():
        where = f"prices.{model}"
        if not isinstance(spec, Mapping):
            raise ConfigurationError(f"{where}: expected a mapping of register_prices fields")
        found[str(model)] = (where, dict(spec))
    return found


def register_config_prices(config: ProxyConfig) -> int:
    """Register every price of the config; returns how many models got one."""
    from ..pricing import use_prices_file
    from ..pricing.model_info import register_found

    prices_file = config.general_settings.prices_file
    if prices_file is not None:
        try:
            use_prices_file(prices_file)
        except ConfigurationError as exc:
            raise ConfigurationError(
                f"{_source(config)}general_settings.prices_file: {exc.message}"
            ) from None
    return register_found(config_prices(config), _source(config))


def _source(config: ProxyConfig) -> str:
    return f"{config.source}: " if config.source else ""
