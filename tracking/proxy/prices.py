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

import logging
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from ..decimals import strict_decimal
from ..errors import ConfigurationError

if TYPE_CHECKING:
    from ..config import ProxyConfig

__all__ = ["config_prices", "register_config_prices"]

log = logging.getLogger("tracking.proxy")

#: model_info keys that are ``register_prices`` fields as they are.
_NATIVE = ("tokens_per_million", "per_image", "base_model", "discount")
#: LiteLLM's per-token keys (those of :data:`~tracking.config.LITELLM_PRICE_KEYS`) -> the token
#: kinds they price; the image tokens' own keys first, so they win over the general ones.
_PER_TOKEN = {
    "input_cost_per_image_token": ("input_image",),
    "output_cost_per_image_token": ("output_image",),
    "cache_read_input_image_token_cost": ("cached_input_image",),
    "input_cost_per_token": ("input_text", "input_image"),
    "output_cost_per_token": ("output_image",),
    "cache_read_input_token_cost": ("cached_input_text", "cached_input_image"),
}
_MILLION = Decimal(1_000_000)


def _per_million(value: Any, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ConfigurationError(f"{where}: expected a price in USD per token")
    try:
        # A float from YAML is read through its repr: 5e-06 is exactly 0.000005, not its binary.
        price = strict_decimal(repr(value) if isinstance(value, float) else value)
    except InvalidOperation:
        raise ConfigurationError(f"{where}: expected a price in USD per token") from None
    if not price.is_finite() or price < 0:
        raise ConfigurationError(f"{where}: expected a price >= 0")
    return price * _MILLION


def _deployment_prices(
    info: Mapping[str, Any], params: Mapping[str, Any], where: str
) -> dict[str, Any]:
    """The ``register_prices`` fields of one deployment: its ``model_info``'s own fields and
    LiteLLM's per-token keys from ``litellm_params`` or ``model_info`` (the same key in both
    must give the same price)."""
    spec: dict[str, Any] = {key: info[key] for key in _NATIVE if info.get(key) is not None}
    tokens: dict[str, Any] = dict(spec.get("tokens_per_million") or {})
    for key, kinds in _PER_TOKEN.items():
        given = {
            f"{where}.{section}.{key}": _per_million(values[key], f"{where}.{section}.{key}")
            for section, values in (("litellm_params", params), ("model_info", info))
            if values.get(key) is not None
        }
        if not given:
            continue
        if len(set(given.values())) > 1:
            raise ConfigurationError(f"{' and '.join(given)} give different prices; keep one")
        per_million = next(iter(given.values()))
        for kind in kinds:
            tokens.setdefault(kind, per_million)
    if tokens:
        spec["tokens_per_million"] = tokens
    from ..pricing.model_info import PER_IMAGE_KEYS, model_info_per_image

    # LiteLLM's price of one output image, and by size (``"1024x1024"`` or ``"1024x1024/high"``):
    # the ``per_image`` table the deployment's calls are billed from and cost-based routing reads
    per_image = model_info_per_image(info)
    if per_image:
        if "per_image" in spec:
            raise ConfigurationError(
                f"{where}.model_info: per_image and {' / '.join(PER_IMAGE_KEYS)} both price "
                "its images; keep one"
            )
        spec["per_image"] = per_image
    return spec


def config_prices(config: ProxyConfig) -> dict[str, tuple[str, dict[str, Any]]]:
    """model -> (where in the config, ``register_prices`` fields), in the order they apply."""
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for index, deployment in enumerate(config.model_list):
        where = f"model_list[{index}]"
        spec = _deployment_prices(deployment.model_info, deployment.litellm_params, where)
        if not spec:
            continue
        earlier = found.get(deployment.model)
        if earlier is not None and earlier[1] != spec:
            log.warning(
                "%s: prices %r differently from %s; the later entry wins",
                where,
                deployment.model,
                earlier[0],
            )
        found[deployment.model] = (where, spec)
    for model, spec in config.prices.items():
        where = f"prices.{model}"
        if not isinstance(spec, Mapping):
            raise ConfigurationError(f"{where}: expected a mapping of register_prices fields")
        found[str(model)] = (where, dict(spec))
    return found


def register_config_prices(config: ProxyConfig) -> int:
    """Register every price of the config; returns how many models got one."""
    from ..pricing import register_prices, use_prices_file

    prices_file = config.general_settings.prices_file
    if prices_file is not None:
        try:
            use_prices_file(prices_file)
        except ConfigurationError as exc:
            raise ConfigurationError(
                f"{_source(config)}general_settings.prices_file: {exc.message}"
            ) from None
    entries = config_prices(config)
    for model, (where, spec) in entries.items():
        try:
            register_prices(model, **spec)
        except ConfigurationError as exc:
            raise ConfigurationError(f"{_source(config)}{where}: {exc.message}") from None
    return len(entries)


def _source(config: ProxyConfig) -> str:
    return f"{config.source}: " if config.source else ""
