"""The proxy's ``config.yaml`` (LiteLLM's shape) and environment, read once and validated.

:func:`load_config` reads a file, :func:`parse_config` a mapping already loaded. Both resolve
``os.environ/NAME`` references anywhere in the document, check every known key's type and range,
and raise one :class:`~tracking.errors.ConfigurationError` listing every fault by the path of the
bad key (``model_list[2].litellm_params.model: required``). Unknown keys are kept and reported
in :attr:`ProxyConfig.warnings` (and logged), never fatal: configs written for LiteLLM carry
settings we do not use. Secrets (provider keys, the master key) are never shown by ``repr``.
"""

from __future__ import annotations

import difflib
import functools
import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from .bounded_read import read_at_most
from .decimals import WrittenFloat, budget_fault, written_decimal
from .endpoint import vertex_setting_problem
from .errors import ConfigurationError
from .request import MAX_RETRIES, MAX_TIMEOUT  # a config's bounds are a call's

__all__ = [
    "DEFAULT_MAX_INFLIGHT_UPLOAD_MB",
    "DEFAULT_MAX_PARALLEL_REQUESTS_PER_KEY",
    "DEFAULT_MAX_REQUEST_SIZE_MB",
    "MAX_CONFIG_BYTES",
    "MAX_CONFIG_DEPTH",
    "MAX_CONFIG_NODES",
    "Deployment",
    "EnvironmentText",
    "GeneralSettings",
    "LitellmSettings",
    "ProxyConfig",
    "export_environment",
    "file_environment",
    "load_config",
    "parse_config",
]

log = logging.getLogger("tracking.config")

DEFAULT_MAX_REQUEST_SIZE_MB = 64.0
#: One key's edits in flight on one instance, by default (0 in the config: no limit).
DEFAULT_MAX_PARALLEL_REQUESTS_PER_KEY = 100
#: The request bytes of all edits in flight on one instance, by default (3 largest requests).
DEFAULT_MAX_INFLIGHT_UPLOAD_MB = 192.0
#: Seconds a client has to send a request's headers, and again its body (a slow client cannot
#: hold the server).
DEFAULT_REQUEST_READ_TIMEOUT = 120.0
_ENV_PREFIX = "os.environ/"

#: A config file larger than this is refused before it is read (ordinary ones are a few KB).
MAX_CONFIG_BYTES = 4 * 1024 * 1024
#: YAML nodes a config document may hold, counted with every alias expanded where it is used: a
#: ``<<: *defaults`` merge counts the nodes of ``defaults`` again. A few thousand deployments fit;
#: an alias bomb ("billion laughs", nested aliases expanding to billions of nodes) does not.
MAX_CONFIG_NODES = 100_000
#: Collections nested in one another at most (LiteLLM configs nest about six deep).
MAX_CONFIG_DEPTH = 64

Check = Callable[[Any], str | None]  # returns a fault ("expected ...") or None


def _is_str(value: Any) -> str | None:
    return None if isinstance(value, str) and value else "expected a non-empty string"


#: What every key of the proxy starts with, the master key included: LiteLLM's rule (its
#: virtual keys are ``sk-`` and its docs require it of ``master_key``); a client or a gateway
#: written for LiteLLM may rely on it.
_MASTER_KEY_PREFIX = "sk-"


def _is_master_key(value: Any) -> str | None:
    """A string starting with ``sk-``; the fault never repeats the key (it is a secret)."""
    fault = _is_str(value)
    if fault is not None:
        return fault
    if not value.startswith(_MASTER_KEY_PREFIX) or value == _MASTER_KEY_PREFIX:
        return (
            f"must start with {_MASTER_KEY_PREFIX!r}, as LiteLLM requires of a master key "
            "(generate one: python -c \"import secrets; print('sk-' + secrets.token_urlsafe(32))\")"
        )
    return None


def _is_database_url(value: Any) -> str | None:
    """A URL SQLAlchemy can parse (checked where SQLAlchemy is installed: the proxy's extra).
    The fault never repeats the text: it may hold a password."""
    fault = _is_str(value)
    if fault is not None:
        return fault
    try:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError
    except ImportError:
        return None
    try:
        make_url(value)
    except (ArgumentError, ValueError):
        return (
            "not a database URL SQLAlchemy can read (expected e.g. sqlite:///./tracking.db "
            "or postgresql://user:password@host:5432/db; a port must be a number)"
        )
    return None


def _is_bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else "expected true or false"


def _is_int(low: int = 0, high: int | None = None) -> Check:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return "expected an integer"
        if value < low:
            return f"must be at least {low}, got {value}"
        return None if high is None or value <= high else f"must be at most {high}, got {value}"

    return check


