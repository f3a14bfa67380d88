"""Deployments: the entries of a LiteLLM-style ``model_list``, validated once.

Each entry names a model group (``model_name``, what callers ask for) and how to reach one
upstream serving it (``litellm_params``: ``model`` with an optional provider prefix,
``api_key``, ``api_base``, ``api_version``, ``rpm``, ``tpm``, ``weight``, ``timeout``,
``stream_timeout``, LiteLLM's ``order``: a priority, 1 first, ``max_retries``: how often one
call may go back to it after it failed there, and a ``vertex_ai/`` deployment's
``vertex_project`` and ``vertex_location``, or LiteLLM's other names for them,
``vertex_ai_project`` and ``vertex_ai_location``: each deployment its own Google Cloud project
and location, else the environment's), with
optional ``model_info`` (``id``, ``base_model`` for pricing). ``os.environ/NAME`` values are read
from the environment, as the proxy's config does. A deployment's id is ``model_info.id``, else a
digest of its parameters, so every process given the same config agrees on it (shared cooldowns
and usage in Redis are keyed by it); the digest reveals nothing of the key.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from ..endpoint import (
    check_api_key,
    check_base_url,
    check_vertex_place,
    vertex_setting_problem,
)
from ..errors import ConfigurationError
from ..providers import check_deployment, get_provider, is_provider, provider_names, serves
from ..request import MAX_RETRIES, MAX_TIMEOUT, model_without_name, split_provider

if TYPE_CHECKING:
    from ..pricing import PriceEntry

__all__ = [
    "Deployment",
    "deployment_id",
    "parse_fallbacks",
    "parse_model_list",
    "resolve_env",
    "seconds",
]

_ENV_PREFIX = "os.environ/"
#: The parameters that say where a deployment's calls go, each passed to its calls when set.
_PLACE = ("api_key", "api_base", "api_version", "vertex_project", "vertex_location")
#: LiteLLM's other names for a deployment's Vertex AI settings (its Vertex AI code reads
#: ``vertex_project or vertex_ai_project``, and the same for the location): read as the settings
#: they name.
VERTEX_ALIASES = {"vertex_ai_project": "vertex_project", "vertex_ai_location": "vertex_location"}


@dataclass(frozen=True, slots=True)
class Deployment:
    """One upstream serving a model group."""

    id: str
    model_name: str  #: the group callers ask for
    model: str  #: what is sent, provider prefix included ("azure/my-deployment")
    api_key: str | None = field(default=None, repr=False)
    api_base: str | None = None
    api_version: str | None = None
    #: a ``vertex_ai/`` deployment's Google Cloud project and location (None: the environment's)
    vertex_project: str | None = None
    vertex_location: str | None = None
    rpm: int | None = None
    tpm: int | None = None
    weight: float = 1.0
    timeout: float | None = None
    #: the timeout of a ``stream=True`` call (LiteLLM's ``stream_timeout``), else ``timeout``
    stream_timeout: float | None = None
    #: LiteLLM's priority: a group's deployments of the lowest order take its calls; the next
    #: order only once none of those is free (cooling down, at its limit, failed in this
    #: call); deployments without one come after every ordered one
    order: int | None = None
    #: LiteLLM's per-deployment ``max_retries``: how many times one call may be sent to this
    #: deployment again after it failed there (0: never; the group's other deployments and its
    #: fallbacks may still serve the call); None: as many as the call's retries allow
    max_retries: int | None = None
    base_model: str | None = None  #: the priced model behind an arbitrary deployment name
    model_info: Mapping[str, Any] = field(default_factory=dict)
    #: the name its own prices are registered under, when another deployment of its model
    #: prices that model otherwise or not at all
    #: (:func:`tracking.pricing.model_info.own_price_key`): its calls are priced as it, so each
    #: is billed at its own deployment's prices
    price_key: str | None = None

    @property
    def priced_as(self) -> str | None:
        """The model its calls carry as the one they are priced as (``base_model``): its own
        prices' name where it has them, else its ``model_info.base_model``."""
        return self.price_key or self.base_model

    def price_entry(self) -> PriceEntry | None:
        """The price entry its calls are billed from today, found as billing finds it
        (:func:`tracking.pricing.billing_entry`: its own prices or base model, else its model
        as sent, with and without its provider; a base model no price names is not replaced by
        the model's table price); None when its calls are recorded unpriced."""
        from ..pricing import billing_entry

        return billing_entry(self.model, self.priced_as)

    def served_routes(self, day: date | None = None) -> list[tuple[str, PriceEntry | None]]:
        """(model, the entry its calls are billed from on ``day``, None: today) for each model
        another than its own that some of its calls run on (a FLUX Kontext deployment's masked
        edits run on FLUX Fill), billed as it by the deployment's terms
        (:func:`tracking.pricing.served_entry`); the entry None when no price is found."""
        from ..pricing import billing_keys, served_entry
        from ..providers.black_forest_labs import served_models

        provider, upstream_model = split_provider(self.model)
        if provider != "black_forest_labs":
            return []
        registered = billing_keys(self.model, self.priced_as)
        day = day or datetime.now(UTC).date()
        return [
            (served, served_entry(served, registered, [served], day)[0])
            for served in served_models(upstream_model)
        ]

    def unpriced_routes(self) -> list[str]:
        """The models of :meth:`served_routes` for which no price is found today: those calls
        would be recorded unpriced."""
        return [served for served, entry in self.served_routes() if entry is None]

    def priced(self) -> bool:
        """Whether its calls are priced today, those it serves with another model too
        (:meth:`unpriced_routes`): ``/health``'s ``priced``, the proxy's start warning and the
        unpriced-call counters a router's groups start at 0 all ask this."""
        return self.price_entry() is not None and not self.unpriced_routes()

    def serves(self, operation: str) -> bool:
        """Whether its provider does ``operation`` (``image_edit``, ``image_generation``;
        when in doubt, yes: the attempt's preparation says what is wrong)."""
        try:
            name, model = split_provider(self.model)
            provider = get_provider(name)
        except Exception:
            return True
        return serves(provider, model, operation)

    def overrides(self, call_timeout: Any, stream: bool = False) -> dict[str, Any]:
        """The call parameters this deployment sets; the call's own timeout wins if it set one,
        and a streamed call takes ``stream_timeout`` where the deployment has one."""
        values: dict[str, Any] = {"model": self.model}
        if self.priced_as is not None:  # its own prices hold its base_model
            values["base_model"] = self.priced_as
        for name in _PLACE:
            value = getattr(self, name)
            if value is not None:
                values[name] = value
        if call_timeout is None:
            timeout = self.stream_timeout if stream and self.stream_timeout else self.timeout
            if timeout is not None:
                values["timeout"] = timeout
        return values


