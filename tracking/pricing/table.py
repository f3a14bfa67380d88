"""Price entries and the schema-checked loader of the packaged price file (``prices.json``).

The file is data, not code: one entry per model (a provider prefix in ``model`` where prices
differ by provider) with token prices per 1M tokens, per-image prices by quality and size, the
window the prices apply in (``effective_from`` / ``effective_to``, either may be null) and the
model's ``shutdown`` date. Every figure carries the ``source`` it was read from and the date it
was ``retrieved``; a figure without them is a schema error, so an unverified price cannot ship.
Prices are strings in the file and :class:`~decimal.Decimal` in memory: never floats.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from importlib import resources
from pathlib import Path
from typing import Any

from ..bounded_read import read_at_most
from ..decimals import WrittenFloat, strict_decimal
from ..errors import ConfigurationError

__all__ = [
    "ANY",
    "AUTO",
    "CONFIDENCE",
    "DEFAULT_PARAMETERS",
    "TOKEN_KINDS",
    "TOOLS",
    "TOOL_FEE_UNITS",
    "PriceEntry",
    "ToolFee",
    "check_per_image_key",
    "load_packaged",
    "load_price_file",
    "parse_price_data",
    "per_image_price",
    "to_price",
    "tool_fees",
]

#: A ``per_image`` quality or size that prices any other: ``{"any": {"any": "0.02"}}`` is one
#: price per image whatever its size and quality; a quality's own size wins over it.
ANY = "any"
#: The size or quality a call leaves to the upstream. It is never a ``per_image`` key: a call is
#: billed at the size and quality its answer reports (:func:`tracking.pricing.price_call`), so a
#: price for ``auto`` would bill nothing; :func:`per_image_price` of an ``auto`` call is the
#: dearest price the table gives, the most it may be billed.
AUTO = "auto"

#: Token categories a price may be given for (USD per 1M tokens).
TOKEN_KINDS = (
    "input_text",
    "cached_input_text",
    "input_image",
    "cached_input_image",
    "output_image",
    "output_text",
)
#: Server-side tools a fee may be given for, besides the tokens their results count: Grounding
#: with Google Search (Gemini's ``google_search`` tool).
TOOLS = ("google_search",)
#: What a tool's fee is charged per: each search query the answer reports the model ran
#: (Gemini 3), or each grounded prompt, one per request (Gemini 2.5).
TOOL_FEE_UNITS = ("search_query", "grounded_prompt")
#: How sure a figure is, strongest first: the provider's own page, a reputable third party's,
#: or no page stating the figure itself (inferred, its entry's notes say from what).
CONFIDENCE = ("official", "secondary", "unconfirmed")
_ENTRY_KEYS = frozenset(
    {
        "model",
        "aliases",
        "provider",
        "effective_from",
        "effective_to",
        "shutdown",
        "tokens_per_million",
        "per_image",
        "per_megapixel",
        "notes",
        "operations",
        "tools",
        "defaults",
    }
)
#: The parameters an entry's ``defaults`` may give: what the provider documents a call that
#: leaves them out is made (and billed) at.
DEFAULT_PARAMETERS = ("size", "quality")
#: The operations an entry's ``operations`` may name.
OPERATION_NAMES = ("image_edit", "image_generation")


@dataclass(frozen=True, slots=True)
class ToolFee:
    """A server-side tool's fee: ``usd`` for each ``per`` (one of :data:`TOOL_FEE_UNITS`). The
    file states it as Google's pages do, ``usd_per_1000``; it is kept per use, exactly."""

    per: str
    usd: Decimal