def _is_positive_number(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "expected a number"
    return None if value > 0 else f"must be greater than 0, got {value}"


def _is_non_negative_number(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "expected a number"
    return None if value >= 0 else f"must be at least 0, got {value}"


def _is_price_text(value: Any) -> str | None:
    """A price as YAML gives it: a number or a decimal string (read exactly, as written, at
    start: see :mod:`tracking.proxy.prices`)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return "expected a price in USD per token (a number)"
    return None


def _budget(value: Any) -> Decimal | None:
    """A checked budget (:func:`_is_budget`) as the Decimal written; -0 is 0."""
    return None if value is None else written_decimal(value).copy_abs()


def _is_budget(value: Any) -> str | None:
    """A budget in USD (``litellm_settings.max_budget``): a number or a decimal string, read as
    written (:func:`~tracking.decimals.written_decimal`: ``999999999.9999999999`` is not the
    float 1000000000.0), within the bounds of every budget (:func:`~tracking.decimals.budget_fault`:
    finite, 0 to $1,000,000,000, at most 10 decimal places)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return "expected an amount in USD (a number)"
    try:
        amount = written_decimal(value)
    except InvalidOperation:
        return f"expected an amount in USD (a number), got {value!r}"
    if amount.is_finite() and amount < 0:
        return f"must be at least 0, got {getattr(value, 'text', value)}"
    return budget_fault(amount)


#: ``litellm_settings.budget_duration`` as LiteLLM writes it -> the proxy's budget period (UTC
#: windows, as end users' budgets: a day, a calendar month).
BUDGET_DURATIONS = {
    "1d": "daily",
    "24h": "daily",
    "daily": "daily",
    "1mo": "monthly",
    "monthly": "monthly",
    "total": "total",
}


def _is_budget_duration(value: Any) -> str | None:
    if isinstance(value, str) and value in BUDGET_DURATIONS:
        return None
    return (
        "one of 1d (a UTC day), 1mo (a UTC calendar month) or total (all time; also the "
        f"default), got {value!r}; other durations are not supported"
    )


def _is_enforced_params(value: Any) -> str | None:
    """LiteLLM's ``enforced_params``: ``user`` or ``metadata.<key>`` names."""
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        return "expected a list of names (user, metadata.<key>)"
    for item in value:
        if item != "user" and not (item.startswith("metadata.") and len(item) > len("metadata.")):
            return f"takes user and metadata.<key> entries, got {item!r}"
    return None


#: An HTTP header's name (RFC 9110's token characters).
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}")
#: The roles of LiteLLM's ``user_header_mappings``: ``customer`` names the call's end user.
_HEADER_ROLES = ("customer", "internal_user")


def _is_header_name(value: Any) -> str | None:
    if isinstance(value, str) and _HEADER_NAME.fullmatch(value):
        return None
    return f"expected an HTTP header's name, got {value!r}"


def _is_header_mappings(value: Any) -> str | None:
    """LiteLLM's ``user_header_mappings``: ``{header_name, litellm_user_role}`` entries."""
    if not isinstance(value, list):
        return "expected a list of {header_name, litellm_user_role} entries"
    for index, item in enumerate(value):
        if not isinstance(item, Mapping) or set(item) != {"header_name", "litellm_user_role"}:
            return f"[{index}]: expected exactly header_name and litellm_user_role"
        if (fault := _is_header_name(item["header_name"])) is not None:
            return f"[{index}].header_name: {fault}"
        if item["litellm_user_role"] not in _HEADER_ROLES:
            return f"[{index}].litellm_user_role: one of customer, internal_user"
    return None


def end_user_header_names(general: Mapping[str, Any]) -> tuple[str, ...]:
    """The headers of ``general_settings`` that name a call's end user, in the order LiteLLM
    reads them (after its own ``x-litellm-customer-id`` / ``x-litellm-end-user-id``): the
    ``customer`` entries of ``user_header_mappings``, else ``user_header_name`` (deprecated in
    LiteLLM for the mappings, which override it); lowercase, as headers are compared."""
    mappings = general.get("user_header_mappings") or ()
    names = [m["header_name"].lower() for m in mappings if m["litellm_user_role"] == "customer"]
    if not names and general.get("user_header_name"):
        names = [general["user_header_name"].lower()]
    return tuple(dict.fromkeys(names))


def _is_seconds(value: Any) -> str | None:
    """A duration: finite, > 0 and at most a day (what a call's own ``timeout`` may be)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "expected a number of seconds"
    if not 0 < value <= MAX_TIMEOUT:
        return f"must be greater than 0 and at most {MAX_TIMEOUT:g} seconds, got {value}"
    return None


def _is_cooldown(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "expected a number of seconds"
    if not 0 <= value <= MAX_TIMEOUT:
        return f"must be between 0 and {MAX_TIMEOUT:g} seconds, got {value}"
    return None


def _is_url(value: Any) -> str | None:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        return "expected an http(s) URL"
    return None


def _is_str_list(value: Any) -> str | None:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        return "expected a list of names"
    return None


def _is_names_or_one(value: Any) -> str | None:
    """``callbacks``: a list of names, or one name alone, as LiteLLM's proxy docs write it
    (``callbacks: custom_callbacks.proxy_handler_instance``) and its proxy reads it."""
    if isinstance(value, str) and value:
        return None
    return _is_str_list(value)


def _names(value: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The names a checked ``callbacks`` value gives: one alone is one."""
    return (value,) if isinstance(value, str) else tuple(value)


def _is_list(value: Any) -> str | None:
    return None if isinstance(value, list) else "expected a list"


def _is_startup_nodes(value: Any) -> str | None:
    """LiteLLM's ``redis_startup_nodes``: a Redis Cluster's nodes, a list of ``{host, port}``."""
    from .redis_outage import cluster_url

    try:
        cluster_url(value)
    except ConfigurationError as exc:
        return str(exc).removeprefix("redis_startup_nodes: ")
    return None


def _is_mapping(value: Any) -> str | None:
    return None if isinstance(value, Mapping) else "expected a mapping"


#: ``litellm_settings.cache_params`` keys that name LiteLLM's cache's Redis, read for the
#: proxy's shared counters (:func:`tracking.redis_outage.cache_redis_url`); the others
#: configure a response cache this proxy does not have, and a warning names them.
_CACHE_REDIS_KEYS = ("type", "host", "port", "password", "redis_startup_nodes")


def _is_cache_params(value: Any) -> str | None:
    """LiteLLM's ``cache_params``: a mapping, whose Redis keys are checked."""
    if not isinstance(value, Mapping):
        return "expected a mapping"
    checks: dict[str, Check] = {
        "type": _is_str,
        "host": _is_str,
        "port": _is_int(1, 65535),
        "password": _is_str,
        "redis_startup_nodes": _is_startup_nodes,
    }
    for key, check in checks.items():
        if value.get(key) is not None and (fault := check(value[key])) is not None:
            return f"{key}: {fault}"
    return None


def _one_of(*choices: str) -> Check:
    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}; got {value!r}"

    return check


def _anything(value: Any) -> str | None:
    return None


def _is_strategy(value: Any) -> str | None:
    """A ``routing_strategy`` name the router knows: LiteLLM's and the short aliases
    ``Router`` takes too (one table, :data:`tracking.router.strategies.STRATEGIES`)."""
    from .router.strategies import STRATEGIES

    return _one_of(*STRATEGIES)(value)


#: The keys we read in each section, with their checks. Anything else warns.
_LITELLM_PARAMS: dict[str, Check] = {
    "model": _is_str,
    "api_key": _is_str,
    "api_base": _is_url,
    "api_version": _is_str,
    "rpm": _is_int(1),
    "tpm": _is_int(1),
    "timeout": _is_seconds,
    "stream_timeout": _is_seconds,
    "max_retries": _is_int(0, MAX_RETRIES),
    "drop_params": _is_bool,
    "organization": _is_str,
    "weight": _is_non_negative_number,
    "order": _is_int(1),
    "vertex_project": functools.partial(vertex_setting_problem, "vertex_project"),
    "vertex_location": functools.partial(vertex_setting_problem, "vertex_location"),
    # LiteLLM's other names for the two (tracking.router.deployments.VERTEX_ALIASES)
    "vertex_ai_project": functools.partial(vertex_setting_problem, "vertex_project"),
    "vertex_ai_location": functools.partial(vertex_setting_problem, "vertex_location"),
    "vertex_credentials": _anything,
}
#: LiteLLM's per-token price keys, in USD per token: LiteLLM reads them in a deployment's
#: ``litellm_params`` or its ``model_info``, and so does the proxy (``tracking.proxy.prices``).
LITELLM_PRICE_KEYS = (
    "input_cost_per_token",
    "output_cost_per_token",
    "cache_read_input_token_cost",
    "input_cost_per_image_token",
    "output_cost_per_image_token",
    "cache_read_input_image_token_cost",
)
_LITELLM_PARAMS.update(dict.fromkeys(LITELLM_PRICE_KEYS, _is_price_text))
_DEPLOYMENT: dict[str, Check] = {
    "model_name": _is_str,
    "litellm_params": _is_mapping,
    "model_info": _is_mapping,
    # LiteLLM reads these beside litellm_params too (inside it wins): passed to the router.
    "rpm": _is_int(1),
    "tpm": _is_int(1),
}


