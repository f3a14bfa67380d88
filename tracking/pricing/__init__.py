"""Pricing a call to the cent, in Decimal (docs/architecture.md, "Pricing").

:func:`price_call` follows one order. A model billed by tokens is priced from the response's
usage tokens times its token prices; when the usage is missing or in a shape we cannot read
(``{}``, only ``total_tokens``, chat-style names) the call is *estimated* instead
(:func:`estimate_call_cost`: the per-image price for the size and quality billed, else a token
estimate) with ``cost_source="estimate"``, never a silent 0 or None. A model billed per image
(dall-e-2) is priced from the per-image table for the size and quality the upstream *billed*
(the response's resolved values, never a requested ``auto``). A model with no credible price at
all is ``unpriced``: cost None and a warning logged once per model. A call refused before
sending, or answered with an error, costs 0: it is not billed. A success answer we cannot read
is most likely billed, so it is estimated from the request; one that reported the tokens it
billed without a usable image (a Gemini safety block: ``APIError.billed_usage``) is priced from
those tokens.

Prices come from three places, the first that has the model winning: :func:`register_prices`
(Azure deployments mapped to a base model, negotiated discounts), a user's prices file
(:func:`use_prices_file`, ``TRACKING_PRICES_FILE``, the proxy's
``general_settings.prices_file``; written by ``tracking prices import``), and the packaged file
(:mod:`tracking.pricing.table`, loaded on first use). A call to a model past its shutdown date
is still priced (from history) and logs one warning per model.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, Inexact, localcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ..errors import APIResponseError, ConfigurationError
from ..families import family_for
from ..frozen import fast_init
from .table import (
    ANY,
    TOKEN_KINDS,
    TOOL_FEE_UNITS,
    PriceEntry,
    ToolFee,
    check_per_image_key,
    load_packaged,
    load_price_file,
    per_image_price,
    per_megapixel_prices,
    to_price,
    tool_fees,
)

if TYPE_CHECKING:
    from ..events import CostSource
    from ..request import ImageEditRequest
    from ..response import ImageResponse, SearchGrounding, Usage

__all__ = [
    "ANY",
    "PRICES_FILE_ENV",
    "SVG_AUTHORING_REF",
    "Cost",
    "PriceEntry",
    "billing_entry",
    "billing_keys",
    "estimate_call_cost",
    "find_entry",
    "is_priced",
    "load_price_file",
    "price_call",
    "price_day",
    "price_table",
    "prices_version",
    "register_prices",
    "request_entry",
    "reset_prices",
    "search_uses",
    "served_entry",
    "shutdown_date",
    "unreadable_success",
    "use_prices_file",
    "with_search_fee",
]

#: The environment variable naming a user's prices file (``tracking prices import`` writes one).
PRICES_FILE_ENV = "TRACKING_PRICES_FILE"

log = logging.getLogger("tracking")

_MILLION = Decimal(1_000_000)
_PER_IMAGE_PLACES = Decimal("1e-12")  # only when the division is inexact
#: Cached prices fall back to the full price when a model lists none (never under-bill).
_CACHED_FALLBACK = {"cached_input_text": "input_text", "cached_input_image": "input_image"}
#: An input reported unsplit is counted as text; its image counterpart's rate may be dearer.
_UNSPLIT = {"input_text": "input_image", "cached_input_text": "cached_input_image"}
_ALIAS_DEPTH = 4


@fast_init
@dataclass(frozen=True, slots=True)
class Cost:
    """What a call cost and how that was worked out."""

    usd: Decimal | None
    per_image_usd: Decimal | None
    source: CostSource
    price_ref: str | None


UNPRICED = Cost(None, None, "unpriced", None)
#: The most one call's provider-reported charge (xAI's ticks, Recraft's credits) is believed:
#: a thousand dollars, some hundred times the dearest image call today. Above it the figure is
#: a fault, not a bill: the call is priced as if none were reported (the table; a failure by
#: estimate), never recorded at a cost the ledger would refuse (its bound is $1e10).
MAX_REPORTED_USD = Decimal(1000)
#: A failed call: OpenAI bills no request that ends in an error answer. A failure the
#: provider's terms say is not charged (``APIError.not_billed_reason``) has the reason after it
#: in its ``price_ref`` (``failed-call:not-billed:moderated``).
NOT_BILLED = Cost(Decimal(0), None, "table", "failed-call:not-billed")

_lock = threading.RLock()  # re-entered: a registration checks its base models under it
_packaged: dict[str, list[PriceEntry]] | None = None
#: key -> (own entry or None, base model or None, discount)
_custom: dict[str, _Registered] = {}
_warned: set[str] = set()
_warned_retired: set[str] = set()
#: the user's prices file, once read (None: not read yet; read from the environment on first use)
_override: dict[str, list[PriceEntry]] | None = None
#: Counts the changes of the registered prices and the prices file (:func:`prices_version`).
_version = 0


def prices_version() -> int:
    """A number that changes whenever prices are registered or reset, or a prices file is
    used: a reader of prices that depend on them (the proxy's config's, read once per start:
    :mod:`tracking.proxy.prices`) knows whether what it read still holds."""
    return _version


def _changed() -> None:
    global _version
    with _lock:
        _version += 1


def _packaged_table() -> dict[str, list[PriceEntry]]:
    global _packaged
    table = _packaged
    if table is None:
        with _lock:
            table = _packaged = _packaged or load_packaged()
    return table


def _override_table() -> dict[str, list[PriceEntry]]:
    global _override
    table = _override
    if table is None:
        path = os.environ.get(PRICES_FILE_ENV)
        table = _warn_dropped(load_price_file(path)) if path else {}
        with _lock:
            _override = table
    return table


def use_prices_file(path: str | Path | None) -> int:
    """Price from a user's prices file (our format, as ``tracking prices import`` writes it),
    whose entries win over the packaged file; None goes back to ``$TRACKING_PRICES_FILE``.

    The file is read and checked now, so a bad file fails at start. Returns the number of
    models it prices.
    """
    global _override
    table = _warn_dropped(load_price_file(path)) if path is not None else None
    with _lock:
        _override = table
        _changed()
    return len(table) if table is not None else 0


def _warn_dropped(table: dict[str, list[PriceEntry]]) -> dict[str, list[PriceEntry]]:
    """Warn, once a file is read, about each of its entries that leaves out prices the packaged
    entry of the same model has today: an entry replaces the packaged one whole, so a file
    giving only ``output_image`` bills input tokens at $0."""
    today, packaged = datetime.now(UTC).date(), _packaged_table()
    for model, entries in table.items():
        mine = next((e for e in entries if e.covers(today) and e.key == model), None)
        theirs = next((e for e in packaged.get(model, ()) if e.covers(today)), None)
        if mine is None or theirs is None:
            continue
        dropped = set(theirs.figures()) - set(mine.figures())
        named = sorted(name for name in dropped if name.startswith("tokens."))
        per_image = len(dropped) - len(named)
        if per_image:
            named.append(f"{per_image} per_image price(s)")
        if named:
            log.warning(
                "tracking: the prices file's entry for %s replaces the packaged one whole and "
                "leaves out %s: calls are priced without them (give each, 0 if it is free)",
                model,
                ", ".join(named),
            )
    return table


def price_table() -> dict[str, tuple[list[PriceEntry], list[PriceEntry]]]:
    """model -> (the user's prices file's entries, the packaged entries), for listing."""
    override, packaged = _override_table(), _packaged_table()
    return {m: (override.get(m, []), packaged.get(m, [])) for m in {*packaged, *override}}


def register_prices(
    model_or_entries: str | Mapping[str, Mapping[str, Any]], /, **fields: Any
) -> None:
    """Add or override prices; registered entries win over the packaged file.

    ``register_prices("my-model", tokens_per_million={...}, per_image={"high": {"1024x1024":
    "0.2"}})`` prices a model; ``register_prices("azure/my-deployment", base_model="gpt-image-2",
    discount="0.15")`` prices a deployment as a base model less a discount. Several at once:
    ``register_prices({"azure/a": {"base_model": "gpt-image-2"}, ...})``. Amounts are Decimal,
    int or str (floats are read through their repr). Registering a model again replaces it.

    A ``base_model`` must name a price when it is registered (registered before or in the same
    call, in a prices file or the bundled table), in force today or on the first day of the
    registration's window: a name no price gives is a :class:`~tracking.errors.ConfigurationError`
    naming it, and nothing of the call is registered. Its calls are priced as the base model
    alone: should its price go later (another prices file), they are recorded unpriced, never
    priced as the model's own entry.
    """
    if isinstance(model_or_entries, str):
        items: list[tuple[str, Mapping[str, Any]]] = [(model_or_entries, fields)]
    elif isinstance(model_or_entries, Mapping) and not fields:
        items = list(model_or_entries.items())
    else:
        raise ConfigurationError(
            "register_prices: pass a model name and its fields, or one mapping of them"
        )
    parsed = [(key, _custom_entry(key, spec)) for key, spec in items]
    unknown = _register(parsed, check=True)
    if unknown is not None:
        key, base_model = unknown
        raise ConfigurationError(
            f"register_prices({key!r}).base_model: {base_model!r} names no known price (none "
            "registered, in a prices file or in the bundled price table): its calls would be "
            "recorded unpriced, never priced as another name; check the name, or register the "
            "base model's prices first (or in the same call)"
        )


def _register(parsed: list[tuple[str, _Registered]], *, check: bool) -> tuple[str, str] | None:
    """Register ``parsed`` together. With ``check``, a base model must name a price once all of
    them are registered (on today, or on the first day of a window that does not hold today):
    when one names none, nothing is registered and (its key, its base model) is returned."""
    _override_table(), _packaged_table()  # read before the lock is taken (each takes it once)
    with _lock:
        _changed()
        before = {key: _custom.get(key) for key, _ in parsed}
        for key, value in parsed:
            _custom[key] = value
        if not check:
            return None
        today = datetime.now(UTC).date()
        for key, value in parsed:
            if value.base_model is None:
                continue
            day = today if value.covers(today) else value.effective_from or value.effective_to
            if find_entry(_names(value.base_model), day or today) is None:
                for old_key, old in before.items():
                    if old is None:
                        _custom.pop(old_key, None)
                    else:
                        _custom[old_key] = old
                return key, value.base_model
    return None


def reset_prices() -> None:
    """Forget every registered price, the prices file and every warning (for tests)."""
    global _override
    with _lock:
        _custom.clear()
        _warned.clear()
        _warned_retired.clear()
        _override = None
        _changed()


class _Registered(NamedTuple):
    """What ``register_prices`` was given for one model: its own prices, or a base model and a
    discount (or a discount on the packaged prices of the same model), and the days it holds."""

    own: PriceEntry | None
    base_model: str | None
    discount: Decimal
    effective_from: date | None
    effective_to: date | None
    #: tool fees given with it (``tools``), which replace those of the prices it names; None:
    #: none given
    tools: Mapping[str, ToolFee] | None = None

    def covers(self, day: date) -> bool:
        if self.effective_from is not None and day < self.effective_from:
            return False
        return self.effective_to is None or day <= self.effective_to


def _custom_entry(key: Any, spec: Any) -> _Registered:
    where = f"register_prices({key!r})"
    if not isinstance(key, str) or not key:
        raise ConfigurationError("register_prices: a model name must be a non-empty string")
    if not isinstance(spec, Mapping):
        raise ConfigurationError(f"{where}: expected a mapping of fields")
    allowed = {
        "tokens_per_million",
        "per_image",
        "per_megapixel",
        "base_model",
        "discount",
        "effective_from",
        "effective_to",
        "tools",
    }
    unknown = set(spec) - allowed
    if unknown:
        raise ConfigurationError(
            f"{where}: unknown field(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(allowed))}"
        )
    discount = to_price(spec.get("discount", 0), f"{where}.discount")
    if discount >= 1:
        raise ConfigurationError(f"{where}.discount: a fraction below 1, e.g. '0.15'")
    base = spec.get("base_model")
    if base is not None and (not isinstance(base, str) or not base):
        raise ConfigurationError(f"{where}.base_model: a model name")
    tokens_raw = spec.get("tokens_per_million") or {}
    per_image_raw = spec.get("per_image") or {}
    if not isinstance(tokens_raw, Mapping) or not isinstance(per_image_raw, Mapping):
        raise ConfigurationError(f"{where}: tokens_per_million and per_image are mappings")
    tokens: dict[str, Decimal] = {}
    for kind, value in tokens_raw.items():
        if kind not in TOKEN_KINDS:
            raise ConfigurationError(
                f"{where}.tokens_per_million.{kind}: unknown; known: {', '.join(TOKEN_KINDS)}"
            )
        tokens[kind] = to_price(value, f"{where}.tokens_per_million.{kind}")
    per_image: dict[str, dict[str, Decimal]] = {}
    for quality, sizes in per_image_raw.items():
        if not isinstance(sizes, Mapping):
            raise ConfigurationError(f"{where}.per_image.{quality}: a mapping of size -> price")
        check_per_image_key(quality, f"{where}.per_image.{quality}")
        per_image[str(quality)] = {
            str(size): to_price(
                value, check_per_image_key(size, f"{where}.per_image.{quality}.{size}")
            )
            for size, value in sizes.items()
        }
    # FLUX.2's (until 2026-12-07 a price file alone took them)
    per_megapixel = per_megapixel_prices(
        spec.get("per_megapixel"), f"{where}.per_megapixel", to_price
    )
    start = _day(spec.get("effective_from"), f"{where}.effective_from")
    end = _day(spec.get("effective_to"), f"{where}.effective_to")
    if start is not None and end is not None and end < start:
        raise ConfigurationError(f"{where}: effective_to {end} is before effective_from {start}")
    raw_tools = spec.get("tools")
    tools = None if raw_tools is None else tool_fees(raw_tools, f"{where}.tools")
    own = None
    if tokens or per_image or per_megapixel:
        if base is not None:
            raise ConfigurationError(f"{where}: give prices or a base_model, not both")
        own = PriceEntry(
            key=key,
            tokens=tokens,
            per_image=per_image,
            per_megapixel=per_megapixel,
            effective_from=start,
            effective_to=end,
            custom=True,
            tools=tools or {},
        )
    elif base is None and discount == 0 and tools is None:
        raise ConfigurationError(f"{where}: give prices, a base_model, a discount or tools")
    # The window holds for a base model or a discount as for prices of its own: outside it, the
    # model is priced as if nothing had been registered for it.
    return _Registered(own, base, discount, start, end, tools)


def _day(raw: Any, where: str) -> date | None:
    if raw is None or isinstance(raw, date):
        return raw
    if isinstance(raw, str):
        try:
            return date.fromisoformat(raw)
        except ValueError:
            pass
    raise ConfigurationError(f"{where}: an ISO date (YYYY-MM-DD)")


def _names(model: str) -> list[str]:
    """The names a call asking ``model`` is priced by, most specific first (a price for
    ``openai/gpt-image-1`` beats one for ``gpt-image-1``): with its provider, as written, and
    without its provider prefix."""
    from ..request import split_provider

    provider, upstream_model = split_provider(model)
    return list(dict.fromkeys([f"{provider}/{upstream_model}", model, upstream_model]))


def _keys(own: list[str], base_model: str | None) -> tuple[list[str], list[str]]:
    """(the names registered prices are looked up under, the names the price files and the
    bundled table are). A call carrying a base model is priced as that model, looked up as a
    call to it would be, unless a price registered for its own model's name says otherwise (a
    ``prices:`` entry, ``register_prices``, every deployment's shared ``model_info``): never by
    a table's entry for the name it was sent as. A base model no price names leaves the call
    unpriced. ``own``: the names of the model the call asks (:func:`_names`). A deployment's own
    prices' name (``model@id``, :func:`~tracking.pricing.model_info.own_price_key`) is no base
    model: where nothing is registered under it (a ``Router(register_prices=False)``), the call
    is priced as its model is."""
    if not base_model:
        return own, own
    if any(base_model.startswith(f"{name}@") for name in own):
        return [base_model, *own], own
    based = _names(base_model)
    return list(dict.fromkeys([*based, *own])), based


def _candidates(request: ImageEditRequest) -> tuple[list[str], list[str]]:
    own = [f"{request.provider}/{request.upstream_model}", request.model, request.upstream_model]
    return _keys(list(dict.fromkeys(own)), request.base_model)


def billing_keys(model: str, base_model: str | None = None) -> list[str]:
    """The names a call asking ``model`` (a deployment's ``litellm_params.model``, provider
    prefix and all) and carrying ``base_model`` (a router deployment's own prices' name, or its
    ``model_info.base_model``) is priced as, the first the price table prices winning: exactly
    the names :func:`price_call` looks its request up by. With a ``base_model``, its names
    first; ``model``'s only for prices registered under them (:func:`billing_entry`)."""
    return _keys(_names(model), base_model)[0]


