"""Image-model prices from LiteLLM's ``model_prices_and_context_window.json``, in our format.

LiteLLM keeps one flat object keyed by model, with prices in USD per token or per image. Only the
image entries (``mode`` ``image_generation`` or ``image_edit``) are read, in three shapes:

* ``gpt-image-2`` (or ``azure/...``): token prices, ``input_cost_per_token`` (text input),
  ``input_cost_per_image_token``, ``output_cost_per_image_token``, ``output_cost_per_token``
  (text output) and the ``cache_read_input_token_cost`` / ``cache_read_input_image_token_cost``
  cached rates, all per token (we keep them per 1M tokens);
* ``low/1024-x-1024/gpt-image-1``: one quality and size of a model, priced per image. LiteLLM
  files the *output* image's price under the misleading name ``input_cost_per_image`` (some
  entries use ``output_cost_per_image``); either is read as the price of one output image;
* ``1024-x-1024/dall-e-2`` (optionally ``hd/...``): priced per pixel (``input_cost_per_pixel``),
  turned into a per-image price for that size;
* ``recraft/recraftv3`` (a model's name alone) with ``output_cost_per_image`` and no token
  price: one image of any size and quality, ``{"standard": {"any": ...}}`` as the packaged
  table prices such models (until 2026-12-07 it was dropped, and the import said "imported 0
  model(s)"). Beside token prices (LiteLLM's Gemini entries) the tokens bill the call and the
  per-image price is left out with a warning.

An image entry of none of these shapes, with no price the import reads, is named in a warning,
never dropped without a word.

Grounding with Google Search's fee (``search_context_cost_per_query``, its medium size, or
``web_search_cost_per_request``, with ``web_search_billing_unit``: ``per_query`` or
``per_prompt``) becomes the entry's ``tools.google_search``, per ``search_query`` or
``grounded_prompt``, as a deployment's ``model_info`` gives it
(:func:`~tracking.pricing.model_info.search_fee`). LiteLLM takes a missing unit as
``per_prompt``; the import never guesses what a fee is charged per: an entry with a fee and no
unit is imported without the fee, with a warning naming it (its grounded calls are then
recorded with the fee flagged as an estimate, ``+estimate:google_search-unpriced``, never at a
fee per the wrong unit), so one such entry of LiteLLM's whole map does not stop the import. An
unknown unit, or two keys of a model that give it different fees, is refused, naming them.

Every figure gets the file or URL it came from as ``source``, today as ``retrieved`` and
``confidence: secondary`` (a peer's catalogue, not the provider's page); a ``deprecation_date``
becomes the entry's ``shutdown``. Numbers go through their decimal text, never a float.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from ..decimals import strict_decimal
from ..errors import ConfigurationError
from .model_info import SEARCH_COST_KEY, SEARCH_FLAT_KEY, SEARCH_UNIT_KEY, search_fee
from .table import ANY, MIN_PRICE

__all__ = ["IMAGE_MODES", "from_litellm", "is_litellm_document"]

IMAGE_MODES = frozenset({"image_generation", "image_edit"})
#: LiteLLM per-token keys -> our token kinds.
_PER_TOKEN = {
    "input_cost_per_token": "input_text",
    "cache_read_input_token_cost": "cached_input_text",
    "input_cost_per_image_token": "input_image",
    "cache_read_input_image_token_cost": "cached_input_image",
    "output_cost_per_image_token": "output_image",
    "output_cost_per_token": "output_text",
}
#: Per-image keys, in the order tried: LiteLLM's ``input_cost_per_image`` holds the output price.
_PER_IMAGE = ("output_cost_per_image", "input_cost_per_image")
_MILLION = Decimal(1_000_000)
#: The smallest per-token or per-pixel figure other than 0 taken: a million of them are
#: ``MIN_PRICE``, the smallest price a file may give a unit.
_SMALLEST = MIN_PRICE / _MILLION
_DEFAULT_QUALITY = "standard"


def _is_image_entry(info: Any) -> bool:
    """An entry of LiteLLM's map with an image ``mode`` (one of another type is not: a list or
    an object there is no mode, never a ``TypeError``)."""
    if not isinstance(info, Mapping):
        return False
    mode = info.get("mode")
    return isinstance(mode, str) and mode in IMAGE_MODES


def is_litellm_document(data: Any) -> bool:
    """A LiteLLM price map: an object of objects, at least one with an image ``mode``."""
    return isinstance(data, Mapping) and any(_is_image_entry(v) for v in data.values())


def _amount(raw: Any, where: str) -> Decimal | None:
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float | str | Decimal):
        raise ConfigurationError(f"{where}: expected a number, got {type(raw).__name__}")
    try:
        value = strict_decimal(repr(raw) if isinstance(raw, float) else str(raw))
    except InvalidOperation:
        raise ConfigurationError(f"{where}: {raw!r} is not a number") from None
    if not value.is_finite() or value < 0:
        raise ConfigurationError(f"{where}: must be a finite, non-negative amount")
    if 0 < value < _SMALLEST:  # times a million (tokens, pixels) it would still be below
        raise ConfigurationError(
            f"{where}: {raw!r} is below the ${_SMALLEST} a price other than 0 may be per token "
            "or pixel"
        )
    return value


def _text(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return text if "." in text or text != "0" else "0"


def _parse_key(key: str) -> tuple[str, str | None, str | None]:
    """``model``, or ``[quality/]WxH/model`` -> (model, quality, size)."""
    parts = key.split("/")
    for index, part in enumerate(parts):
        width, sep, height = part.partition("-x-")
        if sep and width.isdigit() and height.isdigit() and index < len(parts) - 1:
            quality = "/".join(parts[:index]) or None
            return "/".join(parts[index + 1 :]), quality, f"{width}x{height}"
    return key, None, None


def _add_search_fee(
    entry: dict[str, Any],
    fee: Mapping[str, Any],
    figure: Callable[[Decimal], dict[str, str]],
    where: str,
) -> None:
    """``entry``'s ``tools.google_search`` from one LiteLLM key's fee (``per``, ``usd_per_1000``);
    a :class:`~tracking.errors.ConfigurationError` when another key of the model gave another."""
    given = figure(fee["usd_per_1000"])
    given["per"] = fee["per"]
    given["usd_per_1000"] = given.pop("usd")
    tools = entry.setdefault("tools", {})
    known = tools.get("google_search")
    if known is not None and (known["per"], known["usd_per_1000"]) != (
        given["per"],
        given["usd_per_1000"],
    ):
        raise ConfigurationError(
            f"{where}: its search fee ({given['usd_per_1000']} per 1000 {given['per']}) differs "
            f"from another entry of {entry['model']} ({known['usd_per_1000']} per 1000 "
            f"{known['per']})"
        )
    tools["google_search"] = given


def _fee_without_unit(info: Mapping[str, Any]) -> str | None:
    """The search fee key ``info`` gives with no ``web_search_billing_unit`` at all, if any."""
    if SEARCH_UNIT_KEY in info:
        return None
    return next((k for k in (SEARCH_COST_KEY, SEARCH_FLAT_KEY) if info.get(k) is not None), None)


def from_litellm(
    data: Mapping[str, Any], *, source: str, today: date, warnings: list[str] | None = None
) -> dict[str, Any]:
    """Our price document (schema 1) from the image entries of a LiteLLM price map; what was
    left out (a search fee with no unit) is described in ``warnings``."""
    retrieved = today.isoformat()
    entries: dict[str, dict[str, Any]] = {}

    def figure(value: Decimal) -> dict[str, str]:
        return {
            "usd": _text(value),
            "source": source,
            "retrieved": retrieved,
            "confidence": "secondary",
        }

    for key, info in data.items():
        if not _is_image_entry(info):
            continue
        where = f"{source}: {key}"
        model, quality, size = _parse_key(str(key))
        entry = entries.setdefault(
            model,
            {
                "model": model,
                "provider": info.get("litellm_provider"),
                "effective_from": None,
                "effective_to": None,
                "shutdown": None,
                "tokens_per_million": {},
                "per_image": {},
            },
        )
        deprecated = info.get("deprecation_date")
        if isinstance(deprecated, str) and entry["shutdown"] is None:
            entry["shutdown"] = {
                "date": deprecated,
                "source": source,
                "retrieved": retrieved,
                "confidence": "secondary",
            }
        unitless = _fee_without_unit(info)
        if unitless is not None:
            if warnings is not None:
                warnings.append(
                    f"{where}: {unitless} has no {SEARCH_UNIT_KEY} (per_query or per_prompt); "
                    "its search fee is not imported (grounded calls record it as an estimate)"
                )
            fee = None
        else:
            fee = search_fee(info, where)
        if fee is not None:
            _add_search_fee(entry, fee["google_search"], figure, where)
        if size is None:
            tokens = entry["tokens_per_million"]
            for litellm_key, kind in _PER_TOKEN.items():
                per_token = _amount(info.get(litellm_key), f"{where}.{litellm_key}")
                if per_token is not None:
                    tokens[kind] = figure(per_token * _MILLION)
            each = _amount(info.get(_PER_IMAGE[0]), f"{where}.{_PER_IMAGE[0]}") or None
            if each is not None and not tokens:
                # a model priced per image whatever its size (Recraft, Grok Imagine, FLUX...):
                # the packaged table's {"standard": {"any": ...}}
                entry["per_image"].setdefault(_DEFAULT_QUALITY, {})[ANY] = figure(each)
            elif each is not None and warnings is not None:
                warnings.append(
                    f"{where}: its per-image price is not imported beside its token prices "
                    "(the tokens bill its calls)"
                )
            continue
        each = next(
            (
                v
                for k in _PER_IMAGE
                if (v := _amount(info.get(k), f"{where}.{k}")) is not None and v > 0
            ),
            None,
        )
        if each is None:
            per_pixel = _amount(info.get("input_cost_per_pixel"), f"{where}.input_cost_per_pixel")
            if per_pixel is not None:
                width, _, height = size.partition("x")
                each = per_pixel * int(width) * int(height)
        if each is not None:
            tier = entry["per_image"].setdefault(quality or _DEFAULT_QUALITY, {})
            tier[size] = figure(each)
    priced = [e for e in entries.values() if e["tokens_per_million"] or e["per_image"]]
    if warnings is not None:
        warnings.extend(
            f"{source}: {model}: an image model with no price this import reads; not imported"
            for model, e in entries.items()
            if not (e["tokens_per_million"] or e["per_image"])
        )
    return {
        "schema": 1,
        "currency": "USD",
        "notes": f"Imported from LiteLLM's price map at {source} on {retrieved}.",
        "entries": priced,
    }
