"""LiteLLM's ``GET /model/info`` (also ``/v1/model/info``) and ``GET /model_group/info``.

What LiteLLM's admin UI and scripts read to learn a proxy's deployments and what they cost, from
the configuration alone (no upstream call, no database). Shapes from LiteLLM's docs and code, read
2026-12-07: docs.litellm.ai/docs/proxy/model_management ("Get Model Information - /model/info":
the config's deployments with their ``model_info`` and the prices of LiteLLM's cost map;
"Sensitive details like API keys are excluded"); the proxy's API reference of ``model_info_v1``
(``/v1/model/info``, ``?litellm_model_id=``: the value of the ``x-litellm-model-id`` header; an
unknown id is a 400 "Model id = ... not found on litellm proxy" in LiteLLM v1.100 and later) and
of ``model_group_info`` (``/model_group/info``, ``?model_group=``; each group's ``model_group``,
``providers``, ``max_input_tokens``, ``max_output_tokens``, ``input_cost_per_token``,
``output_cost_per_token``, ``mode``, ``tpm``, ``rpm``...: LiteLLM's ``ModelGroupInfo`` in
``litellm/types/router.py``).

``/model/info`` answers ``{"data": [...]}``, one entry per deployment in the model_list's order:
``model_name``, ``litellm_params`` and ``model_info``. ``litellm_params`` is built from the
deployment as the router loaded it, never copied from the config, so no secret can pass: the
``model``, ``api_base`` as ``scheme://host[:port]`` (no user, path or query, where a credential
may sit), ``api_version``, a Vertex AI deployment's project and location, and the limits and
timeouts it has (``rpm``, ``tpm``, ``weight``, ``order``, ``max_retries``, ``timeout``,
``stream_timeout``); never
``api_key`` nor any other credential. ``model_info`` is the config's own (its prices left out; a
value read from the environment as its ``os.environ/NAME``, never the value), then ``id`` (the
router's deployment id, what ``x-litellm-model-id`` names), ``db_model: false``,
``litellm_provider``, ``mode`` (``image_generation`` when the deployment's model generates
images, else ``image_edit``) and the prices its calls are billed from today, found as billing
finds them (its own prices, its ``base_model``, the price table): token prices in LiteLLM's
names, USD per token (``input_cost_per_token``, ``input_cost_per_image_token``,
``output_cost_per_image_token``, ``output_cost_per_token``, ``cache_read_input_token_cost``,
``cache_read_input_image_token_cost``), per-image prices as ``output_cost_per_image`` (one price
for every size and quality) and ``output_cost_per_image_by_size`` (``"1024x1024"`` or
``"1024x1024/high"``, as a deployment's ``model_info`` gives them), and a FLUX.2 model's as our
``per_megapixel`` (``first_output``, ``output``, ``input``: LiteLLM has no name for them).
What the deployment does, in the names of LiteLLM's ``ModelInfo`` (``litellm/types/utils.py``;
its model cost map gives them per model, read 2026-12-07), each true of every deployment here:
``supported_endpoints`` (``/v1/images/edits``, and ``/v1/images/generations`` when its model
generates), ``supported_modalities`` ``["text", "image"]`` (a prompt and images in),
``supported_output_modalities`` ``["image"]`` and ``supports_vision: true`` (it reads input
images: LiteLLM's ``supports_vision`` is image input). LiteLLM's other ``supports_*`` flags
(function calling, tool choice, response schema, system messages, prompt caching, reasoning,
audio, PDF input, web search) are chat-completion features, true of some providers' models on
their chat routes and of no route this proxy serves: none is given, never a guessed false. A
config's own ``model_info`` value of any of these names is shown as written instead.
Where LiteLLM writes a float, every price here is the exact decimal text (``"0.000005"``), as
every amount the proxy answers (money is never a float here); a price the entry does not give is
absent, never a guessed 0. Beside them, ours: ``priced`` (whether its calls are priced today, as
``/health`` says) and ``price_ref`` (the entry that prices them, as the ledger's rows name it).

``/model_group/info`` answers ``{"data": [...]}``, one entry per model name: ``model_group``,
``providers`` (its deployments' providers), ``mode`` (``image_generation`` when one of its
deployments generates images), ``tpm`` and ``rpm`` (the sum of its deployments' limits, as LiteLLM
adds them up; null when none has one), each token price and ``output_cost_per_image`` at the
dearest of its deployments (what a call may cost), a FLUX.2 group's ``per_megapixel`` as
``/model/info`` gives it, each of its three prices at the dearest of the deployments priced per
megapixel (until 2026-12-07 a FLUX.2 group answered no price at all), ``max_input_tokens`` /
``max_output_tokens`` null (no image model's limit is known here), ``supports_vision``
(LiteLLM's group flag: true when every deployment's is, as ``/model/info`` gives it) and
``priced`` (every deployment priced).

Both take any key, as LiteLLM's do and as ``/v1/models`` does: a virtual key made with ``models``
sees only those model names' deployments and groups (another model's deployment id is as unknown
as one that does not exist).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ..config import LITELLM_PRICE_KEYS, EnvironmentText
from ..pricing.model_info import PER_IMAGE_KEYS
from ..pricing.table import ANY
from ..request import split_provider
from .auth import request_headers
from .errors import ProxyError
from .json_io import Receive, Scope, Send, query_of, send_json
from .limits import bounded_text

if TYPE_CHECKING:
    from ..pricing import PriceEntry
    from ..router import Deployment
    from .auth import Authenticator, Principal

__all__ = ["model_info_routes"]

Handler = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Our token kinds -> LiteLLM's per-token price names (USD per token; ours are per 1M tokens).
TOKEN_PRICE_NAMES = {
    "input_text": "input_cost_per_token",
    "cached_input_text": "cache_read_input_token_cost",
    "input_image": "input_cost_per_image_token",
    "cached_input_image": "cache_read_input_image_token_cost",
    "output_image": "output_cost_per_image_token",
    "output_text": "output_cost_per_token",
}
#: A deployment's ``model_info`` keys that price it: replaced by the prices it is billed at.
_PRICE_KEYS = frozenset(
    {
        *LITELLM_PRICE_KEYS,
        *PER_IMAGE_KEYS,
        "tokens_per_million",
        "per_image",
        "per_megapixel",
        "discount",
    }
)
#: The group's prices: the deployments' flat ones (a per-size table has no one dearest).
_GROUP_PRICES = (*TOKEN_PRICE_NAMES.values(), "output_cost_per_image")


def _json_safe(value: Any) -> Any:
    """A config value as JSON (a date as ISO text, a non-finite number or other object as
    text), never a failed answer; a value read from the environment as its ``os.environ/NAME``
    reference, never the value (until 2026-12-07 ``model_info`` showed it: a secret, often)."""
    if isinstance(value, EnvironmentText):
        return f"os.environ/{value.name}"
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _text(value: Decimal) -> str:
    """A price as exact decimal text in plain digits (``"0.000005"``, never ``"5E-6"``)."""
    return f"{value.normalize():f}" if value else "0"


def _prices(entry: PriceEntry | None) -> dict[str, Decimal | dict[str, Decimal]]:
    """The prices of ``entry`` in LiteLLM's ``model_info`` names, per token and per image."""
    if entry is None:
        return {}
    found: dict[str, Decimal | dict[str, Decimal]] = {
        TOKEN_PRICE_NAMES[kind]: price.scaleb(-6)  # per 1M tokens -> per token, exactly
        for kind, price in entry.tokens.items()
        if kind in TOKEN_PRICE_NAMES
    }
    by_size: dict[str, Decimal] = {}
    for quality, sizes in entry.per_image.items():
        for size, price in sizes.items():
            # one price for any size, under the table's only quality (xAI's {"standard":
            # {"any": ...}}, a model with no quality to choose): one price per image
            if size == ANY and (quality == ANY or len(entry.per_image) == 1 == len(sizes)):
                found["output_cost_per_image"] = price
            else:
                by_size[size if quality == ANY else f"{size}/{quality}"] = price
    if by_size:
        found["output_cost_per_image_by_size"] = by_size
    if entry.per_megapixel:  # FLUX.2's: LiteLLM has no name for them, so ours
        found["per_megapixel"] = dict(entry.per_megapixel)
    return found