def billing_entry(
    model: str, base_model: str | None = None, day: date | None = None
) -> PriceEntry | None:
    """The entry a call asking ``model`` with ``base_model`` is billed from on ``day`` (None:
    today), as :func:`price_call` finds it; None: its calls are recorded unpriced. The one
    answer to "are this deployment's calls priced" (``/health``'s ``priced``, the proxy's
    warning at start, the unpriced-call counters a router's groups start at 0)."""
    registered, tables = _keys(_names(model), base_model)
    return find_entry(registered, day or datetime.now(UTC).date(), tables=tables)


def find_entry(
    keys: list[str], day: date, depth: int = 0, *, tables: list[str] | None = None
) -> PriceEntry | None:
    """The entry pricing the first of ``keys`` that has one: registered first, then the price
    files' and packaged entries of the first of ``tables`` (None: ``keys``) that has one."""
    for key in keys:
        custom = _custom.get(key)
        if custom is not None:
            entry = _from_custom(key, custom, day, depth)
            if entry is not None:
                return entry
            if custom.base_model is not None and custom.covers(day):
                return None  # priced as its base model alone: never by another name's prices
    for table in (_override_table(), _packaged_table()):
        for key in keys if tables is None else tables:
            for entry in table.get(key, ()):
                if entry.covers(day):
                    return entry
    return None


