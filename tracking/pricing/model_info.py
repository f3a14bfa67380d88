"""LiteLLM's per-image ``model_info`` prices, read once for billing and for routing.

``output_cost_per_image`` is the price of one output image of any size and quality (on a Gemini
or Vertex AI deployment of a model whose price entry differs by resolution tier, of a 1K image,
other tiers priced by the ratio of its prices file's or packaged tiers: :func:`_by_tier`);
``output_cost_per_image_by_size`` prices a size (``"1024x1024"``: any quality) or a size at a
quality (``"1024x1024/high"``). :func:`model_info_per_image` turns them into a ``per_image``
table (quality -> size -> USD, :data:`~tracking.pricing.table.ANY` where either is not named):
the proxy registers it as the deployment's model's prices (:mod:`tracking.proxy.prices`; the
deployment's own, :func:`own_price_key`, when another deployment of its model is priced
otherwise or not at all), and
the router's ``cost-based-routing`` ranks a deployment by the price entry its calls are billed
from (by :func:`model_info_price` where none is registered). Both look a call up with
:func:`~tracking.pricing.table.per_image_price`, so a call is ranked at the price it is billed at.
Token prices for the output image (``output_cost_per_token``, ``output_cost_per_image_token``,
``tokens_per_million.output_image``) win over the per-image keys: the calls are billed by the
tokens the upstream reports, and the per-image keys are not used (:func:`deployment_prices`),
except for Gemini and Vertex AI deployments (:data:`TOKEN_PRICED_IMAGES`).

Gemini and Vertex AI: Google bills an output image as its output image tokens at the image-output
rate, and states its per-image price as that bill for one image ("Image output is priced at $30 per
1,000,000 tokens, with 1290 tokens consumed per image up to 1024x1024px, equating to $0.039 per
image": https://ai.google.dev/gemini-api/docs/pricing, official, as quoted in a thread of Google's
developer forum, https://discuss.ai.google.dev/t/issue-with-url-context-tooling/101173, read
2026-12-06; Google's page itself was not readable here. Google's Vertex AI page for
gemini-3.1-flash-image gives 1,120 / 1,680 / 2,520 tokens per 1K / 2K / 4K image, which at its
image-output rate are its per-image prices: ``prices.json``'s notes). LiteLLM's Gemini entries write
it so: ``output_cost_per_image_token`` for the image's tokens, ``output_cost_per_token`` for the
text output (thinking), ``output_cost_per_image`` for one image. So a Gemini deployment with an
image-output token price keeps its per-image price beside the tokens, as the packaged Gemini entries
do: the tokens bill a call whose usage is reported, and the per-image price what has none (the
estimate of an answer without ``usageMetadata``, cost-based ranking). A per-image price beside
``output_cost_per_token`` alone is ambiguous (the text rate in LiteLLM's Gemini entries, the image's
in OpenAI-style configs; billing the image's tokens at a text rate would understate them some twelve
times) and is refused.

Grounding with Google Search's fee is LiteLLM's pair of keys: ``search_context_cost_per_query``
(USD per unit, by search context size; Gemini has none, and LiteLLM's Gemini cost calculator reads
``search_context_size_medium``) and ``web_search_billing_unit`` (``per_query``: each search query,
Gemini 3; ``per_prompt``: each grounded prompt, Gemini 2.5), as LiteLLM's
``litellm/llms/gemini/cost_calculator.py`` reads them (read 2026-12-06). They become the
deployment's ``tools.google_search`` fee (:func:`search_fee`). LiteLLM takes a missing unit as
``per_prompt``, which would bill a Gemini 3 call's queries as one: the unit is required here.
LiteLLM's Gemini and Vertex AI cost code also read ``web_search_cost_per_request`` from
``model_info``, a flat USD amount per web search unit (read 2026-12-07): it is taken as the same
fee, with the same required unit (its name says "request", which is a query for Gemini 3 and a
prompt for 2.5); given beside ``search_context_cost_per_query``, the two must agree.

Everywhere, ``output_cost_per_token`` beside an image-output token price
(``output_cost_per_image_token`` or ``tokens_per_million.output_image``) prices the text output
tokens, as in LiteLLM's entries that give both; alone, it prices the output image's tokens.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import Any

from ..decimals import WrittenFloat, written_decimal
from ..errors import ConfigurationError
from .table import ANY, MAX_PRICE, MIN_PRICE, per_image_price, to_price

__all__ = [
    "PER_IMAGE_KEYS",
    "TOKEN_PRICED_IMAGES",
    "deployment_prices",
    "model_info_per_image",
    "model_info_price",
    "model_list_prices",
    "own_price_key",
    "register_found",
    "register_model_list_prices",
    "search_fee",
]

log = logging.getLogger("tracking.pricing")
#: What :func:`_note` has logged in this process: the proxy reads its config's prices once per
#: process (:mod:`tracking.proxy.prices`), but another config (a reload) or an SDK ``Router`` of
#: the same model_list reads them again, and a note is said once.
_noted: set[str] = set()
_noted_lock = threading.Lock()

#: The ``model_info`` keys that price a deployment's images.
PER_IMAGE_KEYS = ("output_cost_per_image", "output_cost_per_image_by_size")
#: Providers (``litellm_params.model``'s prefix) that bill an output image as its tokens and
#: state a per-image price as those tokens' bill for one image (the module's "Gemini and Vertex
#: AI"): a per-image price is kept beside the token prices, for estimates and ranking.
TOKEN_PRICED_IMAGES = frozenset({"gemini", "vertex_ai"})


def _token_priced_images(model: str) -> bool:
    return model.split("/", 1)[0] in TOKEN_PRICED_IMAGES


def model_info_per_image(info: Mapping[str, Any], model: str = "") -> dict[str, dict[str, Any]]:
    """``info``'s per-image prices as a ``per_image`` table, the amounts as written (empty when
    it has none); the router checks their shapes and amounts when it loads a deployment. On a
    Gemini or Vertex AI deployment of ``model`` whose prices differ by resolution tier,
    a lone ``output_cost_per_image`` is the 1K image's price (:func:`_by_tier`)."""
    table: dict[str, dict[str, Any]] = {}
    flat = info.get("output_cost_per_image")
    if flat is not None:
        tiers = _by_tier(flat, model) if _token_priced_images(model) else {}
        table.setdefault(ANY, {}).update(tiers or {ANY: flat})
    by_size = info.get("output_cost_per_image_by_size")
    if isinstance(by_size, Mapping):
        for shape, value in by_size.items():
            size, _, quality = str(shape).partition("/")
            table.setdefault(quality or ANY, {})[size] = value
    return table