def _written(prices: Mapping[str, Decimal | dict[str, Decimal]]) -> dict[str, Any]:
    return {
        name: {k: _text(v) for k, v in price.items()} if isinstance(price, dict) else _text(price)
        for name, price in prices.items()
    }


def _mode(deployments: Iterable[Deployment]) -> str:
    return (
        "image_generation"
        if any(d.serves("image_generation") for d in deployments)
        else "image_edit"
    )


def _api_base(value: str | None) -> str | None:
    """``scheme://host[:port]`` of an ``api_base``: a user, password, path or query (where a
    credential may be written) is never shown."""
    if not value:
        return None
    try:
        parts = urlsplit(value)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host:
        return None
    shown = f"[{host}]" if ":" in host else host
    return f"{parts.scheme or 'https'}://{shown}{f':{port}' if port else ''}"


def _params(deployment: Deployment) -> dict[str, Any]:
    """The deployment's ``litellm_params`` that say where and how its calls go, no secret."""
    params: dict[str, Any] = {
        "model": deployment.model,
        "api_base": _api_base(deployment.api_base),
        "api_version": deployment.api_version,
        "vertex_project": deployment.vertex_project,
        "vertex_location": deployment.vertex_location,
        "rpm": deployment.rpm,
        "tpm": deployment.tpm,
        "order": deployment.order,
        # LiteLLM's litellm_params show it; until 2026-12-07 a deployment's own was left out
        "max_retries": deployment.max_retries,
        "timeout": deployment.timeout,
        "stream_timeout": deployment.stream_timeout,
    }
    if deployment.weight != 1:
        params["weight"] = deployment.weight
    return {name: value for name, value in params.items() if value is not None}