def is_priced(model: str, day: date | None = None) -> bool:
    """Whether a call asking ``model`` is priced on ``day`` (None: today), the price found as
    billing finds it (:func:`billing_entry`; a router's deployment: its ``priced()``)."""
    return billing_entry(model, None, day) is not None


def shutdown_date(
    model: str, day: date | None = None, base_model: str | None = None
) -> date | None:
    """The day ``model`` was or will be shut down by its provider, when the price table knows:
    read from the entry billing prices a call asking ``model`` (with ``base_model``) from
    (:func:`billing_entry`), so a retired-model warning or count names the model its calls
    are billed as. An OpenAI-compatible name with a slash (``tenant-7/gpt-image-1``) is not
    ``gpt-image-1``; a bare name priced under ``openai/...`` takes that entry's date (none
    for a price registered without one)."""
    entry = billing_entry(model, base_model, day)
    return entry.shutdown if entry is not None else None


def _from_custom(key: str, custom: _Registered, day: date, depth: int) -> PriceEntry | None:
    own, base_model, discount = custom.own, custom.base_model, custom.discount
    if not custom.covers(day):
        base: PriceEntry | None = None
    elif own is not None:
        base = own
    elif depth >= _ALIAS_DEPTH:
        base = None
    elif base_model is not None:  # looked up as a call to it is: with its provider, and not
        base = find_entry(_names(base_model), day, depth + 1)
    else:  # a discount (or tool fees) on the price file's or packaged prices of the same model
        base = _table_entry(key, day)
        if base is None and "@" in key:  # a deployment's own terms (model@id): its model's
            base = _table_entry(key.rpartition("@")[0], day)
    if base is None:
        return None
    return _scaled(key, base, discount, custom.tools)