def _is_key_duration(value: Any) -> str | None:
    """A key's lifetime as ``/key/generate``'s ``duration`` takes it (``30d``, ``12h``...)."""
    from .proxy.errors import ProxyError
    from .proxy.keys import parse_duration

    if not isinstance(value, str):
        return "expected a duration such as 30s, 15m, 12h or 30d"
    try:
        parse_duration(value)
    except ProxyError as error:
        return error.message.removeprefix("duration: ")
    return None


def _is_rpm_limit(value: Any) -> str | None:
    from .proxy.limits import MAX_RPM_LIMIT

    return _is_int(1, MAX_RPM_LIMIT)(value)


#: ``litellm_settings.default_key_generate_params``: LiteLLM's defaults for ``/key/generate``
#: (copied onto a key when it is made; a field the request gives wins), for the fields this
#: proxy's keys have. Any other LiteLLM field is an error at start naming it, never ignored:
#: whoever wrote a default budget period or token limit believes new keys are capped by it.
_KEY_DEFAULTS: dict[str, Check] = {
    "max_budget": _is_budget,
    "models": _is_str_list,
    "duration": _is_key_duration,
    "rpm_limit": _is_rpm_limit,
    "team_id": _is_str,
}
_KEY_DEFAULTS_REFUSED = {
    "budget_duration": "this proxy's keys have no budget period: a key's max_budget counts "
    "over its whole life (use the whole proxy's budget_duration, or end users' budget_period)",
    "tpm_limit": "this proxy's keys have no token limit (rpm_limit is one)",
    "max_parallel_requests": "set general_settings.max_parallel_requests_per_key instead",
}


def key_defaults_faults(value: Mapping[str, Any], served: Mapping[str, Any]) -> list[str]:
    """What is wrong with ``default_key_generate_params`` (``served``: the model names)."""
    where = "litellm_settings.default_key_generate_params"
    faults: list[str] = []
    for key, item in value.items():
        check = _KEY_DEFAULTS.get(key) if isinstance(key, str) else None
        if check is None:
            why = _KEY_DEFAULTS_REFUSED.get(key) if isinstance(key, str) else None
            faults.append(
                f"{where}.{key}: "
                + (why or "not a field of this proxy's keys")
                + f" (the defaults it takes: {', '.join(_KEY_DEFAULTS)})"
            )
            continue
        fault = None if item is None else check(item)
        if fault:
            faults.append(f"{where}.{key}: {fault}")
    models = value.get("models")
    if isinstance(models, list):
        unknown = [m for m in models if isinstance(m, str) and m not in served]
        if unknown:
            faults.append(
                f"{where}.models: this proxy serves no model {', '.join(map(repr, unknown))}"
            )
    return faults


_LITELLM_SETTINGS: dict[str, Check] = {
    "success_callback": _is_str_list,
    "failure_callback": _is_str_list,
    "callbacks": _is_names_or_one,
    "fallbacks": _is_list,
    "drop_params": _is_bool,
    "num_retries": _is_int(0, MAX_RETRIES),
    "request_timeout": _is_seconds,
    "set_verbose": _is_bool,
    "json_logs": _is_bool,
    "enable_end_user_cost_tracking_prometheus_only": _is_bool,
    "max_budget": _is_budget,
    "budget_duration": _is_budget_duration,
    "cache": _is_bool,
    "cache_params": _is_cache_params,
    "default_key_generate_params": _is_mapping,
}
_ROUTER_SETTINGS: dict[str, Check] = {
    "routing_strategy": _is_strategy,
    "num_retries": _is_int(0, MAX_RETRIES),
    "timeout": _is_seconds,
    "allowed_fails": _is_int(0),
    "cooldown_time": _is_cooldown,
    "retry_after": _is_non_negative_number,
    "fallbacks": _is_list,
    "context_window_fallbacks": _is_list,
    "enable_pre_call_checks": _is_bool,
    "model_group_alias": _is_mapping,
    "redis_host": _is_str,
    "redis_port": _is_int(1),
    "redis_password": _is_str,
    "redis_url": _is_str,
    "redis_startup_nodes": _is_startup_nodes,
}
#: router_settings keys a LiteLLM config may hold that are checked but have no effect here.
#: litellm_params LiteLLM knows that the router does not use, and why (a warning at start).
_LITELLM_PARAMS_NOT_USED = {
    "organization": "no OpenAI-Organization header is sent; use a key of that organization",
    "vertex_credentials": "no access token is made from a service account's key; give the "
    "deployment an access token as api_key (os.environ/NAME), or set VERTEX_ACCESS_TOKEN",
}
_ROUTER_SETTINGS_NOT_USED = frozenset(
    {"retry_after", "context_window_fallbacks", "enable_pre_call_checks", "model_group_alias"}
)
_PER_SCOPE = (
    "not enforced by this proxy; use the whole proxy's budget (litellm_settings.max_budget), "
    "keys' max_budget (/key/generate) or end users' budgets (/customer/new)"
)
_ACCESS = (
    "an access control this proxy does not enforce; put the proxy behind a gateway or network "
    "policy that does, and remove the key"
)
#: Why LiteLLM's ``input_cost_per_image`` is refused rather than priced: LiteLLM's cost map
#: uses the name for two prices (read 2026-12-07): per input image of a vision chat model
#: (Gemini's), and the *output* image's price of some image-generation entries
#: (``low/1024-x-1024/gpt-image-1``; :mod:`tracking.pricing.litellm_import`). Priced either way,
#: a config meaning the other would bill every call wrong without a word.
INPUT_PER_IMAGE = (
    "not priced by this proxy, and refused rather than ignored: LiteLLM uses the name both "
    "for a price per input image and for the output image's price. Write the price it is: "
    "output_cost_per_image (or output_cost_per_image_by_size) per output image, "
    "input_cost_per_image_token for input images priced by their tokens, or per_megapixel "
    "(its input) for a model billed per input megapixel"
)