@dataclass(frozen=True, slots=True)
class PriceEntry:
    """The prices of one model over one window of time."""

    key: str  #: the model name the entry is filed under
    tokens: Mapping[str, Decimal] = field(default_factory=dict)  #: USD per 1M tokens, by kind
    per_image: Mapping[str, Mapping[str, Decimal]] = field(default_factory=dict)  #: quality->size
    effective_from: date | None = None
    effective_to: date | None = None  #: the last day the prices apply
    shutdown: date | None = None
    custom: bool = False  #: registered by the user rather than shipped
    provider: str | None = None
    #: the weakest confidence of the entry's figures (None: the user's own, registered prices)
    confidence: str | None = None
    #: the page the output price (else the first figure) was read from
    source: str | None = None
    aliases: tuple[str, ...] = ()
    #: where the entry came from: ``packaged``, ``override`` (a prices file) or ``custom``
    origin: str = "packaged"
    #: the operations the source page says the prices bill (each with its source in the file);
    #: a record only: billing never reads it, and every entry prices every operation
    operations: frozenset[str] = frozenset()
    #: fees of server-side tools (:data:`TOOLS`) by tool: charged per use, besides the tokens
    tools: Mapping[str, ToolFee] = field(default_factory=dict)
    #: USD per megapixel (:mod:`tracking.pricing.megapixels`): ``first_output``, ``output``,
    #: ``input``; empty for a model not billed by the megapixel
    per_megapixel: Mapping[str, Decimal] = field(default_factory=dict)
    #: what the provider documents a call that leaves a parameter out is made at, by parameter
    #: (:data:`DEFAULT_PARAMETERS`): dall-e-2's ``size`` is ``1024x1024``. A call that names no
    #: size is billed at it, from the table, not estimated.
    defaults: Mapping[str, str] = field(default_factory=dict)

    def covers(self, day: date) -> bool:
        if self.effective_from is not None and day < self.effective_from:
            return False
        return self.effective_to is None or day <= self.effective_to

    def figures(self) -> dict[str, Decimal]:
        """Every price of the entry by a flat name: ``tokens.KIND``, ``per_image.QUALITY.SIZE``."""
        flat = {f"tokens.{kind}": price for kind, price in self.tokens.items()}
        for quality, sizes in self.per_image.items():
            flat.update({f"per_image.{quality}.{size}": price for size, price in sizes.items()})
        flat.update({f"tools.{tool}": fee.usd for tool, fee in self.tools.items()})
        flat.update({f"per_megapixel.{kind}": p for kind, p in self.per_megapixel.items()})
        return flat

    @property
    def ref(self) -> str:
        """Which entry priced a call, for the event's ``price_ref``."""
        origin = "custom" if self.custom else self.origin
        since = f"@{self.effective_from.isoformat()}" if self.effective_from else ""
        sure = f"#{self.confidence}" if self.confidence else ""
        return f"{origin}:{self.key}{since}{sure}"

    def retired_on(self, day: date) -> bool:
        """Whether the model is past its shutdown date on ``day``."""
        return self.shutdown is not None and day >= self.shutdown


def load_packaged() -> dict[str, list[PriceEntry]]:
    """The price file shipped inside the package, checked against the schema."""
    text = resources.files(__package__).joinpath("prices.json").read_text(encoding="utf-8")
    return parse_price_data(json.loads(text), origin="tracking/pricing/prices.json")


def load_price_file(path: str | Path, *, kind: str = "override") -> dict[str, list[PriceEntry]]:
    """A price file in the packaged format (JSON), checked against the schema."""
    try:
        raw = read_at_most(Path(path), MAX_PRICE_FILE_BYTES)
        if raw is None:
            raise ConfigurationError(
                f"price file {path}: larger than {MAX_PRICE_FILE_BYTES:,} bytes"
            )
        data = json.loads(raw.decode("utf-8"), parse_float=Decimal)
    except (OSError, ValueError, RecursionError) as exc:
        raise ConfigurationError(f"price file {path}: cannot read it as JSON ({exc})") from None
    return parse_price_data(data, origin=str(path), kind=kind)