#: The resolution tier LiteLLM's one ``output_cost_per_image`` prices for a Gemini image model
#: (Google's stated per-image price is that of an image up to 1024x1024).
BASE_TIER = "1K"
_TIER_PLACES = Decimal("1e-9")


def _by_tier(flat: Any, model: str) -> dict[str, Decimal]:
    """The price of each resolution tier (512, 1K, 2K, 4K) of ``model``'s entry (a user's prices
    file's, else the packaged one: :func:`~tracking.pricing._table_entry`), for a
    deployment giving ``flat`` as its one per-image price: ``flat`` is the 1K image's (LiteLLM's
    Gemini entries and Google's pricing page state the per-image price of an image up to
    1024x1024), and every other tier costs ``flat`` times that entry's ratio of its price to the
    1K price (rounded up past 1e-9 USD), so a 2K or 4K image, billed some 1.5 or 2.3 times the
    1K one, is never billed at the 1K price. Empty when that entry has no such tiers or
    the amount cannot be read (the router refuses it when it loads the deployment)."""
    from datetime import UTC, datetime

    from . import _table_entry

    try:
        price = to_price(flat, "model_info.output_cost_per_image")
    except ConfigurationError:
        return {}
    entry = _table_entry(model, datetime.now(UTC).date())
    tiers = {
        size: usd
        for sizes in (entry.per_image if entry else {}).values()
        for size, usd in sizes.items()
    }
    base = tiers.get(BASE_TIER)
    if not base or len(set(tiers.values())) < 2:
        return {}
    scaled = {}
    for tier, usd in tiers.items():
        exact = price * usd / base
        rounded = exact.quantize(_TIER_PLACES, rounding=ROUND_CEILING)
        scaled[tier] = exact if exact == rounded else rounded
    return scaled


