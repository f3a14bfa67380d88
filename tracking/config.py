"""The proxy's ``config.yaml`` (LiteLLM's shape) and environment, read once and validated.

:func:`load_config` reads a file, :func:`parse_config` a mapping already loaded. Both resolve
``os.environ/NAME`` references anywhere in the document, check every known key's type and range,
and raise one :class:`~tracking.errors.ConfigurationError` listing every fault by the path of the
bad key (``model_list[2].litellm_params.model: required``). Unknown keys are kept and reported
in :attr:`ProxyConfig.warnings` (and logged), never fatal: configs written for LiteLLM carry
settings we do not use. Secrets (provider keys, the master key) are never shown by ``repr``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigurationError

__all__ = [
    "DEFAULT_MAX_REQUEST_SIZE_MB",
    "Deployment",
    "GeneralSettings",
    "LitellmSettings",
    "ProxyConfig",
    "load_config",
    "parse_config",
]

log = logging.getLogger("tracking.config")

DEFAULT_MAX_REQUEST_SIZE_MB = 64.0
#: Seconds a client has to send a request's headers, and again its body (a slow client cannot
#: hold the server).
DEFAULT_REQUEST_READ_TIMEOUT = 120.0
_ENV_PREFIX = "os.environ/"

Check = Callable[[Any], str | None]  # returns a fault ("expected ...") or None


def _is_str(value: Any) -> str | None:
    return None if isinstance(value, str) and value else "expected a non-empty string"


def _is_bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else "expected true or false"


def _is_int(low: int = 0) -> Check:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return "expected an integer"
        return None if value >= low else f"must be at least {low}, got {value}"

    return check


def _is_positive_number(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return "expected a number"
    return None if value > 0 else f"must be greater than 0, got {value}"


def _is_number(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "expected a number"
    return None


def _is_url(value: Any) -> str | None:
    if not isinstance(value, str) or not value.startswith(("http://", "https://")):
        return "expected an http(s) URL"
    return None


def _is_str_list(value: Any) -> str | None:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        return "expected a list of names"
    return None


def _is_list(value: Any) -> str | None:
    return None if isinstance(value, list) else "expected a list"


def _is_mapping(value: Any) -> str | None:
    return None if isinstance(value, Mapping) else "expected a mapping"


def _one_of(*choices: str) -> Check:
    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}; got {value!r}"

    return check


def _anything(value: Any) -> str | None:
    return None


#: The keys we read in each section, with their checks. Anything else warns.
_LITELLM_PARAMS: dict[str, Check] = {
    "model": _is_str,
    "api_key": _is_str,
    "api_base": _is_url,
    "api_version": _is_str,
    "rpm": _is_int(0),
    "tpm": _is_int(0),
    "timeout": _is_positive_number,
    "stream_timeout": _is_positive_number,
    "max_retries": _is_int(0),
    "drop_params": _is_bool,
    "organization": _is_str,
    "weight": _is_number,
    "order": _is_int(1),
}
_DEPLOYMENT: dict[str, Check] = {
    "model_name": _is_str,
    "litellm_params": _is_mapping,
    "model_info": _is_mapping,
}
_LITELLM_SETTINGS: dict[str, Check] = {
    "success_callback": _is_str_list,
    "failure_callback": _is_str_list,
    "callbacks": _is_str_list,
    "fallbacks": _is_list,
    "drop_params": _is_bool,
    "num_retries": _is_int(0),
    "request_timeout": _is_positive_number,
    "set_verbose": _is_bool,
    "json_logs": _is_bool,
}
_ROUTER_SETTINGS: dict[str, Check] = {
    "routing_strategy": _one_of(
        "simple-shuffle",
        "least-busy",
        "usage-based-routing",
        "usage-based-routing-v2",
        "latency-based-routing",
        "cost-based-routing",
    ),
    "num_retries": _is_int(0),
    "timeout": _is_positive_number,
    "allowed_fails": _is_int(0),
    "cooldown_time": _is_number,
    "retry_after": _is_number,
    "fallbacks": _is_list,
    "context_window_fallbacks": _is_list,
    "enable_pre_call_checks": _is_bool,
    "model_group_alias": _is_mapping,
    "redis_host": _is_str,
    "redis_port": _is_int(1),
    "redis_password": _is_str,
    "redis_url": _is_str,
}
_GENERAL_SETTINGS: dict[str, Check] = {
    "master_key": _is_str,
    "database_url": _is_str,
    "max_request_size_mb": _is_positive_number,
    "request_read_timeout": _is_positive_number,
    "max_parallel_requests_per_key": _is_int(1),
    "require_auth_for_metrics": _is_bool,
    "ledger_mode": _one_of("durable", "background"),
    "auto_migrate": _is_bool,
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


@dataclass(frozen=True, slots=True)
class GeneralSettings:
    master_key: str | None = field(default=None, repr=False)
    database_url: str | None = field(default=None, repr=False)  # may embed a password
    max_request_size_mb: float = DEFAULT_MAX_REQUEST_SIZE_MB
    request_read_timeout: float = DEFAULT_REQUEST_READ_TIMEOUT
    #: Edits of one key in flight on one instance at most (None: no limit).
    max_parallel_requests_per_key: int | None = None
    require_auth_for_metrics: bool = False
    ledger_mode: str = "durable"
    auto_migrate: bool = False

    @property
    def max_request_bytes(self) -> int:
        return int(self.max_request_size_mb * 1024 * 1024)


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
                self.warnings.append(f"{where}: unknown key, ignored")
                continue
            if item is None:  # an empty YAML value means "not set"
                continue
            fault = check(item)
            if fault:
                self.errors.append(f"{where}: {fault}")
            else:
                good[key] = item
        return good


def _resolve_env(value: Any, path: str, environ: Mapping[str, str], faults: _Faults) -> Any:
    """Replace every ``os.environ/NAME`` string with the variable's value, recursively."""
    if isinstance(value, str) and value.startswith(_ENV_PREFIX):
        name = value[len(_ENV_PREFIX) :].strip()
        resolved = environ.get(name)
        if not name or resolved is None or resolved == "":
            faults.errors.append(
                f"{path}: environment variable {name or '(empty name)'} is not set"
            )
            return None
        return resolved
    if isinstance(value, Mapping):
        return {
            key: _resolve_env(item, f"{path}.{key}" if path else str(key), environ, faults)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_resolve_env(item, f"{path}[{i}]", environ, faults) for i, item in enumerate(value)]
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
        environ = {**environ, **{str(k): str(v) for k, v in env_section.items() if v is not None}}
    data = _resolve_env(data, "", environ, faults)
    top = faults.check_section(data, _TOP_LEVEL, "")

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
        checked = faults.check_section(params, _LITELLM_PARAMS, f"{path}.litellm_params")
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
    router = faults.check_section(
        top.get("router_settings", {}), _ROUTER_SETTINGS, "router_settings"
    )
    general = faults.check_section(
        top.get("general_settings", {}), _GENERAL_SETTINGS, "general_settings"
    )
    if faults.errors:
        listed = "\n  ".join(faults.errors)
        raise ConfigurationError(f"{_where(source)}invalid configuration:\n  {listed}")
    for warning in faults.warnings:
        log.warning("%s%s", _where(source), warning)

    # The environment fills what the file leaves out.
    master_key = general.get("master_key") or environ.get("TRACKING_MASTER_KEY") or None
    database_url = general.get("database_url") or environ.get("TRACKING_DATABASE_URL") or None
    return ProxyConfig(
        model_list=tuple(deployments),
        litellm_settings=LitellmSettings(
            success_callback=tuple(litellm.get("success_callback", ())),
            failure_callback=tuple(litellm.get("failure_callback", ())),
            callbacks=tuple(litellm.get("callbacks", ())),
            fallbacks=tuple(litellm.get("fallbacks", ())),
            drop_params=litellm.get("drop_params", False),
            num_retries=litellm.get("num_retries"),
            request_timeout=litellm.get("request_timeout"),
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
            max_parallel_requests_per_key=general.get("max_parallel_requests_per_key"),
            require_auth_for_metrics=general.get("require_auth_for_metrics", False),
            ledger_mode=general.get("ledger_mode", "durable"),
            auto_migrate=general.get("auto_migrate", False),
        ),
        prices=dict(top.get("prices", {})),
        source=source,
        warnings=tuple(faults.warnings),
    )


def load_config(
    path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None
) -> ProxyConfig:
    """Read and validate a ``config.yaml``; every fault is a ``ConfigurationError``."""
    import yaml

    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigurationError(f"config file not found: {os.fspath(source)}") from None
    except OSError as exc:
        raise ConfigurationError(f"cannot read {os.fspath(source)}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigurationError(
            f"{os.fspath(source)}: not UTF-8 text (byte {exc.start} cannot be decoded)"
        ) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigurationError(f"{os.fspath(source)}: {problem}{where}") from None
    return parse_config(data, source=source.resolve(), environ=environ)


def _where(source: Path | None) -> str:
    return f"{os.fspath(source)}: " if source else ""