def parse_price_data(
    data: Any, *, origin: str, kind: str = "packaged"
) -> dict[str, list[PriceEntry]]:
    """Validate a whole price document; entries grouped by model key."""
    if not isinstance(data, dict):
        raise ConfigurationError(f"price file {origin}: expected a JSON object")
    if data.get("schema") != 1:
        raise ConfigurationError(f"price file {origin}: 'schema' must be 1")
    if data.get("currency") != "USD":
        raise ConfigurationError(f"price file {origin}: 'currency' must be 'USD'")
    entries = data.get("entries")
    if not isinstance(entries, list):
        raise ConfigurationError(f"price file {origin}: 'entries' must be a list")
    table: dict[str, list[PriceEntry]] = {}
    for index, raw in enumerate(entries):
        entry = _entry(raw, f"price file {origin}: entries[{index}]", kind)
        for name in (entry.key, *entry.aliases):
            table.setdefault(name, []).append(entry)
    return table


def _entry(raw: Any, where: str, origin: str) -> PriceEntry:
    if not isinstance(raw, dict):
        raise ConfigurationError(f"{where}: expected an object")
    unknown = set(raw) - _ENTRY_KEYS
    if unknown:
        raise ConfigurationError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    model = raw.get("model")
    if not isinstance(model, str) or not model:
        raise ConfigurationError(f"{where}.model: a non-empty string is required")
    where = f"{where} ({model})"
    for required in ("effective_from", "effective_to", "shutdown"):
        if required not in raw:
            raise ConfigurationError(f"{where}: '{required}' is required (null when unknown)")
    aliases = raw.get("aliases") or []
    if not isinstance(aliases, list) or not all(isinstance(a, str) and a for a in aliases):
        raise ConfigurationError(f"{where}.aliases: expected a list of model names")
    provider = raw.get("provider")
    if provider is not None and not isinstance(provider, str):
        raise ConfigurationError(f"{where}.provider: expected a string")
    shutdown = raw["shutdown"]
    if shutdown is not None:
        if not isinstance(shutdown, dict):
            raise ConfigurationError(f"{where}.shutdown: expected null or an object")
        _provenance(shutdown, f"{where}.shutdown")
    provenance: list[tuple[str, dict[str, Any]]] = []  # (kind of figure, its raw object)
    tokens_raw = raw.get("tokens_per_million") or {}
    if not isinstance(tokens_raw, dict):
        raise ConfigurationError(f"{where}.tokens_per_million: expected an object")
    tokens: dict[str, Decimal] = {}
    for kind, figure in tokens_raw.items():
        if kind not in TOKEN_KINDS:
            raise ConfigurationError(
                f"{where}.tokens_per_million.{kind}: unknown; known: {', '.join(TOKEN_KINDS)}"
            )
        tokens[kind] = _figure(figure, f"{where}.tokens_per_million.{kind}")
        provenance.append((kind, figure))
    per_image_raw = raw.get("per_image") or {}
    if not isinstance(per_image_raw, dict):
        raise ConfigurationError(f"{where}.per_image: expected an object")
    per_image: dict[str, dict[str, Decimal]] = {}
    for quality, sizes in per_image_raw.items():
        if not isinstance(sizes, dict) or not sizes:
            raise ConfigurationError(f"{where}.per_image.{quality}: expected size -> figure")
        check_per_image_key(quality, f"{where}.per_image.{quality}")
        per_image[quality] = {
            size: _figure(figure, check_per_image_key(size, f"{where}.per_image.{quality}.{size}"))
            for size, figure in sizes.items()
        }
        provenance.extend(("per_image", figure) for figure in sizes.values())
    per_megapixel = per_megapixel_prices(raw.get("per_megapixel"), f"{where}.per_megapixel")
    provenance.extend(("per_megapixel", f) for f in (raw.get("per_megapixel") or {}).values())
    if not tokens and not per_image and not per_megapixel:
        raise ConfigurationError(
            f"{where}: needs tokens_per_million, per_image or per_megapixel prices"
        )
    tools = _tools(raw.get("tools"), f"{where}.tools")
    provenance.extend(("tools", figure) for figure in (raw.get("tools") or {}).values())
    operations = _operations(raw.get("operations"), f"{where}.operations")
    defaults = _defaults(raw.get("defaults"), f"{where}.defaults", per_image)
    effective_from = _date(raw["effective_from"], f"{where}.effective_from", optional=True)
    effective_to = _date(raw["effective_to"], f"{where}.effective_to", optional=True)
    if effective_from and effective_to and effective_to < effective_from:
        raise ConfigurationError(f"{where}: effective_to is before effective_from")
    weakest = max(CONFIDENCE.index(figure["confidence"]) for _, figure in provenance)
    main = next((f for k, f in provenance if k == "output_image"), provenance[0][1])
    return PriceEntry(
        key=model,
        tokens=tokens,
        per_image=per_image,
        effective_from=effective_from,
        effective_to=effective_to,
        shutdown=_date(shutdown["date"], f"{where}.shutdown.date") if shutdown else None,
        provider=provider,
        confidence=CONFIDENCE[weakest],
        source=main["source"],
        aliases=tuple(aliases),
        origin=origin,
        operations=operations,
        tools=tools,
        per_megapixel=per_megapixel,
        defaults=defaults,
    )