def parse_model_list(model_list: Iterable[Mapping[str, Any]]) -> tuple[Deployment, ...]:
    """Validate a ``model_list``; the first fault is a ``ConfigurationError`` naming the entry."""
    entries: Any = model_list  # checked here: it often comes straight from a YAML file
    if isinstance(entries, str | bytes | Mapping) or not isinstance(entries, Iterable):
        raise ConfigurationError("model_list: expected a list of deployments")
    deployments: list[Deployment] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        where = f"model_list[{index}]"
        deployment = _deployment(entry, where)
        if (first := seen.get(deployment.id)) is not None:
            raise ConfigurationError(f"{where}: {_clash(deployment.id, first, entry)}")
        seen[deployment.id] = index
        deployments.append(deployment)
    if not deployments:
        raise ConfigurationError("model_list: at least one deployment is required")
    return tuple(deployments)


def _clash(given_id: str, first: int, entry: Any) -> str:
    """Why a deployment's id is ``model_list[first]``'s too: given so, or the same place."""
    info = entry.get("model_info") if isinstance(entry, Mapping) else None
    if isinstance(info, Mapping) and info.get("id"):
        return (
            f"duplicate deployment id {given_id!r}: model_list[{first}] has the same model_info.id"
        )
    return (
        f"duplicate deployment id {given_id!r}: the same model_name, model, api_base, api_version, "
        f"api_key (and Vertex AI project and location) as model_list[{first}], so its calls go "
        "to the same place (settings such as rpm, weight or order do not make another "
        "deployment); give each a model_info.id to keep both"
    )


