"""Small JSON request and response helpers for the proxy's management endpoints.

The key, customer and spend endpoints take a JSON body (bounded: they are small documents) or a
query string, and answer JSON. Parsing faults are OpenAI-shaped 400s naming the field.
:func:`load_json_object` is the one strict reading of a JSON request body, for these endpoints
and for ``/images/generations`` alike: a key given twice, ``NaN`` / ``Infinity`` and nesting past
the parser's depth are refused, never silently resolved (last key wins) or a 500, and so is a
lone UTF-16 surrogate in any key or string (no upstream, database or log takes one).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl

from ..decimals import WrittenFloat, written_decimal
from ..request import is_text
from .errors import ProxyError
from .form import read_body
from .limits import MAX_ID_CHARS, bounded_int, bounded_text, money_limit

__all__ = [
    "DATE_RANGE",
    "Receive",
    "Scope",
    "Send",
    "WrittenFloat",
    "date_window",
    "known_fields",
    "load_json_object",
    "one_value",
    "optional_date",
    "optional_int",
    "optional_money",
    "optional_str",
    "query_of",
    "read_json",
    "send_json",
    "utc_datetime",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_MAX_JSON_BYTES = 64 * 1024
#: Bounds of the numbers the management endpoints store: past them a value is a mistake, and a
#: database integer or NUMERIC column cannot hold it.
MAX_INT = 1_000_000_000
MAX_USD = Decimal(1_000_000_000)
#: Why a well-formed datetime is refused: in UTC it falls outside the years 1 to 9999.
DATE_RANGE = "outside the dates this proxy can store (years 1 to 9999 in UTC)"


def query_of(
    scope: Scope, known: frozenset[str], what: str, hints: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The query string's parameters. One ``what`` does not take is a 400 naming it, as
    :func:`known_fields` does for a body: a LiteLLM filter this proxy does not implement
    (``/spend/logs?user_id=``, LiteLLM's internal user) must not be dropped without a word, or
    the answer is every row's, read as the filtered ones'; ``hints`` says, for such a name, what
    to use instead. So is a parameter given twice (``?user=a&user=b``), rather than one of them
    silently winning."""
    raw = scope.get("query_string", b"").decode("latin-1")
    pairs = parse_qsl(raw, keep_blank_values=False)
    for name, _ in pairs:
        if hints and name in hints and name not in known:
            raise ProxyError(
                400,
                f"{what} does not take {name!r}: {hints[name]}",
                param=name,
                code="unsupported_field",
            )
    known_fields(dict(pairs), known, what)
    query: dict[str, str] = {}
    for name, value in pairs:
        if name in query:
            raise _bad(name, "given more than once")
        query[name] = value
    return query


class _Constant:
    """A ``NaN`` / ``Infinity`` / ``-Infinity`` in a body, refused by the object holding it."""

    def __init__(self, name: str) -> None:
        self.name = name


class _Fault:
    """An object found wrong while parsing, standing in for it until the body's top level
    names the fault by its whole path (``metadata.a``: an inner object cannot know its key)."""

    def __init__(self, path: str, message: str, code: str) -> None:
        self.path, self.message, self.code = path, message, code