def _scaled(
    key: str, base: PriceEntry, discount: Decimal, own_tools: Mapping[str, ToolFee] | None
) -> PriceEntry:
    """``base``'s prices (and tool fees, or ``own_tools``) less ``discount``, as the prices
    registered under ``key``."""
    factor = 1 - discount
    tools = base.tools if own_tools is None else own_tools
    return PriceEntry(
        key=key if base.key == key else f"{key}->{base.key}",
        tokens={kind: price * factor for kind, price in base.tokens.items()},
        per_image={
            quality: {size: price * factor for size, price in sizes.items()}
            for quality, sizes in base.per_image.items()
        },
        effective_from=base.effective_from,
        effective_to=base.effective_to,
        shutdown=base.shutdown,
        custom=True,
        tools={tool: ToolFee(fee.per, fee.usd * factor) for tool, fee in tools.items()},
        per_megapixel={kind: price * factor for kind, price in base.per_megapixel.items()},
        defaults=base.defaults,
    )


def _table_entry(key: str, day: date) -> PriceEntry | None:
    """The entry of a user's prices file, else of the packaged table, a call asking ``key``
    would be billed from on ``day`` when nothing is registered for it: a name with its provider
    (``gemini/gemini-3.1-flash-image``, as a deployment's ``litellm_params.model`` writes it)
    is also looked up without it, as billing does. What a discount registered alone, and a
    Gemini deployment's one per-image price (its tiers' ratio), apply to."""
    names = _names(key)
    for table in (_override_table(), _packaged_table()):
        for name in names:
            entry = next((e for e in table.get(name, ()) if e.covers(day)), None)
            if entry is not None:
                return entry
    return None