#: LiteLLM's price names (its cost map's, which its configs also write in ``litellm_params`` or
#: ``model_info``): ``input_cost_per_pixel``, ``output_cost_per_second``,
#: ``cache_creation_input_token_cost``...
_LITELLM_PRICE_NAME = re.compile(r"[a-z0-9_]*(?:cost_per_|_token_cost)[a-z0-9_]*")
#: The price names a deployment's ``model_info`` is billed by (``litellm_params``: the token
#: prices of :data:`LITELLM_PRICE_KEYS` alone).
MODEL_INFO_PRICES = frozenset(
    {
        *LITELLM_PRICE_KEYS,
        "output_cost_per_image",
        "output_cost_per_image_by_size",
        "search_context_cost_per_query",
        "web_search_cost_per_request",
    }
)


def unread_prices(values: Mapping[str, Any], section: str) -> list[tuple[str, str]]:
    """LiteLLM price names in a deployment's ``section`` (``litellm_params`` or ``model_info``)
    that no call here is billed by, each with why it is refused: ignored (until 2026-12-07 with
    no word in ``model_info``, a warning in ``litellm_params``), the calls were billed at the
    price table's price, not the one written (``input_cost_per_pixel``, dall-e-2's in LiteLLM's
    cost map; ``output_cost_per_image`` in ``litellm_params``). ``input_cost_per_image``, in
    either section, is refused with :data:`INPUT_PER_IMAGE` as its whole reason."""
    read = LITELLM_PRICE_KEYS if section == "litellm_params" else MODEL_INFO_PRICES
    refused = []
    for key, value in values.items():
        if (
            not isinstance(key, str)
            or value is None
            or key in read
            or not _LITELLM_PRICE_NAME.fullmatch(key)
        ):
            continue
        if key == "input_cost_per_image":
            refused.append((key, INPUT_PER_IMAGE))
            continue
        if key in MODEL_INFO_PRICES:
            why = "read from model_info only: move it there"
        elif "pixel" in key:
            why = (
                "a price per pixel is not read here: write output_cost_per_image_by_size, each "
                "size's price per output image (its pixels times the price)"
            )
        else:
            why = (
                "not a price this proxy bills image calls by: write output_cost_per_image, "
                "output_cost_per_image_by_size or the token prices ("
                + ", ".join(LITELLM_PRICE_KEYS)
                + ")"
            )
        refused.append((key, f"LiteLLM's price name, refused rather than ignored: {why}"))
    return refused


#: LiteLLM spending caps and access controls this proxy does not enforce: an error, never an
#: ignored key (whoever wrote one believes spend, or access, is limited).
_CAPS_NOT_ENFORCED = {
    "general_settings.allowed_ips": _ACCESS,
    "general_settings.allowed_routes": _ACCESS,
    "general_settings.admin_only_routes": _ACCESS,
    "general_settings.public_routes": _ACCESS,
    "litellm_settings.max_end_user_budget": _PER_SCOPE,
    "litellm_settings.max_internal_user_budget": _PER_SCOPE,
    "router_settings.provider_budget_config": _PER_SCOPE,
    "model_list.litellm_params.max_budget": _PER_SCOPE,
    "model_list.litellm_params.budget_duration": _PER_SCOPE,
}
#: litellm_settings keys checked and without effect (logging is ``tracking serve --log-level``'s).
_LITELLM_SETTINGS_NOT_USED = frozenset({"set_verbose", "json_logs"})
_GENERAL_SETTINGS: dict[str, Check] = {
    "master_key": _is_master_key,
    "database_url": _is_database_url,
    "max_request_size_mb": _is_positive_number,
    "request_read_timeout": _is_seconds,
    "max_parallel_requests_per_key": _is_int(0),
    "max_inflight_upload_mb": _is_non_negative_number,
    "require_auth_for_metrics": _is_bool,
    "ledger_mode": _one_of("durable", "background"),
    "auto_migrate": _is_bool,
    "ledger_stuck_after": _is_positive_number,
    "budget_store_unavailable": _one_of("deny", "allow"),
    "allow_open_spend_reads": _is_bool,
    "image_store": _is_mapping,
    "allow_unpriced_with_budgets": _is_bool,
    "prices_file": _is_str,
    "cors_allow_origins": _is_str_list,
    "enforce_user_param": _is_bool,
    "enforced_params": _is_enforced_params,
    "enforce_fallback_model_access": _is_bool,
    "user_header_name": _is_header_name,
    "user_header_mappings": _is_header_mappings,
}
_TOP_LEVEL: dict[str, Check] = {
    "model_list": _is_list,
    "litellm_settings": _is_mapping,
    "router_settings": _is_mapping,
    "general_settings": _is_mapping,
    "environment_variables": _is_mapping,
    "prices": _is_mapping,
}


@dataclass(frozen=True, slots=True)
class Deployment:
    """One ``model_list`` entry: the public ``model_name`` and how to reach its upstream."""

    model_name: str
    #: ``litellm_params`` with ``os.environ/`` references resolved (may hold secrets).
    litellm_params: Mapping[str, Any] = field(repr=False)
    model_info: Mapping[str, Any] = field(default_factory=dict)

    @property
    def model(self) -> str:
        value: str = self.litellm_params["model"]
        return value

    def __repr__(self) -> str:  # litellm_params may hold an API key
        return f"Deployment(model_name={self.model_name!r}, model={self.model!r})"