def model_info_price(
    info: Mapping[str, Any], size: str | None, quality: str | None, model: str = ""
) -> Decimal | None:
    """The price of one image of ``size`` at ``quality`` by ``info``'s per-image prices, as the
    calls of a deployment of ``model`` are billed or estimated; None when they price no such
    image (or an amount cannot be read), or when ``info`` prices the output tokens, which bill
    the calls instead (but for :data:`TOKEN_PRICED_IMAGES`, whose per-image price is the
    tokens' bill for one image)."""
    tokens = info.get("tokens_per_million")
    if not _token_priced_images(model) and (
        any(info.get(key) is not None for key in _OUTPUT_TOKEN_KEYS)
        or (isinstance(tokens, Mapping) and tokens.get("output_image") is not None)
    ):
        return None
    try:
        table = {
            tier: {name: to_price(value, "model_info") for name, value in sizes.items()}
            for tier, sizes in model_info_per_image(info, model).items()
        }
    except ConfigurationError:
        return None
    return per_image_price(table, size, quality)


#: model_info keys that are ``register_prices`` fields as they are.
_NATIVE = ("tokens_per_million", "per_image", "per_megapixel", "base_model", "discount", "tools")
#: LiteLLM's ``model_info`` keys of a web search fee: its amount per unit, and the unit.
SEARCH_COST_KEY = "search_context_cost_per_query"
SEARCH_UNIT_KEY = "web_search_billing_unit"
#: LiteLLM's flat amount per web search unit (its Vertex AI and Gemini cost code read it from
#: ``model_info``): the same fee as the medium size of :data:`SEARCH_COST_KEY`, one number.
SEARCH_FLAT_KEY = "web_search_cost_per_request"
#: ``web_search_billing_unit``'s values -> what our ``tools.google_search`` fee is charged per.
_SEARCH_UNITS = {"per_query": "search_query", "per_prompt": "grounded_prompt"}
#: The sizes ``search_context_cost_per_query`` may price; LiteLLM bills Gemini at the medium one.
_SEARCH_SIZES = (
    "search_context_size_low",
    "search_context_size_medium",
    "search_context_size_high",
)
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
#: Places a price per token moves to be a price per million tokens.
_MILLION_PLACES = 6
#: LiteLLM's keys that price the output image's tokens.
_OUTPUT_TOKEN_KEYS = tuple(key for key, kinds in _PER_TOKEN.items() if "output_image" in kinds)


