"""The bounds every value a client sends must respect before it reaches storage or a counter.

One place for the proxy's edge limits (documented in ``docs/limits-and-safety.md``): identifiers
(end-user ids, key aliases, teams), money, counts and durations, and page numbers. Each check
returns the value or raises a 400 :class:`~tracking.proxy.errors.ProxyError` that names the
field and its limit, so no client value can make a database refuse a row (PostgreSQL's B-tree
entry limit, ``NUMERIC(20, 10)``, a 32-bit integer column, a NUL byte) or overflow a date.

End-user ids follow one rule everywhere (calls, blocks, budgets, customers, spend queries, the
ledger): :func:`end_user_id` keeps the exact text, never stripped or case-folded, so the id a
block or budget names is exactly the id the ledger records. Empty means "no end user" on a call.
"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from typing import Any

from ..decimals import MAX_BUDGET_PLACES, MAX_BUDGET_USD, budget_fault
from ..request import is_text
from .errors import ProxyError

__all__ = [
    "ACCEPTED_ENCODINGS",
    "MAX_BUDGET_PLACES",
    "MAX_BUDGET_USD",
    "MAX_ID_CHARS",
    "MAX_KEY_LIFETIME",
    "MAX_PAGE",
    "MAX_RPM_LIMIT",
    "bounded_int",
    "bounded_text",
    "end_user_id",
    "key_hash",
    "mebibytes",
    "money_limit",
    "refuse_encoded_body",
]

#: End-user ids, key aliases, teams and customer ids: characters at most. PostgreSQL refuses
#: an index entry above about 2,700 bytes; 256 characters of 4-byte UTF-8 stay well below.
MAX_ID_CHARS = 256
#: A key's ``rpm_limit`` at most (the column is a 32-bit integer).
MAX_RPM_LIMIT = 1_000_000
#: A key's ``duration`` / ``expires`` at most this far ahead.
MAX_KEY_LIFETIME = timedelta(days=3650)
#: ``/spend/logs``, ``/spend/keys`` and ``/key/list`` pages: the page number at most (page x
#: page size stays a small offset); a page past the last is an empty list.
MAX_PAGE = 100_000
#: The most rows a page or a list holds: ``page_size`` (``/spend/logs``, ``/spend/keys``),
#: ``size`` (``/key/list``) and ``limit`` (``/global/spend/*``).
MAX_PAGE_SIZE = 1000

# C0 controls (NUL included), DEL and the C1 controls: never part of an identifier.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
KEY_HASH = re.compile(r"[0-9a-fA-F]{64}")


def _bad(param: str, message: str) -> ProxyError:
    return ProxyError(400, f"{param}: {message}", param=param, code="invalid_value")


def bounded_text(value: str, param: str, *, limit: int = MAX_ID_CHARS) -> str:
    """``value`` if it has at most ``limit`` characters and no control character."""
    if len(value) > limit:
        raise _bad(param, f"at most {limit} characters (got {len(value)})")
    if _CONTROL.search(value):
        raise _bad(param, "control characters (NUL, newlines, tabs, ...) are not allowed")
    if not is_text(value):  # a JSON "\ud800" escape: no database or log takes it
        raise _bad(param, "not valid text (a lone UTF-16 surrogate)")
    return value


def end_user_id(value: Any, param: str = "user") -> str | None:
    """The end-user id as given (exact text, never stripped); None when absent or empty."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _bad(param, "expected a string")
    return bounded_text(value, param)


def key_hash(value: str | None, param: str = "key_hash") -> str | None:
    """A key's SHA-256 hex digest as a query names it; None when absent."""
    if not value:
        return None
    if not KEY_HASH.fullmatch(value):
        raise _bad(param, "expected a key's SHA-256 digest (64 hexadecimal characters)")
    return value.lower()


def secret_in_query(param: str, how: str) -> ProxyError:
    """The refusal of a key's secret given as the query parameter ``param`` (a URL ends up in
    access logs and proxies' histories); ``how`` says how to name the key instead. The value is
    never echoed."""
    return ProxyError(
        400,
        f"{param}: a key is never accepted in the query string{how}",
        param=param,
        code="secret_in_query_string",
    )


def bounded_int(value: int, param: str, *, low: int, high: int) -> int:
    if not low <= value <= high:
        raise _bad(param, f"must be between {low} and {high}")
    return value


def money_limit(amount: Decimal, param: str) -> Decimal:
    """A finite, non-negative budget of at most :data:`MAX_BUDGET_USD` with at most
    :data:`MAX_BUDGET_PLACES` decimal places."""
    fault = budget_fault(amount)
    if fault is not None:
        raise _bad(param, fault)
    return amount.copy_abs() if amount.is_zero() else amount  # -0 is 0


def query_int(query: dict[str, str], name: str, default: int, high: int) -> int:
    """A whole-number query parameter from 1 to ``high`` (``default`` when absent); a 400
    naming it otherwise (ASCII digits only, so "²" is refused, not a 500)."""
    raw = query.get(name)
    if raw is None:
        return default
    # ASCII digits only: "²".isdigit() is true, yet int("²") fails.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 12:
        raise ProxyError(
            400, f"{name}: expected an integer from 1 to {high}", param=name, code="invalid_value"
        )
    return bounded_int(int(raw), name, low=1, high=high)


def mebibytes(limit: int) -> str:
    """``limit`` bytes as the ``*_mb`` settings count them, in MiB (1,048,576 bytes):
    ``64 MiB``, the unit a 413's message names."""
    return f"{limit / (1024 * 1024):g} MiB"


#: The ``Content-Encoding`` a request body may come in: none, or ``identity`` (not encoded).
ACCEPTED_ENCODINGS = frozenset({"", "identity"})


def refuse_encoded_body(raw_headers: list[tuple[bytes, bytes]]) -> None:
    """Refuse (415 ``unsupported_content_encoding``) a request whose body is sent in a
    ``Content-Encoding`` (gzip, deflate, br, ...): the proxy reads bodies as they come, so an
    encoded one could only fail later as JSON or a form it is not, with a misleading message.
    OpenAI's clients never compress a request body. Only the header is read."""
    for name, value in raw_headers:
        if name != b"content-encoding":
            continue
        codings = [c.strip().lower() for c in value.decode("latin-1").split(",")]
        unsupported = [c for c in codings if c not in ACCEPTED_ENCODINGS]
        if unsupported:
            raise ProxyError(
                415,
                f"Content-Encoding {', '.join(unsupported)[:60]!r} is not "
                "supported: send the request body uncompressed (identity)",
                param="content-encoding",
                code="unsupported_content_encoding",
            )