@dataclass(frozen=True, slots=True)
class LitellmSettings:
    success_callback: tuple[str, ...] = ()
    failure_callback: tuple[str, ...] = ()
    callbacks: tuple[str, ...] = ()
    #: LiteLLM's ``[{"model-a": ["model-b"]}]``; the router reads it beside router_settings'.
    fallbacks: tuple[Any, ...] = ()
    drop_params: bool = False
    num_retries: int | None = None
    request_timeout: float | None = None
    #: LiteLLM's ``enable_end_user_cost_tracking_prometheus_only``: the opt-in per-end-user cost
    #: metric (``image_edit_end_user_cost_usd_total{end_user}``, series bounded).
    end_user_metric: bool = False
    #: LiteLLM's whole-proxy budget (``max_budget``, USD): every call through the proxy counts,
    #: whichever key or end user makes it; None: no such budget.
    max_budget: Decimal | None = None
    #: Its period (``budget_duration``: ``daily``, ``monthly`` or ``total``).
    budget_period: str = "total"
    #: LiteLLM's ``default_key_generate_params``: what ``/key/generate`` gives a key whose
    #: request leaves that field out (``max_budget`` a Decimal, as written; ``models``,
    #: ``duration``, ``rpm_limit``, ``team_id`` as written).
    key_defaults: Mapping[str, Any] = field(default_factory=dict)
    #: The Redis LiteLLM's response cache would use (``cache: true`` with ``cache_params``'
    #: ``redis_startup_nodes`` or ``host``, or the ``REDIS_CLUSTER_NODES`` environment
    #: variable), as a URL: the proxy's shared counters use it when ``router_settings`` names
    #: no Redis (:func:`tracking.redis_outage.cache_redis_url`). May hold a password.
    redis_url: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class GeneralSettings:
    master_key: str | None = field(default=None, repr=False)
    database_url: str | None = field(default=None, repr=False)  # may embed a password
    max_request_size_mb: float = DEFAULT_MAX_REQUEST_SIZE_MB
    request_read_timeout: float = DEFAULT_REQUEST_READ_TIMEOUT
    #: Edits of one key in flight on one instance at most (None: no limit; 0 in the file).
    max_parallel_requests_per_key: int | None = DEFAULT_MAX_PARALLEL_REQUESTS_PER_KEY
    #: Request bytes of every edit in flight on one instance together, at most (0: no cap).
    max_inflight_upload_mb: float = DEFAULT_MAX_INFLIGHT_UPLOAD_MB
    require_auth_for_metrics: bool = False
    ledger_mode: str = "durable"
    auto_migrate: bool = False
    #: Seconds the ledger's shipper may fail to reach its database before readiness says so.
    ledger_stuck_after: float = 60.0
    #: With the budget store (PostgreSQL) away, calls naming an end user who has a budget are
    #: refused (``deny``) or served unchecked (``allow``); users without a budget are served.
    budget_store_unavailable: str = "deny"
    #: Without a master key ``/spend/*`` answers 403 unless this is true (anyone may read then).
    allow_open_spend_reads: bool = False
    #: URL answers for base64-only models (checked by :mod:`tracking.proxy.image_store`).
    image_store: Mapping[str, Any] = field(default_factory=dict)
    #: Let a key or end user with a budget call a model that has no price (not counted).
    allow_unpriced_with_budgets: bool = False
    #: A user's prices file (``tracking prices import`` writes one); relative to the config.
    prices_file: Path | None = None
    #: Browser origins allowed to call the proxy (CORS); empty: CORS off. ``"*"``: any.
    cors_allow_origins: tuple[str, ...] = ()
    #: What every call must carry (LiteLLM's ``enforce_user_param`` / ``enforced_params``):
    #: ``user`` (the end user, as ``user`` or ``safety_identifier``) and ``metadata.<key>``.
    enforced_params: tuple[str, ...] = ()
    #: A virtual key is served by a fallback only when its ``models`` name the fallback's group
    #: (LiteLLM's flag of that name; off: a fallback serves any key, as in LiteLLM).
    enforce_fallback_model_access: bool = False
    #: Headers of the deployment's choosing that name a call's end user, read after LiteLLM's
    #: standard two (``user_header_mappings``' customer headers, else ``user_header_name``).
    end_user_headers: tuple[str, ...] = ()

    @property
    def max_request_bytes(self) -> int:
        return int(self.max_request_size_mb * 1024 * 1024)

    @property
    def max_inflight_upload_bytes(self) -> int | None:
        return int(self.max_inflight_upload_mb * 1024 * 1024) or None


@dataclass(frozen=True, slots=True)
class ProxyConfig:
    """The whole validated configuration of one proxy."""

    model_list: tuple[Deployment, ...] = ()
    litellm_settings: LitellmSettings = field(default_factory=LitellmSettings)
    #: Kept as given (checked where known): the router takes them as keyword arguments.
    router_settings: Mapping[str, Any] = field(default_factory=dict, repr=False)
    general_settings: GeneralSettings = field(default_factory=GeneralSettings)
    #: The top-level ``prices:`` section, model -> ``tracking.register_prices`` fields.
    prices: Mapping[str, Any] = field(default_factory=dict)
    source: Path | None = None
    warnings: tuple[str, ...] = ()
    #: The ``environment_variables:`` section (values as text): :func:`export_environment`
    #: puts them into the process environment, as LiteLLM's proxy does. May hold secrets.
    environment_variables: Mapping[str, str] = field(default_factory=dict, repr=False)

    def model_names(self) -> list[str]:
        """The public model names, each once, in the order of ``model_list``."""
        return list(dict.fromkeys(d.model_name for d in self.model_list))

    def deployments(self, model_name: str) -> list[Deployment]:
        return [d for d in self.model_list if d.model_name == model_name]