def _per_million(value: Any, where: str) -> Decimal:
    """A price in USD per token as USD per million tokens, exactly: the number as written in
    ``config.yaml`` (:func:`~tracking.decimals.written_decimal`), its decimal point moved, never
    rounded; bounded as every price is (:func:`~tracking.pricing.table.to_price`)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ConfigurationError(f"{where}: expected a price in USD per token")
    try:
        price = written_decimal(value)
    except InvalidOperation:
        raise ConfigurationError(f"{where}: expected a price in USD per token") from None
    if not price.is_finite() or price < 0:
        raise ConfigurationError(f"{where}: expected a price >= 0")
    if price > MAX_PRICE:  # before it is scaled: 1e999999 would overflow the arithmetic
        raise ConfigurationError(f"{where}: above the ${MAX_PRICE:,} a price may be")
    sign, digits, exponent = price.as_tuple()
    assert isinstance(exponent, int)  # finite
    per_million = Decimal((sign, digits, exponent + _MILLION_PLACES))
    if 0 < per_million < MIN_PRICE:
        raise ConfigurationError(
            f"{where}: below the ${MIN_PRICE} per million tokens a price other than 0 may be"
        )
    return per_million


def _exact(value: Any) -> Any:
    """``value`` with every number written in ``config.yaml`` as the Decimal written: two
    deployments' prices are the same only when their amounts are (as floats,
    0.10000000000000000001 and 0.1 are one)."""
    if isinstance(value, WrittenFloat):
        return written_decimal(value)
    if isinstance(value, Mapping):
        return {key: _exact(item) for key, item in value.items()}
    return value


def search_fee(info: Mapping[str, Any], where: str) -> dict[str, Any] | None:
    """The ``register_prices`` ``tools`` of ``info``'s ``search_context_cost_per_query`` (or
    ``web_search_cost_per_request``) and ``web_search_billing_unit`` (None when none is given):
    the medium size's amount (or the flat one) per query or grounded prompt. A missing or
    unknown unit, an unknown size, a bad amount, or the two amounts disagreeing is a
    :class:`~tracking.errors.ConfigurationError` naming the key."""
    cost, flat, unit = (
        info.get(SEARCH_COST_KEY),
        info.get(SEARCH_FLAT_KEY),
        info.get(SEARCH_UNIT_KEY),
    )
    if cost is None and flat is None and unit is None:
        return None
    if cost is None and flat is None:
        raise ConfigurationError(
            f"{where}.{SEARCH_UNIT_KEY}: given without {SEARCH_COST_KEY} or {SEARCH_FLAT_KEY}"
        )
    given = SEARCH_COST_KEY if cost is not None else SEARCH_FLAT_KEY
    if unit not in _SEARCH_UNITS:
        raise ConfigurationError(
            f"{where}.{SEARCH_UNIT_KEY}: required beside {given}, one of "
            f"{', '.join(_SEARCH_UNITS)} (per_query: each search query, Gemini 3; per_prompt: "
            "each grounded prompt, Gemini 2.5); LiteLLM's default, per_prompt, would bill a "
            "Gemini 3 call's queries as one"
        )
    per = _SEARCH_UNITS[unit]
    each = None if flat is None else to_price(flat, f"{where}.{SEARCH_FLAT_KEY}")
    if cost is None and each is not None:
        return {"google_search": {"per": per, "usd_per_1000": each * 1000}}
    if not isinstance(cost, Mapping):
        raise ConfigurationError(
            f"{where}.{SEARCH_COST_KEY}: expected {{search_context_size_medium: USD per unit}}"
        )
    amounts = {}
    for size, value in cost.items():
        if size not in _SEARCH_SIZES:
            raise ConfigurationError(
                f"{where}.{SEARCH_COST_KEY}.{size}: unknown; known: {', '.join(_SEARCH_SIZES)}"
            )
        amounts[size] = to_price(value, f"{where}.{SEARCH_COST_KEY}.{size}")
    medium = amounts.get("search_context_size_medium")
    if medium is None:
        raise ConfigurationError(
            f"{where}.{SEARCH_COST_KEY}: needs search_context_size_medium (what LiteLLM bills "
            "Gemini at)"
        )
    if each is not None and each != medium:
        raise ConfigurationError(
            f"{where}: {SEARCH_FLAT_KEY} ({each}) and {SEARCH_COST_KEY}.search_context_size_medium "
            f"({medium}) give different search fees; keep one"
        )
    return {"google_search": {"per": per, "usd_per_1000": medium * 1000}}


def _given(info: Mapping[str, Any], params: Mapping[str, Any], key: str) -> bool:
    return any(values.get(key) is not None for values in (params, info))


def deployment_prices(
    info: Mapping[str, Any], params: Mapping[str, Any], where: str, model: str = ""
) -> dict[str, Any]:
    """The ``register_prices`` fields of one deployment of ``model`` (``litellm_params.model``):
    its ``model_info``'s own fields and LiteLLM's per-token keys from ``litellm_params`` or
    ``model_info`` (the same key in both must give the same price)."""
    spec: dict[str, Any] = {key: _exact(info[key]) for key in _NATIVE if info.get(key) is not None}
    tools = search_fee(info, f"{where}.model_info")
    if tools is not None:
        if "tools" in spec:
            raise ConfigurationError(
                f"{where}.model_info: tools and {SEARCH_COST_KEY} / {SEARCH_FLAT_KEY} both give "
                "the search fee; keep one"
            )
        spec["tools"] = tools
    tokens: dict[str, Any] = dict(spec.get("tokens_per_million") or {})
    image_output = "output_image" in tokens or _given(info, params, "output_cost_per_image_token")
    per_image = _exact(model_info_per_image(info, model))
    token_priced_images = _token_priced_images(model)
    if (
        token_priced_images
        and per_image
        and not image_output
        and _given(info, params, "output_cost_per_token")
    ):
        raise ConfigurationError(
            f"{where}: output_cost_per_token beside {' / '.join(PER_IMAGE_KEYS)} is "
            f"ambiguous for {model}: Google bills an image as its output image tokens, and "
            "output_cost_per_token is the text output's price in LiteLLM's Gemini entries; "
            "give the image tokens' price as output_cost_per_image_token (USD per token)"
        )
    for key, kinds in _PER_TOKEN.items():
        if key == "output_cost_per_token" and image_output:
            kinds = ("output_text",)  # beside the image's own price: the text output's
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
    # LiteLLM's price of one output image, and by size (``"1024x1024"`` or ``"1024x1024/high"``):
    # the ``per_image`` table the deployment's calls are billed from and cost-based routing reads
    if per_image:
        if "per_image" in spec:
            raise ConfigurationError(
                f"{where}.model_info: per_image and {' / '.join(PER_IMAGE_KEYS)} both price "
                "its images; keep one"
            )
        if "output_image" in tokens and not token_priced_images:
            # The output tokens price the images (the upstream reports them; LiteLLM bills them
            # so too): a per-image price beside them would be what the calls are ranked and
            # estimated at, not what they are billed.
            _note(
                "%s.model_info: %s not used: its output tokens are priced, and bill its calls",
                where,
                " / ".join(key for key in PER_IMAGE_KEYS if info.get(key) is not None),
            )
        else:
            spec["per_image"] = per_image
    return spec


def _note(message: str, *args: Any) -> None:
    """Log an INFO note about a config's prices once per process, however often it is read."""
    text = message % args
    with _noted_lock:
        if text in _noted:
            return
        _noted.add(text)
    log.info("%s", text)