def served_entry(
    served: str, registered: list[str], tables: list[str], day: date
) -> tuple[PriceEntry | None, bool]:
    """(the entry a call served by another model than the one asked is billed from, whether that
    price is an estimate): a FLUX Kontext edit with a mask runs on FLUX Fill (``served``), whose
    price applies, by the terms registered for the deployment (``registered``: the names its
    calls' registered prices are looked up by, and ``tables``, its names in the price files:
    :func:`_candidates`; the fallback of a served model with no price of its own, as a
    Stability AI operation). A Fill price registered by
    the user (``register_prices``, ``prices:``) is taken as it is; otherwise Fill's price (a
    prices file's, else the bundled one) less the deployment's ``discount``. A deployment's own
    per-call prices are Kontext's, not Fill's: its masked calls are billed at Fill's price less
    its discount, flagged an estimate (its terms do not say what Fill costs it) unless a Fill
    price is registered."""
    fill = find_entry(list(dict.fromkeys([served, *_names(served)])), day)
    if fill is None:  # no price of its own: priced as a call to the model asked
        return find_entry([served, *registered], day, tables=[served, *tables]), False
    if fill.custom:
        return fill, False
    terms = next(
        (
            (key, custom)
            for key in registered
            if (custom := _custom.get(key)) is not None and custom.covers(day)
        ),
        None,
    )
    if terms is None:
        return fill, False
    key, custom = terms
    if custom.own is None and custom.discount == 0:
        return fill, False
    return _scaled(key, fill, custom.discount, None), custom.own is not None


def request_entry(
    request: ImageEditRequest, day: date, served: str | None = None
) -> tuple[PriceEntry | None, bool]:
    """(the entry ``request`` is billed from on ``day``, whether its price is an estimate):
    found by its names (:func:`_candidates`), or, served by another model (``served``, else
    ``request.served_as``), by :func:`served_entry`."""
    registered, tables = _candidates(request)
    served = served or request.served_as
    if served is not None and served not in _names(request.model):
        return served_entry(served, registered, tables, day)
    return find_entry(registered, day, tables=tables), False


def price_day(start_time: datetime) -> date:
    """The day whose prices a call is priced at: the UTC day it started (for the proxy, the
    instant it admitted the call, at which its budget hold was priced). A call is priced by one
    day from its hold to its ledger row: a price that changes at midnight while it runs does
    not apply to it, as a price list's new prices apply to calls made from that day."""
    if start_time.tzinfo is None:  # a naive instant is read as UTC, as the ledger's are
        return start_time.date()
    return start_time.astimezone(UTC).date()


def price_call(
    request: ImageEditRequest | None,
    response: ImageResponse | None,
    *,
    day: date | None = None,
    failure: BaseException | None = None,
) -> Cost:
    """The cost of one call: usage first, an estimate when usage is unreadable, the per-image
    table for per-image models, else unpriced. ``failure`` is why there is no response: a
    success answer that could not be read (:class:`~tracking.APIResponseError` with a 2xx
    status) is estimated from the request, any other failure was not billed. Every price,
    estimates included, is the one in force on ``day``: the call's start (its event's
    ``start_time``), so a price change at midnight during a call does not split it; None:
    today."""
    if request is None:  # refused before a request existed: nothing was sent
        return NOT_BILLED if response is None else UNPRICED
    day = day or datetime.now(UTC).date()
    served = response.price_model if response is not None else None
    entry, unsure = request_entry(request, day, served)
    if entry is not None and entry.retired_on(day):
        _warn_retired(request.model, entry)
    if response is None:
        reason = getattr(failure, "not_billed_reason", None)
        if reason is not None:  # the provider's terms say such a failure is not charged
            return Cost(Decimal(0), None, NOT_BILLED.source, f"{NOT_BILLED.price_ref}:{reason}")
        charged = getattr(failure, "billed_usd", None)
        if charged is not None and charged > MAX_REPORTED_USD:  # a fault, not a bill
            return estimate_unknown_outcomes(request, 1, day)
        if charged is not None:  # no image, but the answer said what the provider charged
            return Cost(charged, None, "usage", f"provider:{request.provider}")
        billed = getattr(failure, "billed_usage", None)
        searched = getattr(failure, "billed_grounding", None)
        if entry is not None and billed is not None:  # no image, but the answer billed tokens
            return with_search_fee(entry, searched, _failure_cost(entry, request, billed), 0)
        made = getattr(failure, "billed_images", 0)
        if entry is not None and made > 0:  # images made (and billed), none usable
            return _estimate(entry, request, None, made)
        if entry is not None and unreadable_success(failure):
            # a 2xx never read: estimated as any attempt whose outcome is unknown (the input
            # allowance included), so it costs what a dropped answer would
            return estimate_unknown_outcomes(request, 1, day)
        if entry is not None and entry.tokens and _refused_in_an_answer(failure):
            return with_search_fee(entry, searched, _input_estimate(entry, request), 0)
        if entry is None and (
            billed is not None
            or made > 0
            or unreadable_success(failure)
            or _refused_in_an_answer(failure)
        ):  # billed (an answer came, or may have), at a price no entry gives: never $0
            _warn_unpriced(request.model, _no_price(request))
            return UNPRICED
        return NOT_BILLED
    if response.billed_usd is not None and response.billed_usd > MAX_REPORTED_USD:
        log.warning(
            "tracking: %r: the provider reported a charge of $%s, above the $%s believed; "
            "the call is priced from the price table",
            request.model,
            response.billed_usd,
            MAX_REPORTED_USD,
        )
    elif response.billed_usd is not None:  # the provider said what it charged: that is the cost
        return Cost(
            usd=response.billed_usd,
            per_image_usd=_per_image(response.billed_usd, response.images_returned),
            source="usage",
            price_ref=f"provider:{request.provider}",
        )
    if entry is None:
        _warn_unpriced(request.model, _no_price(request))
        return UNPRICED
    cost = with_search_fee(
        entry, response.grounding, _answer_cost(entry, request, response), response.images_returned
    )
    return _unsure(_unpriced_authoring(request, response, entry, cost), unsure)