def parse_fallbacks(
    fallbacks: Iterable[Mapping[str, Any]] | Mapping[str, Any] | None,
    groups: Iterable[str],
    *,
    where: str = "fallbacks",
) -> dict[str, tuple[str, ...]]:
    """``[{"gpt-image-2.6-flare": ["gpt-image-2.5-flare", "gpt-image-2"]}]`` -> group ->
    fallback groups; errors name the setting as ``where`` (``router_settings.fallbacks`` in a
    config)."""
    known = set(groups)
    if fallbacks is None:
        return {}
    entries = [fallbacks] if isinstance(fallbacks, Mapping) else list(fallbacks)
    chains: dict[str, tuple[str, ...]] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, Mapping):
            raise ConfigurationError(
                f"{where}[{index}]: expected a mapping like {{'model-a': ['model-b']}}"
            )
        for group, targets in entry.items():
            if isinstance(targets, str):
                targets = [targets]
            if not isinstance(targets, list | tuple) or not all(
                isinstance(t, str) for t in targets
            ):
                raise ConfigurationError(
                    f"{where}[{index}][{group!r}]: expected a list of model group names"
                )
            for name in (group, *targets):
                if name not in known:
                    raise ConfigurationError(
                        f"{where}[{index}]: {name!r} is not a model_name in model_list "
                        f"(known: {', '.join(sorted(known))})"
                    )
            chain = chains.get(group, ())
            chains[group] = chain + tuple(t for t in targets if t != group and t not in chain)
    return chains


def _deployment(entry: Any, where: str) -> Deployment:
    if not isinstance(entry, Mapping):
        raise ConfigurationError(f"{where}: expected a mapping with model_name and litellm_params")
    model_name = entry.get("model_name")
    if not isinstance(model_name, str) or not model_name:
        raise ConfigurationError(f"{where}: model_name is required (the group callers ask for)")
    params = entry.get("litellm_params")
    if not isinstance(params, Mapping):
        raise ConfigurationError(f"{where}: litellm_params is required (a mapping)")
    params = {
        key: resolve_env(value, f"{where}.litellm_params.{key}") for key, value in params.items()
    }
    params = _unaliased(params, where)
    _refuse_unread_prices(params, "litellm_params", where)
    model = params.get("model")
    if not isinstance(model, str) or not model:
        raise ConfigurationError(f"{where}: litellm_params.model is required")
    bare = model_without_name(model)
    if bare is not None:
        raise ConfigurationError(
            f"{where}: litellm_params.model {model!r} names the provider {bare!r} but no model "
            f"after it (for example '{bare}/<model>')"
        )
    info = entry.get("model_info") or {}
    if not isinstance(info, Mapping):
        raise ConfigurationError(f"{where}: model_info must be a mapping")
    for name in ("api_key", "api_base", "api_version"):
        if params.get(name) is not None and not isinstance(params[name], str):
            raise ConfigurationError(f"{where}: litellm_params.{name} must be a string")
    deployment_id = info.get("id")
    if deployment_id is not None and (not isinstance(deployment_id, str) or not deployment_id):
        raise ConfigurationError(f"{where}: model_info.id must be a non-empty string")
    base_model = info.get("base_model")
    if base_model is not None and not isinstance(base_model, str):
        raise ConfigurationError(f"{where}: model_info.base_model must be a string")
    project, location = _check_reachable(model, params, where)
    _check_prices(info, where)
    return Deployment(
        # plain text (an id or base model read from os.environ/ comes as the config's marked text)
        id=str(deployment_id) if deployment_id else _digest(model_name, params),
        model_name=model_name,
        model=model,
        api_key=params.get("api_key"),
        api_base=params.get("api_base"),
        api_version=params.get("api_version"),
        vertex_project=project,
        vertex_location=location,
        # LiteLLM configs put rpm/tpm in litellm_params or beside it; both are read.
        rpm=_positive_int(params.get("rpm", entry.get("rpm")), f"{where}: rpm"),
        tpm=_positive_int(params.get("tpm", entry.get("tpm")), f"{where}: tpm"),
        weight=_weight(params.get("weight"), where),
        timeout=_timeout(params.get("timeout"), where),
        stream_timeout=_timeout(params.get("stream_timeout"), where, "stream_timeout"),
        order=_positive_int(params.get("order"), f"{where}: litellm_params.order"),
        max_retries=_retry_count(params.get("max_retries"), where),
        base_model=None if base_model is None else str(base_model),
        model_info=dict(info),
    )