def _fault_in(value: Any) -> _Fault | None:
    """What is wrong with a value (its lists included; objects checked their own values), its
    path below the value: a constant that is not a JSON number, a string no UTF-8 request can
    carry (a lone surrogate, as a ``"\\ud800"`` escape decodes), or an object found wrong."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, _Fault):
            return item
        if isinstance(item, _Constant):
            return _Fault("", f"{item.name} is not a JSON number", "invalid_json")
        if isinstance(item, str) and not is_text(item):
            return _Fault("", "not valid text (a lone UTF-16 surrogate)", "invalid_value")
        if isinstance(item, list):
            pending.extend(item)
    return None


def _strict_object(pairs: list[tuple[str, Any]]) -> dict[str, Any] | _Fault:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            return _Fault(key, "given more than once", "invalid_json")
        fault = _fault_in(value) or _fault_in(key)
        if fault is not None:
            return _Fault(f"{key}.{fault.path}" if fault.path else key, fault.message, fault.code)
        result[key] = value
    return result


def load_json_object(body: bytes, *, written_floats: bool = False) -> dict[str, Any]:
    """``body`` as a JSON object, read strictly: not JSON, not an object, a key given twice,
    ``NaN`` or ``Infinity``, or nesting deeper than the parser goes is a 400 (``invalid_json``,
    naming the key where there is one); so is a lone surrogate in a key or string
    (``invalid_value``). With ``written_floats`` a number with a fraction or an exponent is a
    :class:`WrittenFloat`, which keeps its text."""
    try:
        document = json.loads(
            body,
            object_pairs_hook=_strict_object,
            parse_constant=_Constant,
            parse_float=WrittenFloat if written_floats else None,
        )
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ProxyError(400, "the request body is not valid JSON", code="invalid_json") from None
    if isinstance(document, _Fault):
        path = document.path
        raise ProxyError(400, f"{path}: {document.message}", param=path, code=document.code)
    if not isinstance(document, dict):
        raise ProxyError(400, "the request body must be a JSON object", code="invalid_json")
    return document


async def read_json(receive: Receive, within: float | None = None) -> dict[str, Any]:
    """The request body as a JSON object, read by :func:`load_json_object` (an empty body is
    ``{}``); a 408 when it has not all arrived ``within`` seconds
    (``general_settings.request_read_timeout``), as for the image endpoints."""
    body = await read_body(receive, _MAX_JSON_BYTES, within, too_big=_too_large)
    if not body.strip():
        return {}
    return load_json_object(body, written_floats=True)  # amounts read from their text


def _too_large(limit: int) -> ProxyError:
    return ProxyError(
        413, "request body too large for this endpoint (64 KB)", code="request_too_large"
    )


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return f"{value:f}"
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(type(value).__name__)


async def send_json(send: Send, status: int, document: Any) -> None:
    body = json.dumps(document, default=_default).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _bad(param: str, message: str) -> ProxyError:
    return ProxyError(400, f"{param}: {message}", param=param, code="invalid_value")


def known_fields(document: Mapping[str, Any], known: frozenset[str], what: str) -> None:
    """A 400 naming every field of ``document`` that ``what`` does not take: a LiteLLM field this
    proxy does not implement (``tpm_limit``, ``budget_duration``, a chosen ``key``...) must not be
    dropped without a word, least of all a limit the caller believes is now in force."""
    unknown = sorted(set(document) - known)
    if unknown:
        raise ProxyError(
            400,
            f"{what} does not take {', '.join(map(repr, unknown))} (it takes "
            f"{', '.join(sorted(known))}; docs/migrating-from-litellm.md lists what is served)",
            param=unknown[0],
            code="unsupported_field",
        )


def optional_str(
    document: Mapping[str, Any], name: str, *, limit: int = MAX_ID_CHARS
) -> str | None:
    """A non-empty string (surrounding spaces removed) of at most ``limit`` characters, without
    control characters."""
    value = document.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise _bad(name, "expected a non-empty string")
    return bounded_text(value.strip(), name, limit=limit)


def optional_int(
    document: Mapping[str, Any], name: str, *, low: int = 0, high: int = MAX_INT
) -> int | None:
    value = document.get(name)
    if value is None:
        return None
    if isinstance(value, str) and value.isascii() and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(name, "expected an integer")
    return bounded_int(value, name, low=low, high=high)


def one_value(document: Mapping[str, Any], name: str, other: str) -> None:
    """A 400 when a field given under both its names (ours and LiteLLM's: ``team`` and
    ``team_id``, ``user_id`` and ``end_user_id``) has two values: neither is dropped without a
    word (until 2026-12-07 one was, and which differed between routes)."""
    if name in document and other in document and document[name] != document[other]:
        raise _bad(other, f"another value than {name} (two names of one field); give one of them")


def optional_money(document: Mapping[str, Any], name: str) -> Decimal | None:
    """A non-negative USD amount given as a number or a decimal string."""
    value = document.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _bad(name, "expected an amount in USD")
    try:
        amount = written_decimal(value if isinstance(value, WrittenFloat) else str(value))
    except InvalidOperation:
        raise _bad(name, "expected an amount in USD") from None
    return money_limit(amount, name)


def optional_date(query: Mapping[str, str], name: str) -> datetime | None:
    """``YYYY-MM-DD`` (UTC midnight) or an ISO-8601 datetime (UTC if it names no offset)."""
    value = query.get(name)
    if not value:
        return None
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), datetime.min.time(), tzinfo=UTC)
        return utc_datetime(value)
    except ValueError:
        raise _bad(name, "expected a date (YYYY-MM-DD) or an ISO-8601 datetime") from None
    except OverflowError:
        raise _bad(name, DATE_RANGE) from None


def date_window(
    query: Mapping[str, str], *, whole_end_day: bool = False
) -> tuple[datetime | None, datetime | None]:
    """``start_date`` and ``end_date`` (:func:`optional_date`); a start after the end is a 400
    naming ``start_date``, not an empty answer that reads as "nothing was spent". With
    ``whole_end_day``, an ``end_date`` given as a date (``YYYY-MM-DD``) covers that whole day
    (the window ends at the next midnight, UTC), as LiteLLM's routes that sum spend per day
    read it; a datetime is the window's end as given, on every route."""
    start, end = optional_date(query, "start_date"), optional_date(query, "end_date")
    whole_day = whole_end_day and end is not None and _is_date(query["end_date"])
    if whole_day:
        assert end is not None
        try:
            end += timedelta(days=1)
        except OverflowError:
            raise _bad("end_date", DATE_RANGE) from None
    # compared once the end is where the window ends: a start later on a whole end day is in
    # it (until 2026-12-07, start_date=D T10:00 with end_date=D was a 400 "after end_date")
    if start is not None and end is not None and (start >= end if whole_day else start > end):
        raise _bad("start_date", "after end_date; swap them")
    return start, end


def _is_date(value: str) -> bool:
    """Whether ``value`` is an ISO-8601 date without a time (``2026-12-07``, ``20261207``)."""
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def utc_datetime(value: str) -> datetime:
    """An ISO-8601 datetime in UTC (UTC if it names no offset). Raises ``ValueError`` when it
    is not one, ``OverflowError`` when its UTC time is outside the years 1 to 9999."""
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