#: ``price_ref`` prefix of a call served by another model than asked (FLUX Fill for a masked
#: FLUX Kontext edit) from a deployment whose own prices are the asked model's: billed at the
#: served model's price less the deployment's discount, its terms for that model unknown.
SERVED_UNSURE_REF = "estimate:own-prices-not-served-model"


def _unsure(cost: Cost, unsure: bool) -> Cost:
    if not unsure or cost.usd is None or cost.source == "estimate":
        return cost
    return Cost(cost.usd, cost.per_image_usd, "estimate", f"{SERVED_UNSURE_REF}:{cost.price_ref}")


#: ``price_ref`` part of a call's Grounding with Google Search fee, after the entry's reference
#: (``+google_search:2xsearch_query``); ``estimate:`` before it when the answer did not say.
SEARCH_FEE_REF = "google_search"


#: The search fee's part of a ``price_ref``: ``+google_search:2xsearch_query`` (``+estimate:``
#: before ``google_search`` when the answer did not say what it ran).
_SEARCH_USES = re.compile(
    rf"\+(?:estimate:)?{SEARCH_FEE_REF}:(\d+)x({'|'.join(TOOL_FEE_UNITS)})(?![\w-])"
)


def search_uses(price_ref: str | None) -> tuple[int, str] | None:
    """The Grounding with Google Search uses a call's ``price_ref`` says it was billed for, and
    their unit (``search_query`` or ``grounded_prompt``), as :func:`with_search_fee` writes
    them; None when it billed none (no search, or no fee: ``-unpriced``)."""
    if not price_ref or SEARCH_FEE_REF not in price_ref:  # most calls: no regex on every event
        return None
    match = _SEARCH_USES.search(price_ref)
    return None if match is None else (int(match.group(1)), match.group(2))


def with_search_fee(
    entry: PriceEntry, grounding: SearchGrounding | None, cost: Cost, images: int
) -> Cost:
    """``cost`` with the fee of the call's Grounding with Google Search added: the entry's
    ``tools.google_search`` fee per search query the answer reports (or per grounded prompt: one
    per call), named in ``price_ref`` (``...+google_search:2xsearch_query``). Free allowances
    (Google's monthly grounded prompts per project) are not deducted: one call cannot know them.
    An answer that did not say what it ran (``reported=False``) makes the cost an estimate, and
    so does an entry with no such fee (the tokens alone are priced, flagged
    ``+estimate:google_search-unpriced``): never a silent $0 for the search."""
    if grounding is None or cost.usd is None:
        return cost
    fee = entry.tools.get("google_search")
    if fee is None:
        ref = f"{cost.price_ref}+estimate:{SEARCH_FEE_REF}-unpriced"
        return Cost(cost.usd, cost.per_image_usd, "estimate", ref)
    uses = grounding.queries if fee.per == "search_query" else 1
    total = cost.usd + uses * fee.usd
    part = f"{SEARCH_FEE_REF}:{uses}x{fee.per}"
    source: CostSource = cost.source if grounding.reported else "estimate"
    part = part if grounding.reported else f"estimate:{part}"
    per_image = _per_image(total, images) if cost.per_image_usd is not None else None
    return Cost(total, per_image, source, f"{cost.price_ref}+{part}")


def _answer_cost(entry: PriceEntry, request: ImageEditRequest, response: ImageResponse) -> Cost:
    images = response.images_returned
    if entry.tokens:  # billed by tokens: the usage, else an estimate
        usage = response.usage
        total = None
        if usage is not None and _readable(usage, images):
            total = _token_cost(entry, usage, bool(request.images))
            if total is None:  # the output images may be priced per image, beside the tokens
                total = _images_beside_tokens(entry, request, response, usage, images)
        if total is None:
            return _estimate(entry, request, response, images or request.n or 1)
        source: CostSource = "usage"
    elif entry.per_megapixel:  # billed by the megapixel: the sizes made and sent
        table_total = _megapixel_cost(entry, request, response, images)
        if table_total is None:
            return _estimate(entry, request, response, images or request.n or 1)
        total, source = table_total, "table"
    else:  # billed per image
        table_total = _table_cost(entry, request, response, images)
        if table_total is None:
            return _estimate(entry, request, response, images or request.n or 1)
        total, source = table_total, "table"
    return Cost(
        usd=total,
        per_image_usd=_per_image(total, images),
        source="custom" if entry.custom else source,
        price_ref=entry.ref,
    )