#: One model_list entry as its prices are read: (where in the config, ``litellm_params.model``,
#: ``model_info``, ``litellm_params``, the deployment's id as the router names it).
ModelListEntry = tuple[str, str, Mapping[str, Any], Mapping[str, Any], str]


def own_price_key(model: str, deployment_id: str) -> str:
    """The name a deployment's own prices are registered under when another deployment of its
    model prices that model differently or not at all: its calls carry it as the model they are
    priced as (``base_model``), so each is billed at its own deployment's prices."""
    return f"{model}@{deployment_id}"


def model_list_prices(entries: Iterable[ModelListEntry]) -> dict[str, tuple[str, dict[str, Any]]]:
    """model -> (where, ``register_prices`` fields) of every entry that prices its model, by
    :func:`deployment_prices`. A model's name is given a deployment's prices only when every
    deployment of that model gives the same ones: then any call naming it is priced so. When
    they differ, or one of them gives none, each that gives prices registers them under
    :func:`own_price_key` instead, which its calls are billed by, and the model's name gets none
    from the model_list: a deployment without prices of its own is priced as its model's name
    is otherwise (the ``prices:`` section, a prices file, the bundled table), or recorded
    unpriced, never at another deployment's prices. A deployment's price never depends on
    another's, nor on the order of the model_list."""
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    # model -> (id, where, spec) of each of its deployments, spec empty when it gives no prices
    each_of: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for where, model, info, params, deployment_id in entries:
        spec = deployment_prices(info, params, where, model)
        each_of.setdefault(model, []).append((deployment_id, where, spec))
    for model, each in each_of.items():
        specs = [spec for _, _, spec in each]
        if all(specs) and all(spec == specs[0] for spec in specs):
            found[model] = (each[-1][1], specs[-1])
            continue
        if not any(specs):
            continue
        unpriced = [where for _, where, spec in each if not spec]
        _note(
            "%s price %r differently%s: each deployment's calls are billed at its own prices",
            " and ".join(where for _, where, spec in each if spec),
            model,
            f" ({' and '.join(unpriced)}: none, priced as {model!r} is without them)"
            if unpriced
            else "",
        )
        for deployment_id, where, spec in each:
            if spec:
                found[own_price_key(model, deployment_id)] = (where, spec)
    return found


def register_model_list_prices(found: Mapping[str, tuple[str, Mapping[str, Any]]]) -> int:
    """Register a model_list's prices (:func:`model_list_prices`) with
    :func:`tracking.register_prices`, as the SDK's ``Router`` does for its deployments; returns
    how many got one. A model priced only by a ``base_model`` is not registered: the router
    sends the base model with each of its calls, which prices them by it. A bad price is a
    :class:`~tracking.errors.ConfigurationError` naming where it was written."""
    return register_found(
        {key: entry for key, entry in found.items() if entry[1].keys() != {"base_model"}}
    )


def register_found(found: Mapping[str, tuple[str, Mapping[str, Any]]], source: str = "") -> int:
    """Register model -> (where, ``register_prices`` fields) together, as
    :func:`tracking.register_prices` does; a bad entry is a
    :class:`~tracking.errors.ConfigurationError` led by ``source`` and where it was written.
    Returns how many models got a price."""
    from . import _custom_entry, _register

    parsed = []
    for model, (where, spec) in found.items():
        try:
            parsed.append((model, _custom_entry(model, spec)))
        except ConfigurationError as exc:
            raise ConfigurationError(f"{source}{where}: {exc.message}") from None
    # A base model naming no price is not refused here: the proxy refuses it at start naming its
    # key (tracking.proxy.prices.check_base_models); an SDK Router's calls are recorded unpriced.
    _register(parsed, check=False)
    return len(found)