def _defaults(
    raw: Any, where: str, per_image: Mapping[str, Mapping[str, Decimal]]
) -> dict[str, str]:
    """``{"size": {"value": "1024x1024", source, retrieved, confidence}}``: the value the
    provider documents for a parameter a call leaves out, with the page it was read from; each
    one a size (or quality) the entry's ``per_image`` table prices, so a call made at it is
    billed from the table."""
    defaults: dict[str, str] = {}
    for name, figure in _sourced(raw, where, DEFAULT_PARAMETERS, "parameter", "value, ").items():
        value = figure.get("value")
        priced = set(per_image) if name == "quality" else {s for t in per_image.values() for s in t}
        if not isinstance(value, str) or value not in priced:
            known = ", ".join(sorted(priced)) or "none: no per_image prices"
            raise ConfigurationError(
                f"{where}.{name}.value: a {name} the entry's per_image prices ({known})"
            )
        defaults[name] = value
    return defaults


def per_megapixel_prices(
    raw: Any, where: str, read: Callable[[Any, str], Decimal] | None = None
) -> dict[str, Decimal]:
    """An entry's ``per_megapixel`` (none: empty): each of
    :data:`~tracking.pricing.megapixels.PER_MEGAPIXEL_KINDS` read by ``read``: a price file's
    figure with its page (the default), or ``register_prices``' price (:func:`to_price`)."""
    from .megapixels import PER_MEGAPIXEL_KINDS

    if raw is None:
        return {}
    what = "a figure" if read is None else "a price"
    if not isinstance(raw, Mapping) or set(raw) != set(PER_MEGAPIXEL_KINDS):
        raise ConfigurationError(
            f"{where}: expected exactly {', '.join(PER_MEGAPIXEL_KINDS)}, each {what}"
        )
    read = read or _figure
    return {kind: read(raw[kind], f"{where}.{kind}") for kind in PER_MEGAPIXEL_KINDS}


def check_per_image_key(name: Any, where: str) -> str:
    """``where``, when ``name`` may be a ``per_image`` quality or size; :data:`AUTO` is refused
    (a :class:`~tracking.errors.ConfigurationError`): no call is billed at it."""
    if name == AUTO:
        raise ConfigurationError(
            f"{where}: 'auto' is not a size or quality a call is billed at (it is billed at the "
            "one its answer reports): price those, or 'any' for every one not named"
        )
    return where


def _tools(raw: Any, where: str) -> dict[str, ToolFee]:
    """A price file entry's ``tools`` (none: empty): :func:`tool_fees`, each with its page."""
    return {} if raw is None else tool_fees(raw, where, from_file=True)