#: ``price_ref`` prefix of an answer billed for more than the table can price: an SVG from a
#: model whose family makes one (OpenAI's 2.6 models) is also billed for a separate
#: SVG-authoring model, whose tokens and prices the answer does not report.
SVG_AUTHORING_REF = "estimate:svg-authoring-unpriced"


def _images_beside_tokens(
    entry: PriceEntry,
    request: ImageEditRequest,
    response: ImageResponse,
    usage: Usage,
    images: int,
) -> Decimal | None:
    """A call of an entry that prices its output images per image and its other tokens by the
    token (a Gemini ``model_info`` giving ``input_cost_per_token`` and ``output_cost_per_image``
    but no image-output token price): the reported tokens but the output image's at their
    prices, plus each image at its per-image price, which is Google's bill for the image's
    output tokens. None (an estimate) when the entry prices the output image's tokens, has no
    per-image price for the image made, or leaves another reported kind without a price."""
    if "output_image" in entry.tokens:
        return None
    each = _table_cost(entry, request, response, images)
    rest = _token_cost(entry, usage, bool(request.images), priced_images=False)
    return None if each is None or rest is None else rest + each


def _unpriced_authoring(
    request: ImageEditRequest, response: ImageResponse, entry: PriceEntry, cost: Cost
) -> Cost:
    """``cost``, flagged an estimate (a lower bound) when the answer is an SVG its model's
    provider also bills an authoring model for: never recorded as the whole bill. A deployment
    of another name (``azure/my-deployment``) is known by the model its prices are based on
    (``base_model``: the entry ``azure/my-deployment->gpt-image-2.6-sunburst``)."""
    family = request.family
    if family is None:  # priced as another model (a base model, a registered alias): its family
        family = family_for(entry.key.rsplit("->", 1)[-1], request.operation)
    output_format = response.output_format or request.output_format
    if cost.usd is None or family is None or output_format not in family.single_generation_formats:
        return cost
    return Cost(cost.usd, cost.per_image_usd, "estimate", f"{SVG_AUTHORING_REF}:{cost.price_ref}")


def _readable(usage: Usage, images: int) -> bool:
    """Usage we can bill from: output tokens must be reported, image tokens when images came
    back (thinking or text tokens alone leave the images' own tokens out of the bill)."""
    if images > 0:
        return usage.output_image_tokens > 0
    return usage.output_image_tokens > 0 or usage.output_text_tokens > 0


def _failure_cost(entry: PriceEntry, request: ImageEditRequest, usage: Usage) -> Cost:
    """A failed call whose answer reported the tokens it billed (a Gemini safety block): those
    tokens times the token prices; an estimate when they cannot all be priced (a kind without a
    price, only a total reported)."""
    counted = usage.input_tokens + usage.output_tokens
    total = _token_cost(entry, usage, bool(request.images)) if entry.tokens and counted else None
    if total is None:
        return _estimate(entry, request, None, request.n or 1)
    return Cost(total, None, "custom" if entry.custom else "usage", entry.ref)


def unreadable_success(failure: BaseException | None) -> bool:
    """A 2xx answer that could not be read (or an answer with no status): :func:`price_call`
    estimates such a failed attempt itself, as one whose outcome is unknown."""
    if not isinstance(failure, APIResponseError):
        return False
    status = failure.status_code
    return status is None or 200 <= status < 300


def _refused_in_an_answer(failure: BaseException | None) -> bool:
    """A refusal the upstream answered with a 2xx (a Gemini safety block), reporting no usage."""
    status = getattr(failure, "answer_status", None)
    return status is not None and 200 <= status < 300


def _input_estimate(entry: PriceEntry, request: ImageEditRequest) -> Cost:
    """What a refusal answered without its usage is billed, by estimate: no image was made, so
    the input alone (Google bills a Gemini answer's tokens unless the request failed with HTTP
    400 or 500: https://ai.google.dev/gemini-api/docs/billing, read 2026-12-04)."""
    from .estimate import input_estimate

    inputs = request.input_images + (request.mask is not None)
    total = input_estimate(entry, len(request.prompt), inputs)
    return Cost(total, None, "estimate", entry.ref)


def _estimate(
    entry: PriceEntry, request: ImageEditRequest, response: ImageResponse | None, images: int
) -> Cost:
    """A billed call whose cost its answer does not give (no usage, or one we cannot read or
    price; images made but none usable): ``images`` at the size and quality the answer reports
    (else the request's) plus the input allowance, by the one estimator an attempt whose
    outcome is unknown is priced by (:func:`.estimate.request_estimate`), so it never comes in
    under that attempt's estimate."""
    from .estimate import partial_images_cost, plausible_size, request_estimate

    size = plausible_size(response.price_size or response.size if response else None, request)
    quality = (response.quality if response else None) or request.quality
    total = request_estimate(entry, request, n=images, size=size, quality=quality)
    if total is None:
        _warn_unpriced(request.model, f"no price for size={size} quality={quality}")
        return UNPRICED
    if request.stream:  # a stream's usage counts its partial images' output tokens too
        received = response.partial_images_received if response is not None else None
        made = (request.partial_images or 0) if received is None else received
        total += partial_images_cost(entry, made)
    log.debug("tracking: %s priced by estimate (%s)", request.model, entry.ref)
    return Cost(total, _per_image(total, images), "estimate", entry.ref)