def _check_reachable(
    model: str, params: Mapping[str, Any], where: str
) -> tuple[str | None, str | None]:
    """The checks every call makes of its key and URL, and the provider's own settings checks,
    made once at load: a typo fails the config, not a share of the calls. Returns its Vertex AI
    project and location (checked; a ``vertex_ai/`` deployment without them needs the
    environment's, :func:`tracking.providers.vertex_ai.check_place`)."""
    prefix, sep, _ = model.partition("/")
    if sep and not is_provider(prefix):
        # sent to OpenAI whole (a compatible server's slashed name); one letter off a provider
        # is a typo whose every call would go to the wrong upstream
        near = difflib.get_close_matches(prefix, provider_names(), n=1, cutoff=0.8)
        if near:
            raise ConfigurationError(
                f"{where}: litellm_params.model {model!r}: {prefix!r} is no provider; did you "
                f"mean '{near[0]}/'? (write 'openai/{model}' to send this name to OpenAI)"
            )
    try:
        check_api_key(params.get("api_key"))
        check_base_url(params.get("api_base"))
        check_deployment(
            model, params.get("api_base"), params.get("api_version"), params.get("api_key")
        )
        provider = split_provider(model)[0]
        project, location = check_vertex_place(
            provider, params.get("vertex_project"), params.get("vertex_location")
        )
        if provider == "vertex_ai":
            from ..providers.vertex_ai import check_place

            check_place(project, location)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{where}: litellm_params.{exc}") from None
    return project, location


#: A key of ``output_cost_per_image_by_size``: a size (``1024x1024``, a name such as ``any``),
#: optionally ``/`` and a quality (never ``auto``: no call is billed at it).
_PRICE_SHAPE = re.compile(r"(?:[0-9]+x[0-9]+|[a-z][a-z0-9_]*)(?:/[a-z][a-z0-9_]*)?")


def _check_prices(info: Mapping[str, Any], where: str) -> None:
    """``model_info``'s prices as a price file's are held: finite, from 0 to ``MAX_PRICE``."""
    from ..pricing.table import check_per_image_key, to_price

    _refuse_unread_prices(info, "model_info", where)
    price = info.get("output_cost_per_image")
    if price is not None:
        to_price(price, f"{where}: model_info.output_cost_per_image")
    table = info.get("output_cost_per_image_by_size")
    if table is None:
        return
    if not isinstance(table, Mapping):
        raise ConfigurationError(
            f"{where}: model_info.output_cost_per_image_by_size must be a mapping of "
            "'SIZE/QUALITY' or 'SIZE' to a price"
        )
    for shape, value in table.items():
        named = f"{where}: model_info.output_cost_per_image_by_size[{shape!r}]"
        # a key no call's size can match (1024, "1024*1024") would price nothing, silently
        if not isinstance(shape, str) or not _PRICE_SHAPE.fullmatch(shape):
            raise ConfigurationError(
                f"{named}: not a 'SIZE' or 'SIZE/QUALITY' key such as '1024x1024' or "
                "'1024x1024/high'"
            )
        for name in shape.split("/"):
            check_per_image_key(name, named)
        to_price(value, named)


def _refuse_unread_prices(values: Mapping[str, Any], section: str, where: str) -> None:
    """A LiteLLM price name no call is billed by is a :class:`ConfigurationError` naming it
    (:func:`tracking.config.unread_prices`), never a price silently not charged."""
    from ..config import unread_prices

    refused = unread_prices(values, section)
    if refused:
        key, why = refused[0]
        raise ConfigurationError(f"{where}: {section}.{key}: {why}", param=key)