def tool_fees(raw: Any, where: str, *, from_file: bool = False) -> dict[str, ToolFee]:
    """``{"google_search": {"per": "search_query", "usd_per_1000": "14"}}``: the fee of each
    server-side tool, per :data:`TOOL_FEE_UNITS` use, ``usd_per_1000`` a price
    (:func:`to_price`). ``from_file``: a price file's, which also gives each fee's ``source``,
    ``retrieved`` and ``confidence`` and writes its amount as a decimal string;
    ``register_prices``' otherwise (those two keys alone, an amount as any price)."""
    shape = (
        "{per, usd_per_1000, source, retrieved, confidence}" if from_file else "{per, usd_per_1000}"
    )
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigurationError(f"{where}: expected tool -> {shape}")
    fees: dict[str, ToolFee] = {}
    for tool, figure in raw.items():
        if tool not in TOOLS:
            raise ConfigurationError(f"{where}.{tool}: unknown; known: {', '.join(TOOLS)}")
        if not isinstance(figure, Mapping) or (
            not from_file and set(figure) != {"per", "usd_per_1000"}
        ):
            raise ConfigurationError(f"{where}.{tool}: expected {shape}")
        if from_file:
            _provenance(dict(figure), f"{where}.{tool}")
        per = figure.get("per")
        if per not in TOOL_FEE_UNITS:
            raise ConfigurationError(f"{where}.{tool}.per: one of {', '.join(TOOL_FEE_UNITS)}")
        usd = figure.get("usd_per_1000")
        if from_file and not isinstance(usd, str):
            raise ConfigurationError(
                f'{where}.{tool}.usd_per_1000: must be a decimal string, e.g. "14.00"'
            )
        fees[tool] = ToolFee(per, to_price(usd, f"{where}.{tool}.usd_per_1000") / 1000)
    return fees


def _operations(raw: Any, where: str) -> frozenset[str]:
    """``{"image_generation": {source, retrieved, confidence}, ...}``: the operations the
    page says these prices bill, each with the page it was read from (checked and kept as a
    record; pricing does not read it)."""
    return frozenset(_sourced(raw, where, OPERATION_NAMES, "operation", ""))


def _sourced(
    raw: Any, where: str, names: tuple[str, ...], kind: str, fields: str
) -> dict[str, dict[str, Any]]:
    """An entry's ``{name: {fields..., source, retrieved, confidence}}`` object (None: empty),
    each name one of ``names`` and each value an object with the page it was read from."""
    if raw is None:
        return {}
    shape = f"{{{fields}source, retrieved, confidence}}"
    if not isinstance(raw, dict) or not raw:
        raise ConfigurationError(f"{where}: expected {kind} -> {shape}")
    for name, figure in raw.items():
        if name not in names:
            raise ConfigurationError(f"{where}.{name}: one of {', '.join(names)}")
        if not isinstance(figure, dict):
            raise ConfigurationError(f"{where}.{name}: expected {shape}")
        _provenance(figure, f"{where}.{name}")
    return raw


def _figure(raw: Any, where: str) -> Decimal:
    if not isinstance(raw, dict):
        raise ConfigurationError(f"{where}: expected {{usd, source, retrieved, confidence}}")
    _provenance(raw, where)
    usd = raw.get("usd")
    if not isinstance(usd, str):  # a JSON number would pass through float on the way in
        raise ConfigurationError(f'{where}.usd: must be a decimal string, e.g. "0.011"')
    return to_price(usd, f"{where}.usd")


def _provenance(raw: dict[str, Any], where: str) -> None:
    source = raw.get("source")
    if not isinstance(source, str) or not source.startswith(("https://", "http://", "file://")):
        raise ConfigurationError(f"{where}: 'source' must be the URL the figure was read from")
    _date(raw.get("retrieved"), f"{where}.retrieved")
    if raw.get("confidence") not in CONFIDENCE:
        raise ConfigurationError(
            f"{where}: 'confidence' must be one of {', '.join(CONFIDENCE)} "
            "(official: the provider's own page)"
        )


def _date(raw: Any, where: str, *, optional: bool = False) -> date | None:
    if raw is None and optional:
        return None
    if not isinstance(raw, str):
        raise ConfigurationError(f"{where}: expected an ISO date (YYYY-MM-DD)")
    try:
        return date.fromisoformat(raw)
    except ValueError:
        raise ConfigurationError(f"{where}: {raw!r} is not an ISO date (YYYY-MM-DD)") from None


