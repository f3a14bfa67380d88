"""The OpenAI-shaped response of an image edit.

:class:`ImageResponse` keeps the upstream's JSON object as it came and reads attributes from it,
so ``to_dict()`` / ``to_json()`` give back exactly what the upstream sent: no invented null
fields, nothing renamed. What the library adds (cost, our request id) lives beside it, never in it.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .decimals import strict_decimal
from .errors import APIResponseError
from .frozen import fast_init
from .images import encodes_image, encodes_image_or_svg

log = logging.getLogger("tracking")

__all__ = [
    "MAPS_TOOLS",
    "MAX_JSON_DEPTH",
    "MIN_REPORTED_USD",
    "ImageData",
    "ImageResponse",
    "NotJSON",
    "SearchGrounding",
    "UntrustedUsage",
    "Usage",
    "asks_google_maps",
    "asks_google_search",
    "check_b64_images",
    "plausible_charge",
    "reported_usage",
    "upstream_json",
    "usage_count",
]

#: The least one call's provider-reported charge (xAI's ``cost_in_usd_ticks``, Recraft's
#: ``credits``) is believed: a hundredth of a cent. The cheapest image these providers sell costs
#: $0.02 (xAI's grok-imagine-image; Recraft's raster images $0.04), so a call reported below a
#: two-hundredth of that is a fault, not a bill (``credits: 1e-20``, one tick): the provider's
#: charge is then ignored and the call priced from the table (a failure estimated), as one
#: reported above ``tracking.pricing.MAX_REPORTED_USD`` is, never booked at about $0.
MIN_REPORTED_USD = Decimal("0.0001")

#: How deep an upstream's JSON may nest. The answers read here nest under ten levels (Gemini's
#: ``candidates[0].content.parts[0].inlineData.data`` is the deepest); a body nested much deeper
#: is a fault or an attack: past about a thousand levels the parser raises ``RecursionError``,
#: and a few hundred are enough for ``copy.deepcopy`` (what callbacks receive) to raise it.
MAX_JSON_DEPTH = 64


class NotJSON(ValueError):
    """An upstream body that cannot be read as JSON (:func:`upstream_json`)."""


def upstream_json(body: bytes | str) -> Any:
    """An upstream's body read as JSON; :class:`NotJSON` (a ``ValueError``) when it is not JSON,
    not UTF-8, or nested deeper than :data:`MAX_JSON_DEPTH` (which the parser, past its depth,
    would raise as a ``RecursionError``: an exception that no caller expects and that the call
    flow takes for a fault of ours, recording a billed call as not billed). Every reader of an
    upstream's JSON goes through it."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise NotJSON("not JSON") from None
    too_deep, wide = _scan(value, MAX_JSON_DEPTH)
    if too_deep:
        raise NotJSON(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return _with_whole_text(value) if wide else value


def _with_whole_text(value: Any) -> Any:
    """``value`` with every lone UTF-16 surrogate in its strings, keys too, made U+FFFD (the
    parser keeps one from a ``"\\ud800"`` escape or from CESU-8 bytes). No UTF-8 writer takes
    one: left in an answer's ``quality`` or an error's message, it reached the event, where the
    billed call's ledger row was refused (set aside in quarantine, out of ``spend_logs``) and an
    OTLP exporter failed the whole batch of spans holding it. What holds none is returned as it
    is; ASCII strings (every image) are passed over in constant time. Depth is bounded by
    :data:`MAX_JSON_DEPTH`."""
    if isinstance(value, str):
        if value.isascii():
            return value
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        return value
    if isinstance(value, dict):
        pairs = [(_with_whole_text(k), _with_whole_text(v)) for k, v in value.items()]
        if all(k is k0 and v is v0 for (k, v), (k0, v0) in zip(pairs, value.items(), strict=True)):
            return value
        return dict(pairs)
    if isinstance(value, list):
        items = [_with_whole_text(item) for item in value]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    return value


_CONTAINERS = (dict, list)


def _scan(value: Any, limit: int) -> tuple[bool, bool]:
    """Whether ``value`` holds lists or objects more than ``limit`` levels deep, and whether any
    of its strings (keys too) is not ASCII, so may hold a lone surrogate (see
    :func:`_with_whole_text`, then run). One walk, level by level without recursion, in time
    proportional to its lists' and objects' entries, never to its strings' lengths
    (``str.isascii`` reads a flag); on every answer, so plain loops over a tuple of types."""
    if type(value) is str:
        return False, not value.isascii()
    level = [value] if isinstance(value, _CONTAINERS) else []
    depth = 0
    wide = False
    while level:
        depth += 1
        if depth > limit:
            return True, wide
        below = []
        for item in level:
            if type(item) is dict:
                for key, child in item.items():
                    if not key.isascii():
                        wide = True
                    if isinstance(child, _CONTAINERS):
                        below.append(child)
                    elif type(child) is str and not child.isascii():
                        wide = True
            else:
                for child in item:
                    if isinstance(child, _CONTAINERS):
                        below.append(child)
                    elif type(child) is str and not child.isascii():
                        wide = True
        level = below
    return False, wide


@dataclass(frozen=True, slots=True)
class ImageData:
    """One returned image: a URL (dall-e-2) or base64 data, and the revised prompt if any."""

    url: str | None = None
    b64_json: str | None = None
    revised_prompt: str | None = None

    def __repr__(self) -> str:
        b64 = f"<{len(self.b64_json)} base64 chars>" if self.b64_json else None
        return (
            f"ImageData(url={self.url!r}, b64_json={b64}, revised_prompt={self.revised_prompt!r})"
        )


@dataclass(frozen=True, slots=True)
class SearchGrounding:
    """Grounding with Google Search in one answer, as Google bills it: one grounded prompt (the
    request), and the search queries the model ran (Gemini's non-empty
    ``groundingMetadata.webSearchQueries``). ``reported=False``: the answer did not say (no
    readable ``groundingMetadata``), so ``queries`` is what the call is assumed to have run, and
    its fee an estimate."""

    queries: int
    reported: bool = True


#: The names of Grounding with Google Search in a Gemini request's ``tools`` (Google's JSON takes
#: the proto's snake_case as well as camelCase).
_SEARCH_TOOLS = ("googleSearch", "google_search")


#: The names of Grounding with Google Maps in a Gemini request's ``tools``.
MAPS_TOOLS = ("googleMaps", "google_maps")


def asks_google_search(extra_body: Any) -> bool:
    """Whether a call's ``extra_body`` asks for Grounding with Google Search (its ``tools`` hold
    ``googleSearch`` or ``google_search``, as Gemini's ``generateContent`` takes them)."""
    return _asks_tool(extra_body, _SEARCH_TOOLS)


def asks_google_maps(extra_body: Any) -> bool:
    """Whether a call's ``extra_body`` asks for Grounding with Google Maps (its ``tools`` hold
    ``googleMaps`` or ``google_maps``)."""
    return _asks_tool(extra_body, MAPS_TOOLS)


def _asks_tool(extra_body: Any, names: tuple[str, ...]) -> bool:
    tools = extra_body.get("tools") if isinstance(extra_body, Mapping) else None
    return isinstance(tools, list) and any(
        isinstance(tool, Mapping) and any(name in tool for name in names) for tool in tools
    )


@fast_init
@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage as GPT image models report it; zero where a field is absent."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    input_text_tokens: int = 0
    input_image_tokens: int = 0
    cached_input_tokens: int = 0
    cached_text_tokens: int = 0
    cached_image_tokens: int = 0
    output_image_tokens: int = 0
    output_text_tokens: int = 0
    #: the answer gave ``input_tokens`` without its text / image split (counted as text here;
    #: pricing takes the dearer input rate for a call that sent images)
    input_unsplit: bool = False

    @classmethod
    def from_json(cls, raw: Any) -> Usage | None:
        """The usage an answer reports; None when it has none or one that cannot be trusted
        (a details field that is not an object, a count that is not a whole number from 0 to
        :data:`MAX_TOKENS`, cached tokens above the input): the call is then priced by
        estimate, never from numbers that would bill it wrongly."""
        if not isinstance(raw, dict):
            return None
        try:
            details = _object(raw.get("input_tokens_details"))
            out_details = _object(raw.get("output_tokens_details"))
            cached = _object(details.get("cached_tokens_details"))
            input_tokens = usage_count(raw.get("input_tokens"))
            output_tokens = usage_count(raw.get("output_tokens"))
            text = usage_count(details.get("text_tokens"))
            image = usage_count(details.get("image_tokens"))
            unsplit = not text and not image and input_tokens > 0
            if unsplit:
                text = input_tokens
            else:  # tokens the split leaves out: the dearer kind (image), never under-billed
                image += _unaccounted(input_tokens, text + image)
            output_text = usage_count(out_details.get("text_tokens")) if out_details else 0
            output_image = (
                usage_count(out_details.get("image_tokens")) if out_details else output_tokens
            )
            output_image += _unaccounted(output_tokens, output_text + output_image)
            usage = cls(
                input_tokens=input_tokens,
                output_tokens=output_tokens,
                total_tokens=usage_count(raw.get("total_tokens")) or input_tokens + output_tokens,
                input_text_tokens=text,
                input_image_tokens=image,
                cached_input_tokens=usage_count(details.get("cached_tokens")),
                cached_text_tokens=usage_count(cached.get("text_tokens")),
                cached_image_tokens=usage_count(cached.get("image_tokens")),
                output_image_tokens=output_image,
                output_text_tokens=output_text,
                input_unsplit=unsplit,
            )
        except _Untrusted:
            return None
        if usage.cached_input_tokens > max(usage.input_tokens, text + image):
            return None
        return usage


#: Tokens one count may report: a hundred times the largest call an image model answers today
#: (ten 4K images); past it the count is a fault, not a bill.
MAX_TOKENS = 10_000_000


class UntrustedUsage(Exception):
    """A usage field that cannot be read as what it should be: the whole usage is then not
    trusted, and the call priced by estimate (a provider translating its own usage into
    OpenAI's, Gemini's ``usageMetadata``, raises it too)."""


_Untrusted = UntrustedUsage


def _unaccounted(total: int, split: int) -> int:
    """The tokens of ``total`` its details leave out; :class:`_Untrusted` when the details add
    up to more than a total reported (which of the two was billed cannot be known)."""
    if total and split > total:
        raise _Untrusted
    return total - split if total else 0


def _object(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _Untrusted
    return value


def usage_count(value: Any) -> int:
    """A token count: absent is 0; :class:`UntrustedUsage` unless a whole number (not a bool,
    not a float, not a string) from 0 to :data:`MAX_TOKENS`."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOKENS:
        raise _Untrusted
    return value


@dataclass(eq=False)
class ImageResponse:
    """An edit's result in the OpenAI shape, plus the cost and ids the library adds beside it."""

    raw: dict[str, Any]
    #: Our request id (``x-tracking-request-id`` in the proxy; the ledger's key).
    request_id: str = ""
    #: The cost of the call; None when the model is unpriced (never a silent 0).
    cost_usd: Decimal | None = None
    #: LiteLLM-compatible extras: ``response_cost`` (float), ``model``, ``provider``...
    _hidden_params: dict[str, Any] = field(default_factory=dict)
    #: The upstream's body as it came, when the response was read from bytes (``json_bytes``).
    _body: bytes | None = field(default=None, repr=False)
    #: The size key of the per-image price that applies when ``size`` is not it (a Gemini
    #: resolution tier such as ``"2K"``); set from the request the provider prepared.
    price_size: str | None = field(default=None, repr=False)
    #: The model whose prices apply when the provider served another than the one asked.
    price_model: str | None = field(default=None, repr=False)
    #: What the provider says it charged for the call (Recraft's ``credits``), in USD; when set
    #: it is the call's cost.
    billed_usd: Decimal | None = field(default=None, repr=False)
    #: The partial images a streamed call's upstream sent before its completed event (None: no
    #: stream, or not counted): an estimate of the call counts these, not the ones it asked for.
    partial_images_received: int | None = field(default=None, repr=False)
    #: Grounding with Google Search the call asked for (a Gemini ``google_search`` tool): what
    #: its fee is priced from, besides the tokens of its results in ``usage``; None: not asked.
    grounding: SearchGrounding | None = field(default=None, repr=False)

    @classmethod
    def from_json_bytes(
        cls, body: bytes, *, check_b64: bool = True, require_image: bool = True, svg: bool = False
    ) -> ImageResponse:
        """An OpenAI-shaped answer: a JSON object whose ``data`` list holds at least one item and
        whose items each hold an image, a ``b64_json`` that is base64 of one
        (:func:`check_b64_images`) or a ``url``; an :class:`~tracking.errors.APIResponseError`
        otherwise, carrying the usage the answer reported as what it billed
        (:func:`reported_usage`). An edit or a generation asks for at least one image, so an
        empty ``data`` is no success: nothing to hand on for what was billed.
        ``check_b64=False`` leaves the base64 check to the caller: a provider that first
        normalises ``b64_json`` (xAI's data URIs) or may answer a format the check does not know
        (Recraft's SVG); ``require_image=False`` leaves an empty ``data`` to the caller (xAI,
        whose answer then says why: a ``block_reason``). ``svg=True`` takes an SVG document as an
        image too (OpenAI's answers: the 2.6 models' ``output_format="svg"``)."""
        try:
            raw = upstream_json(body)
        except ValueError:
            raise APIResponseError("the upstream sent a body that is not JSON") from None
        try:
            if not isinstance(raw, dict) or not isinstance(raw.get("data"), list):
                raise APIResponseError("the upstream's JSON has no 'data' list")
            if require_image and not raw["data"]:
                raise APIResponseError("the upstream's answer has no image (an empty 'data' list)")
            for index, item in enumerate(raw["data"]):
                if not _has_image(item):  # null, 5, {"b64_json": 5}: no image to hand on
                    raise APIResponseError(
                        f"the upstream's data[{index}] holds no image (a b64_json or url string)"
                    )
            if check_b64 and svg:
                check_b64_images(raw["data"], encodes_image_or_svg, "PNG, JPEG, WebP, GIF or SVG")
            elif check_b64:
                check_b64_images(raw["data"])
        except APIResponseError as error:  # no usable image, but the tokens it reports are billed
            error.billed_usage = reported_usage(raw.get("usage") if isinstance(raw, dict) else None)
            raise
        return cls(raw=raw, _body=bytes(body))

    @property
    def created(self) -> int | None:
        value = self.raw.get("created")
        return value if isinstance(value, int) else None

    @property
    def data(self) -> list[ImageData]:
        return [
            ImageData(
                url=item.get("url"),
                b64_json=item.get("b64_json"),
                revised_prompt=item.get("revised_prompt"),
            )
            for item in self.raw.get("data", [])
            if isinstance(item, dict)
        ]

    @functools.cached_property
    def usage(self) -> Usage | None:
        # Parsed once: routing, pricing and the event all read it. Kept in the instance's
        # __dict__, never in ``raw``, so to_dict() stays exactly the upstream's JSON.
        return Usage.from_json(self.raw.get("usage"))

    @property
    def size(self) -> str | None:
        return _str_or_none(self.raw.get("size"))

    @property
    def quality(self) -> str | None:
        return _str_or_none(self.raw.get("quality"))

    @property
    def background(self) -> str | None:
        return _str_or_none(self.raw.get("background"))

    @property
    def output_format(self) -> str | None:
        return _str_or_none(self.raw.get("output_format"))

    @property
    def images_returned(self) -> int:
        return len(self.raw.get("data", []))

    def copy(self) -> ImageResponse:
        """An independent copy: changing it (its ``raw``, ``_hidden_params``) leaves this one as
        it is. What user callbacks receive. The body's bytes and the strings inside ``raw`` (the
        base64 images) are immutable and shared, not duplicated."""
        return dataclasses.replace(
            self, raw=copy.deepcopy(self.raw), _hidden_params=copy.deepcopy(self._hidden_params)
        )

    def to_dict(self) -> dict[str, Any]:
        """The upstream's JSON object, exactly (a deep copy)."""
        return copy.deepcopy(self.raw)

    model_dump = to_dict  # the name pydantic-based OpenAI objects use

    def to_json(self) -> str:
        return json.dumps(self.raw)

    def json_bytes(self) -> bytes:
        """The upstream's JSON as bytes: its body exactly as it came when there was one (the
        proxy passes it on without re-encoding several megabytes of base64), else ``to_json``."""
        return self._body if self._body is not None else self.to_json().encode()

    def __getitem__(self, key: str) -> Any:  # dict-style access, as LiteLLM responses allow
        return self.raw[key]

    def get(self, key: str, default: Any = None) -> Any:
        """``response.get("usage")``, as LiteLLM's responses allow (callbacks written for it
        read their ``response_obj`` so): the answer's field, else ``default``."""
        return self.raw.get(key, default)

    def __contains__(self, key: object) -> bool:  # ``"usage" in response``, as LiteLLM's
        return key in self.raw

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ImageResponse):
            return self.raw == other.raw
        return NotImplemented

    def __repr__(self) -> str:
        return (
            f"ImageResponse(created={self.created}, images={self.images_returned}, "
            f"size={self.size!r}, quality={self.quality!r}, cost_usd={self.cost_usd}, "
            f"request_id={self.request_id!r})"
        )


def reported_usage(raw: Any) -> Usage | None:
    """The ``usage`` field (``raw``) of a 2xx answer without a usable image, as what the
    upstream billed for the call (:attr:`~tracking.errors.APIError.billed_usage`, which pricing
    takes as its cost); None when there is none, none that can be trusted
    (:meth:`Usage.from_json`), or no tokens at all: the call is then priced by estimate."""
    usage = Usage.from_json(raw)
    return usage if usage is not None and usage.total_tokens > 0 else None


def reported_charge(amount: object, units_per_usd: Decimal, provider: str) -> Decimal | None:
    """What an answer says a call was charged (``amount`` of the provider's units: Recraft's
    ``credits``, BFL's ``cost``) in USD; None when absent, not a plain positive amount (a bool,
    an object, NaN), or not plausible (:func:`plausible_charge`)."""
    if isinstance(amount, bool) or not isinstance(amount, int | float | str):
        return None
    try:
        units = strict_decimal(str(amount))
    except ArithmeticError:
        return None
    if not units.is_finite() or units <= 0:
        return None
    return plausible_charge(units, units_per_usd, provider)


def plausible_charge(units: Decimal, units_per_usd: Decimal, provider: str) -> Decimal | None:
    """A provider-reported charge for one call (``units`` of the provider's, ``units_per_usd``
    to the dollar) in USD, or None (with a warning) when it is below :data:`MIN_REPORTED_USD`
    (too small to be a bill) or past what the decimal context can hold (``"1e999999999"``,
    whose division overflowed out of the parser as a fault of ours and lost a good answer's
    images): the call is then priced as if the answer had reported none."""
    try:
        usd = units / units_per_usd
    except ArithmeticError:  # decimal.Overflow, or Underflow: no bill has such an exponent
        log.warning(
            "tracking: %s reported a charge of %s units for a call, past any bill; the call is "
            "priced from the price table",
            provider,
            f"{units:.3E}",
        )
        return None
    if usd < MIN_REPORTED_USD:
        log.warning(
            "tracking: %s reported a charge of $%s for a call, below the $%s believed; the call "
            "is priced from the price table",
            provider,
            f"{usd:.3E}",
            MIN_REPORTED_USD,
        )
        return None
    return usd


def check_b64_images(
    data: list[Any],
    accepts: Callable[[str], bool] = encodes_image,
    formats: str = "PNG, JPEG, WebP or GIF",
) -> None:
    """Refuse an answer whose ``data[i].b64_json`` is not base64 of an image (text, HTML, an
    error page where the image should be) with an :class:`~tracking.errors.APIResponseError`
    naming the item, the check Gemini's inline images get (:func:`tracking.images.encodes_image`:
    only the first characters are decoded, so a megabytes-long image costs the same as a tiny
    one). Items without a ``b64_json`` string are left alone. ``accepts`` is the check
    (a provider answering other formats passes its own, named in ``formats``)."""
    for index, item in enumerate(data):
        encoded = item.get("b64_json") if isinstance(item, dict) else None
        if isinstance(encoded, str) and encoded and not accepts(encoded):
            raise APIResponseError(
                f"the upstream's data[{index}].b64_json is not base64 of an image ({formats})"
            )


def _has_image(item: Any) -> bool:
    """Whether an answer's ``data`` item carries an image: a non-empty ``b64_json`` or ``url``."""
    if not isinstance(item, dict):
        return False
    return any(isinstance(item.get(k), str) and item[k] for k in ("b64_json", "url"))


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None