def _capabilities(deployment: Deployment) -> dict[str, Any]:
    """What the deployment does, in LiteLLM's ``model_info`` names: the routes it serves here,
    what it reads (a prompt and images: LiteLLM's ``supports_vision``, image input) and what it
    answers (images)."""
    endpoints = ["/v1/images/edits"]
    if deployment.serves("image_generation"):
        endpoints.append("/v1/images/generations")
    return {
        "supported_endpoints": endpoints,
        "supported_modalities": ["text", "image"],
        "supported_output_modalities": ["image"],
        "supports_vision": True,
    }


def _deployment_info(deployment: Deployment) -> dict[str, Any]:
    entry = deployment.price_entry()
    own = {k: v for k, v in deployment.model_info.items() if k not in _PRICE_KEYS}
    info: dict[str, Any] = {
        **_capabilities(deployment),  # the config's own model_info says otherwise: it wins
        **_json_safe(own),
        "id": deployment.id,
        "db_model": False,
        "litellm_provider": split_provider(deployment.model)[0],
        "mode": _mode([deployment]),
        **_written(_prices(entry)),
        "priced": deployment.priced(),
        "price_ref": entry.ref if entry is not None else None,
    }
    return {
        "model_name": deployment.model_name,
        "litellm_params": _params(deployment),
        "model_info": info,
    }


def _summed(values: Iterable[int | None]) -> int | None:
    given = [v for v in values if v is not None]
    return sum(given) if given else None


def _group_info(name: str, deployments: Sequence[Deployment]) -> dict[str, Any]:
    dearest: dict[str, Decimal] = {}
    per_megapixel: dict[str, Decimal] = {}
    for deployment in deployments:
        for price_name, price in _prices(deployment.price_entry()).items():
            if price_name in _GROUP_PRICES and isinstance(price, Decimal):
                dearest[price_name] = max(price, dearest.get(price_name, price))
            elif price_name == "per_megapixel" and isinstance(price, dict):
                for kind, each in price.items():  # each kind at its dearest, as the others
                    per_megapixel[kind] = max(each, per_megapixel.get(kind, each))
    return {
        "model_group": name,
        "providers": sorted({split_provider(d.model)[0] for d in deployments}),
        "mode": _mode(deployments),
        "max_input_tokens": None,
        "max_output_tokens": None,
        **{price_name: _text(price) for price_name, price in dearest.items()},
        **_written({"per_megapixel": per_megapixel} if per_megapixel else {}),
        "tpm": _summed(d.tpm for d in deployments),
        "rpm": _summed(d.rpm for d in deployments),
        # LiteLLM's ModelGroupInfo flag: every deployment of the group reads input images
        "supports_vision": all(_vision(d) for d in deployments),
        "priced": all(d.priced() for d in deployments),
    }


def _vision(deployment: Deployment) -> bool:
    """``supports_vision`` as ``/model/info`` gives it: true unless its config says not."""
    return deployment.model_info.get("supports_vision", True) is True


def model_info_routes(
    auth: Authenticator, deployments: Callable[[], Sequence[Deployment]]
) -> dict[tuple[str, str], Handler]:
    """The routes, over the proxy's deployments (``deployments()``: the router's)."""

    async def visible(scope: Scope) -> list[Deployment]:
        principal: Principal = await auth.authenticate(request_headers(scope))
        return [d for d in deployments() if principal.may_call(d.model_name)]

    async def model_info(scope: Scope, receive: Receive, send: Send) -> None:
        shown = await visible(scope)
        path = scope.get("path", "/model/info")
        query = query_of(scope, frozenset({"litellm_model_id"}), f"GET {path}")
        wanted = query.get("litellm_model_id")
        if wanted is not None:
            wanted = bounded_text(wanted, "litellm_model_id")
            shown = [d for d in shown if d.id == wanted]
            if not shown:  # LiteLLM's 400 (v1.100 and later), in the OpenAI shape
                raise ProxyError(
                    400,
                    f"Model id = {wanted!r} not found on litellm proxy",
                    param="litellm_model_id",
                    code="model_not_found",
                )
        await send_json(send, 200, {"data": [_deployment_info(d) for d in shown]})

    async def model_group_info(scope: Scope, receive: Receive, send: Send) -> None:
        shown = await visible(scope)
        query = query_of(scope, frozenset({"model_group"}), "GET /model_group/info")
        wanted = query.get("model_group")
        groups: dict[str, list[Deployment]] = {}
        for deployment in shown:
            groups.setdefault(deployment.model_name, []).append(deployment)
        if wanted is not None:
            wanted = bounded_text(wanted, "model_group")
            groups = {wanted: groups[wanted]} if wanted in groups else {}
        body = [_group_info(name, members) for name, members in groups.items()]
        await send_json(send, 200, {"data": body})

    return {
        ("GET", "/model/info"): model_info,
        ("GET", "/v1/model/info"): model_info,
        ("GET", "/model_group/info"): model_group_info,
    }