#: The dearest price a file may give one unit (an image, a million tokens): a million dollars,
#: beyond any image model's price by far. A larger figure is a typo or an attack, and would
#: price a call past what the ledger records (its rows stop below $1e10).
#: The most a price file may hold (the packaged table is a few hundred KB).
MAX_PRICE_FILE_BYTES = 64 * 1024 * 1024
MAX_PRICE = Decimal(1_000_000)
#: The cheapest a price other than 0 may be per unit: a nano-nano-dollar. Below it a figure is a
#: typo or an attack whose arithmetic can underflow to a free model ($0 recorded for billed
#: calls); a free model's price is 0.
MIN_PRICE = Decimal("1E-18")


def to_price(raw: Any, where: str) -> Decimal:
    """A Decimal from 0 to :data:`MAX_PRICE` from a str, int, float or Decimal, read as written
    (:func:`~tracking.decimals.written_decimal`: a config's ``0.0000000123456789012345`` is that
    amount, not the nearest float; digits grouped with ``_`` are refused: ``"1_0"`` is not
    obviously 10)."""
    if isinstance(raw, bool):
        raise ConfigurationError(f"{where}: expected a price, got {raw!r}")
    if isinstance(raw, WrittenFloat):
        raw = raw.text
    elif isinstance(raw, float):
        raw = repr(raw)
    if not isinstance(raw, str | int | Decimal):
        raise ConfigurationError(f"{where}: expected a price, got {type(raw).__name__}")
    try:
        value = strict_decimal(raw)
    except InvalidOperation:
        raise ConfigurationError(f"{where}: {raw!r} is not a number") from None
    if not value.is_finite() or value < 0:
        raise ConfigurationError(f"{where}: must be a finite, non-negative amount")
    if value > MAX_PRICE:
        raise ConfigurationError(
            f"{where}: {str(raw)!r} is above the ${MAX_PRICE:,} a price may be"
        )
    if 0 < value < MIN_PRICE:
        raise ConfigurationError(
            f"{where}: {str(raw)!r} is below the ${MIN_PRICE} a price other than 0 may be"
        )
    return value


def per_image_price(
    per_image: Mapping[str, Mapping[str, Decimal]], size: str | None, quality: str | None
) -> Decimal | None:
    """The price of one image of ``size`` at ``quality`` in a ``per_image`` table (quality ->
    size -> USD); None when none applies. Billing (:func:`tracking.pricing.price_call`) and the
    router's ``cost-based-routing`` both read a table through it, so a call is ranked at what it
    is billed: the quality's own tier, then the tier for any quality (:data:`ANY`), and in each
    the size's own price, then the one for any size. A table of one tier (dall-e-2's, or a
    ``model_info`` naming one quality) prices every quality: quality is not billed there. An
    :data:`AUTO` size or quality (what a call asks, never what it is billed at: the answer
    reports the size and quality made) takes the dearest price the table gives any of the
    sizes or qualities it names, the most the call may be billed."""
    if size == AUTO or quality == AUTO:  # what the call asks; the answer says what is billed
        named = {name for tier in per_image.values() for name in tier} - {AUTO}
        qualities = set(per_image) - {AUTO}
        size_names: list[str | None] = [*sorted(named)] if size == AUTO else [size]
        quality_names: list[str | None] = [*sorted(qualities)] if quality == AUTO else [quality]
        prices = [
            price
            for each_size in size_names
            for each_quality in quality_names
            if (price := per_image_price(per_image, each_size, each_quality)) is not None
        ]
        return max(prices, default=None)
    if len(per_image) == 1:
        tiers = list(per_image.values())
    else:
        tiers = [per_image.get(quality or "", {}), per_image.get(ANY, {})]
    for sizes in tiers:
        price = sizes.get(size or "")
        if price is None:
            price = sizes.get(ANY)
        if price is not None:
            return price
    return None
