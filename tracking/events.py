"""``ImageEditEvent``: the one immutable record of a call that every integration receives.

Exactly one event is made per call, success or failure (docs/architecture.md).
``to_dict()`` is JSON-safe: Decimals become strings, datetimes ISO-8601 UTC strings, tuples lists.
Its ``metadata`` is read-only all the way down (:func:`freeze_metadata`, made once per call from
the caller's dict), so no callback or integration can change what the others see, nor the
caller's own dict.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Literal

from .frozen import fast_init

__all__ = [
    "MAX_METADATA_SIZE",
    "NO_METADATA",
    "CallStatus",
    "CostSource",
    "ImageEditEvent",
    "MetadataTooLarge",
    "TokenUsage",
    "freeze_metadata",
    "thaw_metadata",
]

CallStatus = Literal["success", "failure"]
CostSource = Literal["usage", "table", "custom", "estimate", "unpriced"]

#: Metadata of a call that had none (one shared, read-only, empty mapping).
NO_METADATA: Mapping[str, Any] = MappingProxyType({})
#: Values kept as they are when metadata is frozen: immutable already.
_IMMUTABLE = frozenset({str, int, float, bool, type(None), Decimal, datetime, bytes})


#: Caller metadata nested deeper than this is refused: a container that holds itself never ends,
#: and a deep one would overflow the stack here or in every encoder after.
MAX_METADATA_DEPTH = 32
#: Caller metadata larger than this is refused: it is kept whole in the event, every callback's
#: copy and the ledger row. The size is counted while freezing, about as its JSON would be:
#: the characters of each text and the bytes of each bytes value (keys included), plus 1 for
#: every key, value and container (a number, None, a list...).
MAX_METADATA_SIZE = 64 * 1024
#: An integer longer than this (about 3,900 digits) is refused: Python will not write one over
#: 4,300 digits as text, so no encoder (JSON, the ledger's row) could record it.
_MAX_INT_BITS = 13_000


class MetadataTooLarge(ValueError):
    """Caller metadata larger than :data:`MAX_METADATA_SIZE`."""


def freeze_metadata(
    value: Mapping[str, Any] | Iterable[tuple[str, Any]] | None,
) -> Mapping[str, Any]:
    """A read-only copy of caller metadata, all the way down: mappings become
    ``MappingProxyType``, lists and tuples tuples, sets frozensets. Plain values are immutable
    already; other objects are kept as they are (nothing general copies them safely). A
    ``ValueError`` when containers nest deeper than :data:`MAX_METADATA_DEPTH`, and a
    :class:`MetadataTooLarge` when it is larger than :data:`MAX_METADATA_SIZE`."""
    if not value:
        return NO_METADATA
    mapping = value if type(value) is dict or isinstance(value, Mapping) else dict(value)
    frozen: Mapping[str, Any] = _freeze(mapping, MAX_METADATA_DEPTH, [0])
    return frozen


def _freeze(value: Any, depth: int, size: list[int]) -> Any:
    """``value`` frozen; ``size[0]`` grows by its size, checked at the end of each container
    (whose copy holds no more than the caller's own). Plain values are handled inline in the
    loops, without a call each: this runs on every call with metadata."""
    kind = type(value)
    if kind is str or kind is bytes:
        size[0] += len(value) + 1
        return value
    if kind in _IMMUTABLE:
        if kind is int and value.bit_length() > _MAX_INT_BITS:
            _too_long(value)
        size[0] += 1
        return value
    if depth <= 0 and isinstance(value, Mapping | list | tuple):
        raise ValueError(
            f"nested deeper than {MAX_METADATA_DEPTH} levels (or a container that holds itself)"
        )
    if kind is dict or isinstance(value, Mapping):  # a dict skips the slower ABC check
        counted = 1 + 2 * len(value)  # the mapping, then 1 for each key and each value
        frozen = {}
        for key, item in value.items():
            if type(key) is str:
                counted += len(key)
            else:  # counted only: a key is hashable, kept as it is
                _freeze(key, depth - 1, size)
            kind = type(item)
            if kind is str or kind is bytes:
                counted += len(item)
            elif kind is int or kind not in _IMMUTABLE:
                item = _member(item, depth - 1, size)
            frozen[key] = item
        size[0] += counted
        _check_size(size)
        return MappingProxyType(frozen)
    if kind is list or isinstance(value, list | tuple):
        counted = 1 + len(value)
        items = []
        for item in value:
            kind = type(item)
            if kind is str or kind is bytes:
                counted += len(item)
            elif kind is int or kind not in _IMMUTABLE:
                item = _member(item, depth - 1, size)
            items.append(item)
        size[0] += counted
        _check_size(size)
        return tuple(items)
    size[0] += 1
    if isinstance(value, set | frozenset):
        for member in value:  # counted only: members are hashable, in practice immutable
            _freeze(member, depth - 1, size)
        _check_size(size)
        return frozenset(value)
    if isinstance(value, str | bytes | bytearray):  # a subclass (a StrEnum), a bytearray
        size[0] += len(value)
    return value


def _member(item: Any, depth: int, size: list[int]) -> Any:
    """A container's member that is not text, frozen: an int checked that it can be written,
    anything else not immutable frozen (its size counted)."""
    if type(item) is int:
        if item.bit_length() > _MAX_INT_BITS:
            _too_long(item)
        return item
    return _freeze(item, depth, size)


def _too_long(value: int) -> None:
    raise MetadataTooLarge(
        f"holds an integer of {value.bit_length():,} bits, more than about 3,900 digits: no "
        "record can be written of it; keep it elsewhere, or as text"
    )


def _check_size(size: list[int]) -> None:
    if size[0] > MAX_METADATA_SIZE:
        raise MetadataTooLarge(
            f"larger than {MAX_METADATA_SIZE:,} characters (64 KiB), counted about as its "
            "JSON; keep large data elsewhere and put a reference to it in metadata"
        )


def thaw_metadata(value: Mapping[str, Any]) -> dict[str, Any]:
    """A fresh mutable copy of frozen metadata in the shapes callers pass (dicts and lists), for
    LiteLLM-style callbacks, which may change their copy freely."""
    thawed: dict[str, Any] = _thaw(value)
    return thawed


def _thaw(value: Any) -> Any:
    if type(value) in _IMMUTABLE:
        return value
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    if isinstance(value, frozenset):
        return set(value)
    return value


@fast_init
@dataclass(frozen=True, slots=True)
class TokenUsage:
    """The usage tokens the upstream reported for the call."""

    input_text_tokens: int = 0
    input_image_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class ImageEditEvent:
    """Who, what, how much, how long and how it ended, for one image call (an edit or a
    generation: :attr:`call_type` and :attr:`operation` say which)."""

    # identity
    request_id: str
    #: the operation, ``a``-prefixed for async callers (:attr:`operation` without it)
    call_type: Literal["image_edit", "aimage_edit", "image_generation", "aimage_generation"]
    status: CallStatus
    upstream_request_id: str | None = None
    # who
    end_user: str | None = None
    api_key_hash: str | None = None
    key_alias: str | None = None
    team: str | None = None
    tags: tuple[str, ...] = ()
    #: The caller's metadata, read-only all the way down (:func:`freeze_metadata`).
    metadata: Mapping[str, Any] = field(default_factory=lambda: NO_METADATA)
    # what
    model: str = ""
    model_group: str | None = None
    resolved_model: str | None = None
    provider: str | None = None
    deployment_id: str | None = None
    #: The model the call is priced as, when it named one: its ``base_model`` (a router
    #: deployment's ``model_info.base_model``, or the name its own prices are registered under)
    base_model: str | None = None
    api_base: str | None = None  #: host[:port] only, never a credential
    server_port: int | None = None  #: the upstream's port (its scheme's default if not named)
    #: The images asked for (1 when a call refused before parsing asked for no valid ``n``)
    n: int = 1
    size: str | None = None
    quality: str | None = None
    background: str | None = None
    output_format: str | None = None
    response_format: str | None = None
    input_images: int = 0
    input_bytes: int = 0
    has_mask: bool = False
    has_markup: bool = False  #: the call sent a ``markup`` image (GPT Image 2.5 and 2.6)
    prompt_chars: int = 0
    # result
    images_returned: int = 0
    usage: TokenUsage | None = None
    # money
    cost_usd: Decimal | None = None
    cost_per_image_usd: Decimal | None = None
    cost_source: CostSource = "unpriced"
    price_ref: str | None = None
    # time
    start_time: datetime
    end_time: datetime
    latency_ms: float = 0.0
    upstream_latency_ms: float | None = None
    #: A streamed call's time from its start to the first image event (partial or final).
    time_to_first_image_ms: float | None = None
    # path
    attempts: int = 0
    retries: int = 0
    fallback_from: tuple[str, ...] = ()
    # failure
    error_type: str | None = None
    http_status: int | None = None
    error_message: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of every field."""
        out = {}
        for name in _EVENT_FIELDS:
            value = getattr(self, name)
            out[name] = value if type(value) in _PLAIN else _json_safe(value)
        return out

    @property
    def operation(self) -> Literal["image_edit", "image_generation"]:
        """What the call did: ``image_edit`` or ``image_generation`` (the metrics' label)."""
        return "image_generation" if self.call_type.endswith("generation") else "image_edit"

    @property
    def fallback_chain(self) -> tuple[str, ...]:
        """The model groups a fallen-back call went through, in order: those that failed
        (:attr:`fallback_from`), then the one that served or last failed; empty without one."""
        if not self.fallback_from:
            return ()
        return (*self.fallback_from, self.model_group or self.model)

    def replace(self, **changes: Any) -> ImageEditEvent:
        return dataclasses.replace(self, **changes)


#: The event's field names, in order (``dataclasses.fields`` rebuilds its tuple on every call).
_EVENT_FIELDS = tuple(f.name for f in dataclasses.fields(ImageEditEvent))
_USAGE_FIELDS = tuple(f.name for f in dataclasses.fields(TokenUsage))
#: Values that are JSON as they are (exact types: a subclass, say an IntEnum, goes the long way).
_PLAIN = frozenset({str, int, float, bool, type(None)})


def _json_safe(value: Any) -> Any:
    # The event's own kinds first, by their exact type: the general tests below cost an
    # empty tuple 6,400 instructions and empty metadata 12,400 (its ``Mapping`` test is an ABC's).
    kind = type(value)
    if kind is datetime:
        return value.isoformat()
    if kind is Decimal:
        return str(value)
    if kind is tuple:  # tags, the fallback chain, a list in metadata
        return [v if type(v) in _PLAIN else _json_safe(v) for v in value] if value else []
    if kind is MappingProxyType:  # metadata
        if not value:
            return {}
        return {str(k): v if type(v) in _PLAIN else _json_safe(v) for k, v in value.items()}
    if kind is TokenUsage:
        return {name: getattr(value, name) for name in _USAGE_FIELDS}
    return _json_safe_value(value)


def _json_safe_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, TokenUsage):  # plain ints: no deep copy (dataclasses.asdict) needed
        return {name: getattr(value, name) for name in _USAGE_FIELDS}
    if isinstance(value, tuple | list | set | frozenset):
        return [_json_safe(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