class _Faults:
    """Collects every fault and warning with the path of the key it is about."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def check_section(
        self, value: Mapping[str, Any], known: Mapping[str, Check], path: str
    ) -> dict[str, Any]:
        """The keys of ``value`` that passed their check; faults and unknown keys recorded."""
        good: dict[str, Any] = {}
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            check = known.get(key) if isinstance(key, str) else None
            if check is None:
                refused = _CAPS_NOT_ENFORCED.get(re.sub(r"\[\d+\]", "", where))
                if refused is not None:  # a spending cap dropped with a warning is worse
                    self.errors.append(f"{where}: {refused}")
                else:
                    self.warnings.append(f"{where}: unknown key, ignored{_near(key, known)}")
                continue
            if item is None:  # an empty YAML value means "not set"
                continue
            fault = check(item)
            if fault:
                self.errors.append(f"{where}: {fault}")
            else:
                good[key] = item
        return good


def _environment_fault(name: Any, value: Any) -> str | None:
    """Why one ``environment_variables`` entry cannot be exported (``os.environ`` refused it
    with a traceback at start), or None: a name is a non-empty string without ``=`` or NUL, a
    value text, a number or a boolean (exported as ``str()`` makes it, as LiteLLM does) and no
    NUL; an empty one is left out."""
    if not isinstance(name, str) or not name or "=" in name or "\0" in name:
        return (
            f"environment_variables: {name!r} is not an environment variable name (non-empty, "
            "no '=', no NUL)"
        )
    if value is None:
        return None
    if isinstance(value, Mapping | list):
        kind = "a mapping" if isinstance(value, Mapping) else "a list"
        return f"environment_variables.{name}: expected text, a number or true/false, got {kind}"
    if "\0" in str(value):
        return f"environment_variables.{name}: holds a NUL character, which no variable can"
    return None


def _near(key: object, known: Mapping[str, Check]) -> str:
    """`` (did you mean NAME?)`` for a key that is a typo of a known one, else nothing: a
    ``master_kye`` ignored with a bare warning left the proxy open, with the key the operator
    wrote in the file."""
    if not isinstance(key, str):
        return ""
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.8)
    return f" (did you mean {close[0]}?)" if close else ""


class EnvironmentText(str):
    """A config string read from the environment (``os.environ/NAME``): the variable's value,
    which knows the ``name`` it came from, so that what shows the configuration (``GET
    /model/info``'s ``model_info``) writes the reference, never the value (a secret, often)."""

    name: str

    def __new__(cls, value: str, name: str) -> EnvironmentText:
        text = super().__new__(cls, value)
        text.name = name
        return text

    def __reduce__(self) -> tuple[type[EnvironmentText], tuple[str, str]]:
        return (EnvironmentText, (str(self), self.name))


def _resolve_env(
    value: Any, path: str, environ: Mapping[str, str], faults: _Faults, *, shown: bool = False
) -> Any:
    """Replace every ``os.environ/NAME`` string with the variable's value, recursively; in a
    ``model_info`` (``shown``: what ``GET /model/info`` answers) as an
    :class:`EnvironmentText`, which that route writes as its reference."""
    if isinstance(value, str) and value.startswith(_ENV_PREFIX):
        name = value[len(_ENV_PREFIX) :].strip()
        resolved = environ.get(name)
        if not name or resolved is None or resolved == "":
            faults.errors.append(
                f"{path}: environment variable {name or '(empty name)'} is not set"
            )
            return None
        return EnvironmentText(resolved, name) if shown else resolved
    if isinstance(value, Mapping):
        return {
            key: _resolve_env(
                item,
                f"{path}.{key}" if path else str(key),
                environ,
                faults,
                shown=shown or key == "model_info",
            )
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [
            _resolve_env(item, f"{path}[{i}]", environ, faults, shown=shown)
            for i, item in enumerate(value)
        ]
    return value


def parse_config(
    data: Any,
    *,
    source: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> ProxyConfig:
    """Validate an already-loaded config document; raise one error listing every fault."""
    environ = os.environ if environ is None else environ
    faults = _Faults()
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigurationError(f"{_where(source)}the top level must be a mapping of sections")
    # environment_variables (as LiteLLM) are applied first so later references can use them.
    env_section = data.get("environment_variables") or {}
    if isinstance(env_section, Mapping) and env_section:
        raw = {str(k): str(v) for k, v in env_section.items() if v is not None}
        environ = {**environ, **raw}
    data = _resolve_env(data, "", environ, faults)
    resolved_section = data.get("environment_variables") or {}
    exported: dict[str, str] = (
        {str(k): str(v) for k, v in resolved_section.items() if v is not None}
        if isinstance(resolved_section, Mapping)
        else {}
    )
    top = faults.check_section(data, _TOP_LEVEL, "")
    for name, value in top.get("environment_variables", {}).items():
        fault = _environment_fault(name, value)
        if fault:
            faults.errors.append(fault)

    deployments: list[Deployment] = []
    for index, entry in enumerate(top.get("model_list", [])):
        path = f"model_list[{index}]"
        if not isinstance(entry, Mapping):
            faults.errors.append(f"{path}: expected a mapping with model_name and litellm_params")
            continue
        good = faults.check_section(entry, _DEPLOYMENT, path)
        for required in ("model_name", "litellm_params"):
            if entry.get(required) is None:
                faults.errors.append(f"{path}.{required}: required")
        params = entry.get("litellm_params")
        if not isinstance(params, Mapping):
            continue
        refused = unread_prices(params, "litellm_params")
        faults.errors.extend(f"{path}.litellm_params.{key}: {why}" for key, why in refused)
        refused_names = {key for key, _ in refused}
        params = {k: v for k, v in params.items() if k not in refused_names}
        checked = faults.check_section(params, _LITELLM_PARAMS, f"{path}.litellm_params")
        info = entry.get("model_info")
        if isinstance(info, Mapping):
            faults.errors.extend(
                f"{path}.model_info.{key}: {why}" for key, why in unread_prices(info, "model_info")
            )
        for key in sorted(_LITELLM_PARAMS_NOT_USED.keys() & checked.keys()):
            faults.warnings.append(
                f"{path}.litellm_params.{key}: accepted for LiteLLM compatibility, not used: "
                f"{_LITELLM_PARAMS_NOT_USED[key]}"
            )
        for limit in ("rpm", "tpm"):  # beside litellm_params: the same limit
            if limit in good and limit not in checked:
                checked[limit] = good[limit]
        if params.get("model") is None:
            faults.errors.append(f"{path}.litellm_params.model: required")
        if "model_name" in good and "model" in checked:
            deployments.append(
                Deployment(
                    model_name=good["model_name"],
                    litellm_params=checked,
                    model_info=dict(good.get("model_info", {})),
                )
            )

    litellm = faults.check_section(
        top.get("litellm_settings", {}), _LITELLM_SETTINGS, "litellm_settings"
    )
    key_defaults = litellm.get("default_key_generate_params", {})
    faults.errors.extend(key_defaults_faults(key_defaults, {d.model_name: d for d in deployments}))
    if "budget_duration" in litellm and "max_budget" not in litellm:
        faults.warnings.append("litellm_settings.budget_duration: no effect without max_budget")
    router = faults.check_section(
        top.get("router_settings", {}), _ROUTER_SETTINGS, "router_settings"
    )
    from .router.router import lone_redis_settings

    faults.errors.extend(lone_redis_settings(router))
    cache_redis = _cache_redis(litellm, router, environ, faults)
    for section, keys in (
        ("litellm_settings", _LITELLM_SETTINGS_NOT_USED & litellm.keys()),
        ("router_settings", _ROUTER_SETTINGS_NOT_USED & router.keys()),
    ):
        for key in sorted(keys):
            faults.warnings.append(
                f"{section}.{key}: accepted for LiteLLM compatibility, not used by this proxy"
            )
    general = faults.check_section(
        top.get("general_settings", {}), _GENERAL_SETTINGS, "general_settings"
    )
    mappings = general.get("user_header_mappings")
    for index, mapping in enumerate(mappings if isinstance(mappings, list) else ()):
        if isinstance(mapping, Mapping) and mapping.get("litellm_user_role") == "internal_user":
            faults.warnings.append(
                f"general_settings.user_header_mappings[{index}]: internal_user headers are not "
                "read (LiteLLM's internal users are not kept here); customer headers name the "
                "call's end user"
            )
    if faults.errors:
        listed = "\n  ".join(faults.errors)
        raise ConfigurationError(f"{_where(source)}invalid configuration:\n  {listed}")
    for warning in faults.warnings:
        log.warning("%s%s", _where(source), warning)

    # The environment fills what the file leaves out.
    master_key = general.get("master_key") or environ.get("TRACKING_MASTER_KEY") or None
    if master_key and not general.get("master_key"):
        fault = _is_master_key(master_key)
        if fault is not None:
            raise ConfigurationError(f"TRACKING_MASTER_KEY: {fault}")
    database_url = general.get("database_url") or environ.get("TRACKING_DATABASE_URL") or None
    if database_url and not general.get("database_url"):
        fault = _is_database_url(database_url)
        if fault is not None:
            raise ConfigurationError(f"TRACKING_DATABASE_URL: {fault}")
    return ProxyConfig(
        model_list=tuple(deployments),
        litellm_settings=LitellmSettings(
            success_callback=tuple(litellm.get("success_callback", ())),
            failure_callback=tuple(litellm.get("failure_callback", ())),
            callbacks=_names(litellm.get("callbacks", ())),
            fallbacks=tuple(litellm.get("fallbacks", ())),
            drop_params=litellm.get("drop_params", False),
            num_retries=litellm.get("num_retries"),
            request_timeout=litellm.get("request_timeout"),
            end_user_metric=litellm.get("enable_end_user_cost_tracking_prometheus_only", False),
            max_budget=_budget(litellm.get("max_budget")),
            budget_period=BUDGET_DURATIONS[litellm.get("budget_duration", "total")],
            key_defaults={
                key: _budget(value) if key == "max_budget" else value
                for key, value in key_defaults.items()
                if value is not None
            },
            redis_url=cache_redis,
        ),
        router_settings=router,
        general_settings=GeneralSettings(
            master_key=master_key,
            database_url=database_url,
            max_request_size_mb=float(
                general.get("max_request_size_mb", DEFAULT_MAX_REQUEST_SIZE_MB)
            ),
            request_read_timeout=float(
                general.get("request_read_timeout", DEFAULT_REQUEST_READ_TIMEOUT)
            ),
            max_parallel_requests_per_key=general.get(
                "max_parallel_requests_per_key", DEFAULT_MAX_PARALLEL_REQUESTS_PER_KEY
            )
            or None,
            max_inflight_upload_mb=float(
                general.get("max_inflight_upload_mb", DEFAULT_MAX_INFLIGHT_UPLOAD_MB)
            ),
            require_auth_for_metrics=general.get("require_auth_for_metrics", False),
            ledger_mode=general.get("ledger_mode", "durable"),
            auto_migrate=general.get("auto_migrate", False),
            ledger_stuck_after=float(general.get("ledger_stuck_after", 60.0)),
            budget_store_unavailable=general.get("budget_store_unavailable", "deny"),
            allow_open_spend_reads=general.get("allow_open_spend_reads", False),
            image_store=dict(general.get("image_store", {})),
            allow_unpriced_with_budgets=general.get("allow_unpriced_with_budgets", False),
            prices_file=_beside(source, general.get("prices_file")),
            cors_allow_origins=tuple(general.get("cors_allow_origins", ())),
            enforced_params=tuple(
                dict.fromkeys(
                    (["user"] if general.get("enforce_user_param") else [])
                    + list(general.get("enforced_params", ()))
                )
            ),
            enforce_fallback_model_access=general.get("enforce_fallback_model_access", False),
            end_user_headers=end_user_header_names(general),
        ),
        prices=dict(top.get("prices", {})),
        source=source,
        warnings=tuple(faults.warnings),
        environment_variables=exported,
    )


def _cache_redis(
    litellm: Mapping[str, Any],
    router: Mapping[str, Any],
    environ: Mapping[str, str],
    faults: _Faults,
) -> str | None:
    """The URL of the Redis ``litellm_settings.cache_params`` or ``REDIS_CLUSTER_NODES`` name
    (:func:`~tracking.redis_outage.cache_redis_url`), with a fault or a warning for what is
    not used; None when they name none."""
    from .redis_outage import CLUSTER_NODES_ENV, cache_redis_url, settings_redis_url

    params: Mapping[str, Any] = litellm.get("cache_params") or {}
    cache = bool(litellm.get("cache"))
    unused = sorted(str(key) for key in params if key not in _CACHE_REDIS_KEYS)
    if unused or (params and not cache):
        faults.warnings.append(
            "litellm_settings.cache_params: "
            + (
                f"{', '.join(unused)} not used: this proxy caches no responses"
                if cache
                else "not used without cache: true (as in LiteLLM)"
            )
        )
    if cache:
        faults.warnings.append(
            "litellm_settings.cache: this proxy caches no responses; the Redis of cache_params "
            "(if it names one) holds the proxy's shared counters (rate limits, budgets)"
        )
    try:
        url, named_by = cache_redis_url(cache, params, environ)
    except ConfigurationError as exc:
        faults.errors.append(exc.message)
        return None
    try:
        router_redis = settings_redis_url(router)
    except ConfigurationError:  # (its fault is reported by its own check)
        router_redis = None
    if (environ.get(CLUSTER_NODES_ENV) or "").strip() and (
        router_redis or named_by != CLUSTER_NODES_ENV
    ):
        faults.warnings.append(
            f"{CLUSTER_NODES_ENV}: not used, the config names the Redis "
            f"({'router_settings' if router_redis else named_by}); LiteLLM's clients would "
            "connect to the variable's cluster instead"
        )
    return url


def export_environment(config: ProxyConfig) -> list[str]:
    """Put the config's ``environment_variables`` into ``os.environ`` (as LiteLLM does), so a
    provider reading ``OPENAI_BASE_URL`` or ``OPENAI_API_KEY`` finds them; the file wins over
    the shell. Returns the names exported (never the values: they may be secrets)."""
    for name, value in config.environment_variables.items():
        os.environ[name] = value
    return sorted(config.environment_variables)


def file_environment(document: Mapping[str, Any]) -> dict[str, str]:
    """A config document's ``environment_variables`` as :func:`export_environment` exports
    them (values as text, an ``os.environ/NAME`` value resolved, the file's own names first),
    for a reader of the file other than ``tracking serve`` (``Router.from_config``); a fault is
    a ``ConfigurationError`` naming it."""
    section = document.get("environment_variables") or {}
    if not isinstance(section, Mapping):
        raise ConfigurationError("environment_variables: expected a mapping")
    faults = _Faults()
    for name, value in section.items():
        fault = _environment_fault(name, value)
        if fault:
            faults.errors.append(fault)
    raw = {str(k): str(v) for k, v in section.items() if v is not None}
    resolved = _resolve_env(raw, "environment_variables", {**os.environ, **raw}, faults)
    if faults.errors:
        raise ConfigurationError("; ".join(faults.errors))
    return {name: value for name, value in resolved.items() if value}


def _beside(source: Path | None, path: str | None) -> Path | None:
    """A path from the config, relative to the config file's folder when not absolute."""
    if not path:
        return None
    found = Path(path).expanduser()
    return found if found.is_absolute() or source is None else source.parent / found


class _Refused(Exception):
    """A document refused for its shape (too large once expanded, too deep, self-referencing)."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        self.message = f"{problem}{where}"


@functools.cache
def _bounded_loader() -> type[Any]:
    """A ``yaml.SafeLoader`` that counts the document's nodes, aliases expanded, as it composes
    them, and stops at the first that passes a limit: nothing is built for a refused document."""
    import yaml

    class BoundedLoader(yaml.SafeLoader):
        def __init__(self, stream: str) -> None:
            super().__init__(stream)
            self._expanded = 0  # nodes composed so far, each alias counting its anchor's nodes
            self._aliases = 0
            self._depth = 0
            self._anchor_sizes: dict[str, int] = {}
            self._open_anchors: set[str] = set()

        def _count(self, nodes: int, mark: Any) -> None:
            self._expanded += nodes
            if self._expanded > MAX_CONFIG_NODES:
                aliases = " once its aliases are expanded (an alias bomb?)" if self._aliases else ""
                limit = f"more than {MAX_CONFIG_NODES:,} YAML nodes{aliases}"
                raise _Refused(f"{limit}; refused before building it", mark)

        def compose_node(self, parent: Any, index: Any) -> Any:
            event = self.peek_event()  # type: ignore[no-untyped-call]
            anchor: str | None = event.anchor
            if isinstance(event, yaml.AliasEvent):
                if anchor in self._open_anchors:
                    raise _Refused(
                        f"alias *{anchor} refers to a node that contains it", event.start_mark
                    )
                node = super().compose_node(parent, index)  # an unknown alias is a ComposerError
                self._aliases += 1
                self._count(self._anchor_sizes[anchor], event.start_mark)  # type: ignore[index]
                return node
            if self._depth > MAX_CONFIG_DEPTH:  # collections around this node
                raise _Refused(f"nested more than {MAX_CONFIG_DEPTH} levels deep", event.start_mark)
            before = self._expanded
            self._count(1, event.start_mark)
            self._depth += 1
            if anchor is not None:
                self._open_anchors.add(anchor)
            try:
                node = super().compose_node(parent, index)
            finally:
                self._depth -= 1
                if anchor is not None:
                    self._open_anchors.discard(anchor)
            if anchor is not None:
                self._anchor_sizes[anchor] = self._expanded - before
            return node

    BoundedLoader.add_constructor("tag:yaml.org,2002:float", _written_float)
    return BoundedLoader


def _written_float(loader: Any, node: Any) -> float:
    """A YAML float as the float PyYAML makes, kept with the decimal text written (a
    :class:`~tracking.decimals.WrittenFloat`): money (a budget, a price) is read from the text,
    anything else (a timeout, a size in MB) is the float it always was. ``.inf``, ``.nan`` and
    base-60 numbers (``1:30.5``) stay plain floats: no amount is written so."""
    import yaml

    value: float = yaml.SafeLoader.construct_yaml_float(loader, node)
    text = str(node.value).replace("_", "")  # YAML 1.1 groups digits with _, as 1_000.5
    if ":" in text or not any(char.isdigit() for char in text):
        return value
    return WrittenFloat(text, value)


def _read_bounded(source: Path) -> bytes:
    """The file's bytes, refused past :data:`MAX_CONFIG_BYTES` without reading the rest."""
    too_large = ConfigurationError(
        f"{os.fspath(source)}: larger than the {MAX_CONFIG_BYTES:,} bytes a config file may be; "
        "refused without parsing it"
    )
    raw = read_at_most(source, MAX_CONFIG_BYTES)
    if raw is None:
        raise too_large
    return raw


def load_config(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> ProxyConfig:
    """Read and validate a ``config.yaml``; every fault is a ``ConfigurationError``.

    The file is parsed as safe YAML (no Python tags) within fixed bounds, so that no file can
    exhaust memory or CPU at start: it may be at most :data:`MAX_CONFIG_BYTES` (4 MiB, checked
    before parsing) and hold at most :data:`MAX_CONFIG_NODES` (100,000) nodes *counting every
    alias as the nodes it stands for*, nested at most :data:`MAX_CONFIG_DEPTH` (64) levels; an
    alias inside the node it names is refused too. Anchors, aliases and ``<<: *defaults`` merges
    of ordinary size are fine; an alias bomb is refused after composing at most that many nodes,
    before any of it is built.
    """
    source = Path(path)
    return parse_config(read_yaml(source), source=source.resolve(), environ=environ)


def read_yaml(path: str | os.PathLike[str]) -> Any:
    """A YAML file's data as :func:`load_config` reads it: bounded, safe, and every float kept
    with its written text (a :class:`~tracking.decimals.WrittenFloat`), so that a price or a
    budget is the exact amount written; every fault is a ``ConfigurationError``."""
    import yaml

    source = Path(path)
    try:
        raw = _read_bounded(source)
    except FileNotFoundError:
        raise ConfigurationError(f"config file not found: {os.fspath(source)}") from None
    except OSError as exc:
        raise ConfigurationError(f"cannot read {os.fspath(source)}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigurationError(
            f"{os.fspath(source)}: not UTF-8 text (byte {exc.start} cannot be decoded)"
        ) from None
    try:
        data = yaml.load(text, Loader=_bounded_loader())  # noqa: S506 - a SafeLoader
    except _Refused as exc:
        raise ConfigurationError(f"{os.fspath(source)}: {exc.message}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigurationError(f"{os.fspath(source)}: {problem}{where}") from None
    return data


def _where(source: Path | None) -> str:
    return f"{os.fspath(source)}: " if source else ""