def _unaliased(params: Mapping[str, Any], where: str | None) -> dict[str, Any]:
    """``params`` with LiteLLM's alias names (:data:`VERTEX_ALIASES`) read as the settings they
    name. An alias beside its setting with another value is a :class:`ConfigurationError`
    naming both (with ``where`` None, for an id only, the setting's own name wins)."""
    unaliased = dict(params)
    for alias, name in VERTEX_ALIASES.items():
        if alias not in unaliased:
            continue
        value = unaliased.pop(alias)
        problem = None if where is None or value is None else vertex_setting_problem(name, value)
        if problem is not None:  # named as written
            raise ConfigurationError(f"{where}: litellm_params.{alias}: {problem}", param=name)
        given = unaliased.get(name)
        if given is None:
            unaliased[name] = value
        elif where is not None and value is not None and str(value) != str(given):
            raise ConfigurationError(
                f"{where}: litellm_params.{alias} {value!r} and litellm_params.{name} {given!r} "
                f"differ; they are two names for one setting: give {name} alone"
            )
    return unaliased


def resolve_env(value: Any, where: str) -> Any:
    """``os.environ/NAME`` -> the variable's value (a clear error when unset); else ``value``."""
    if isinstance(value, str) and value.startswith(_ENV_PREFIX):
        name = value[len(_ENV_PREFIX) :]
        resolved = os.environ.get(name)
        if resolved is None:
            raise ConfigurationError(f"{where}: environment variable {name} is not set")
        return resolved
    return value


def deployment_id(entry: Mapping[str, Any]) -> str:
    """The id the router gives the model_list ``entry`` (``model_info.id``, else the digest of
    where its calls go), read without checking the entry: the proxy names a deployment's own
    prices by it before the router is built."""
    info = entry.get("model_info")
    given = info.get("id") if isinstance(info, Mapping) else None
    if isinstance(given, str) and given:
        return given
    params = entry.get("litellm_params")
    params = _unaliased(params, None) if isinstance(params, Mapping) else {}
    resolved = {}
    for key in ("model", *_PLACE):
        try:
            resolved[key] = resolve_env(params.get(key), key)
        except ConfigurationError:  # the router refuses it: any id will do
            resolved[key] = params.get(key)
    return _digest(str(entry.get("model_name")), resolved)


def _digest(model_name: str, params: Mapping[str, Any]) -> str:
    # Only the parameters that say where a call goes; the key enters hashed, so two deployments
    # that differ only by key (two organisations) still get different ids. Vertex AI's project
    # and location enter only when set: the ids of deployments without them are unchanged.
    material = {
        "model_name": model_name,
        **{k: params.get(k) for k in ("model", "api_base", "api_version")},
        "key": hashlib.sha256(str(params.get("api_key") or "").encode()).hexdigest(),
        # as text: a project number YAML reads as an integer is the same project
        **{k: str(params[k]) for k in ("vertex_project", "vertex_location") if params.get(k)},
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]


def _positive_int(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigurationError(f"{where} must be a positive integer, got {value!r}")
    return value


def _retry_count(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_RETRIES:
        raise ConfigurationError(
            f"{where}: litellm_params.max_retries must be an integer from 0 to {MAX_RETRIES}, "
            f"got {value!r}"
        )
    return value


def _weight(value: Any, where: str) -> float:
    if value is None:
        return 1.0
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ConfigurationError(
            f"{where}: litellm_params.weight must be a finite number >= 0, got {value!r}"
        )
    return float(value)


def _timeout(value: Any, where: str, name: str = "timeout") -> float | None:
    return seconds(value, f"{where}: litellm_params.{name}")


def seconds(value: Any, label: str) -> float | None:
    """A timeout setting (``label`` names it in the error): None, or seconds in (0, 1 day]."""
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 < value <= MAX_TIMEOUT  # also False for NaN
    ):
        raise ConfigurationError(
            f"{label} must be a positive number of seconds, at most {MAX_TIMEOUT:g}, got {value!r}"
        )
    return float(value)