def _token_cost(
    entry: PriceEntry, usage: Usage, with_images: bool = False, *, priced_images: bool = True
) -> Decimal | None:
    """The tokens of ``usage`` at ``entry``'s prices (but the output image's when not
    ``priced_images``: they are priced per image). When a call that sent images
    (``with_images``) was answered with its input unsplit (``input_tokens`` alone, counted as
    text), that input is priced at the dearer of the text and image rates: never under-billed.
    """
    cached_text, cached_image = usage.cached_text_tokens, usage.cached_image_tokens
    if not cached_text and not cached_image and usage.cached_input_tokens:
        # No split reported: count cached tokens as text first, the smaller discount, so the
        # ledger never under-states what was billed.
        cached_text = min(usage.cached_input_tokens, usage.input_text_tokens)
        cached_image = min(usage.cached_input_tokens - cached_text, usage.input_image_tokens)
    counts = {
        "input_text": usage.input_text_tokens - cached_text,
        "cached_input_text": cached_text,
        "input_image": usage.input_image_tokens - cached_image,
        "cached_input_image": cached_image,
        "output_image": usage.output_image_tokens if priced_images else 0,
        "output_text": usage.output_text_tokens,
    }
    unsplit = with_images and usage.input_unsplit
    total = Decimal(0)
    for kind, count in counts.items():
        if count <= 0:
            continue
        price = entry.tokens.get(kind)
        if price is None and kind in _CACHED_FALLBACK:
            price = entry.tokens.get(_CACHED_FALLBACK[kind])
        if price is None:
            return None  # tokens we cannot price: usage cannot give the whole bill
        if unsplit and kind in _UNSPLIT:
            price = max(price, entry.tokens.get(_UNSPLIT[kind], price))
        total += count * price
    return total / _MILLION


def _table_cost(
    entry: PriceEntry, request: ImageEditRequest, response: ImageResponse, images: int
) -> Decimal | None:
    if not entry.per_image or images <= 0:
        return None
    size = response.price_size or response.size or _asked(request.size, entry, "size")
    quality = response.quality or _asked(request.quality, entry, "quality")
    price = per_image_price(entry.per_image, size, quality)
    return None if price is None else price * images


def _megapixel_cost(
    entry: PriceEntry, request: ImageEditRequest, response: ImageResponse, images: int
) -> Decimal | None:
    """A per-megapixel model's answer at its prices: the size it made (else asked) and the
    inputs' sizes; None (an estimate) when one of them is unknown."""
    from .estimate import _pixels, input_pixels
    from .megapixels import megapixel_cost

    made = _pixels(response.size or request.size)  # "auto" has no pixels: None
    inputs = input_pixels(request)
    if images <= 0 or made is None or None in inputs:
        return None
    return megapixel_cost(entry.per_megapixel, made, [p for p in inputs if p]) * images


def _asked(value: str | None, entry: PriceEntry, parameter: str) -> str | None:
    """The ``parameter`` (size or quality) a call asked, as billed: the model's documented
    default (``entry.defaults``: dall-e-2's 1024x1024) when it asked none; None for ``auto``
    (billed at what the answer reports, which this answer did not)."""
    if value is None:
        return entry.defaults.get(parameter)
    return None if value == "auto" else value


def _per_image(total: Decimal, images: int) -> Decimal | None:
    if images <= 0:
        return None
    with localcontext() as ctx:
        ctx.traps[Inexact] = True
        try:
            return total / images
        except Inexact:
            pass
    return (total / images).quantize(_PER_IMAGE_PLACES)


def _warn_retired(model: str, entry: PriceEntry) -> None:
    """Warn once that a call to ``model`` is billed from ``entry``, of a model past its
    shutdown: naming the model the entry prices too, when the call was sent as another
    (a deployment billed as its ``base_model``, a registered alias)."""
    billed = entry.key.rsplit("->", 1)[-1]
    named = repr(model) if billed in _names(model) else f"{billed!r} (which {model!r} is billed as)"
    with _lock:
        if named in _warned_retired:
            return
        _warned_retired.add(named)
    log.warning(
        "tracking: %s was shut down by its provider on %s; its answer is passed on as it is and "
        "the call is priced from the price history. Move to a live model (tracking prices list).",
        named,
        entry.shutdown,
    )


def _no_price(request: ImageEditRequest) -> str:
    """Why no entry prices ``request``: its model, or the base model it is priced as."""
    if request.base_model:
        return f"its base_model {request.base_model!r} names no known price"
    registered = [_custom.get(name) for name in _candidates(request)[0]]
    based = next((r.base_model for r in registered if r is not None and r.base_model), None)
    if based is not None:
        return f"it is registered priced as {based!r}, which names no known price"
    return "no price is known for this model"


def _warn_unpriced(model: str, why: str) -> None:
    with _lock:
        if model in _warned:
            return
        _warned.add(model)
    log.warning(
        "tracking: calls to %r are unpriced (%s); cost_usd is None. "
        "Add prices with tracking.register_prices(...) or `tracking prices import`.",
        model,
        why,
    )


from .estimate import estimate_call_cost, estimate_unknown_outcomes  # noqa: E402  (it uses Cost and find_entry above)
