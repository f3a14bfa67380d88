"""Who is calling: the proxy's auth step, run before any byte of the body is read.

:class:`Authenticator` turns the request's key (``Authorization: Bearer ...``, or ``api-key`` /
``x-api-key``) into a :class:`Principal`. Today it knows the master key; virtual keys (hashed,
with allowed models and budgets) plug in as further :class:`KeyCheck` objects consulted after the
master key, without changing the app. Without a master key and without checks the proxy is open
and every caller is the anonymous principal. Keys are compared in constant time and never
appear in a message.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal, Protocol

from .errors import ProxyError

__all__ = [
    "OPEN",
    "Authenticator",
    "KeyCheck",
    "Principal",
    "bearer_token",
    "header_text",
    "header_values",
]


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller as far as the proxy knows it."""

    kind: Literal["open", "master", "virtual"]
    #: The virtual key's hash (the ledger's ``api_key_hash``); None for master and open.
    key_hash: str | None = None
    key_alias: str | None = None
    team: str | None = None
    #: Model names the key may call; None means every model.
    models: frozenset[str] | None = None
    #: The virtual key's requests-per-minute limit, shared by every instance (None: no limit).
    rpm_limit: int | None = None
    #: The virtual key's total budget in USD (None: no budget).
    max_budget_usd: Decimal | None = None
    #: The hashes the virtual key had before it was regenerated, oldest first.
    prior_key_hashes: tuple[str, ...] = ()
    #: When the virtual key's record last changed (None: unknown, or not a virtual key): its
    #: budget counter seeded before that starts again (:mod:`.budgets`).
    updated_at: datetime | None = None

    @property
    def spend_key_hashes(self) -> tuple[str, ...]:
        """Every hash the ledger's rows may name this key by (none for master and open)."""
        own = (self.key_hash,) if self.key_hash is not None else ()
        return (*self.prior_key_hashes, *own)

    @property
    def budget_key(self) -> str | None:
        """The key's lasting name for its budget counter: its first hash, kept across
        regenerations (None for master and open)."""
        return self.prior_key_hashes[0] if self.prior_key_hashes else self.key_hash

    def may_call(self, model: str) -> bool:
        return self.models is None or model in self.models


OPEN = Principal("open")
MASTER = Principal("master")


class KeyCheck(Protocol):
    """A further way to accept a key (virtual keys); None means "not mine"."""

    async def check(self, token: str) -> Principal | None: ...


#: The headers a key may come in; one repeated with different values is an ambiguous credential.
_CREDENTIAL_HEADERS = (b"authorization", b"api-key", b"x-api-key")
#: Set by :func:`request_headers` on an ambiguous credential (no header name holds a NUL).
_AMBIGUOUS = "\x00ambiguous-credential"


#: Prefixes the name of a header sent more than once with different values, in the dict of
#: :func:`request_headers`: its values, one a line (no header value holds a line break).
_REPEATED = "\x00repeated:"


def request_headers(scope: Mapping[str, Any]) -> dict[str, str]:
    """The request's headers as a dict (ASGI's names, lower-cased; the last value of a repeated
    header wins), marked when a credential header came twice with different values: a front
    proxy appending its own ``Authorization`` would otherwise see the caller's win or lose by
    the order of the lines. :meth:`Authenticator.authenticate` refuses such a request. Another
    header sent more than once with different values keeps them all, for
    :func:`header_values`."""
    raw = scope["headers"]
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in raw}
    if len(headers) < len(raw):  # some header repeated (rare): with different values?
        seen: dict[bytes, list[bytes]] = {}
        for name, value in raw:
            seen.setdefault(name, []).append(value)
        for name, values in seen.items():
            if len(set(values)) < 2:
                continue
            if name in _CREDENTIAL_HEADERS:
                headers[_AMBIGUOUS] = name.decode("latin-1")
            else:
                kept = "\n".join(value.decode("latin-1") for value in values)
                headers[_REPEATED + name.decode("latin-1")] = kept
    return headers


def header_values(headers: Mapping[str, str], name: str) -> list[str]:
    """Every value the request sent for the header ``name`` (lower-case), in order: one, or
    none, unless it came more than once with different values (see :func:`request_headers`)."""
    repeated = headers.get(_REPEATED + name)
    if repeated is not None:
        return repeated.split("\n")
    value = headers.get(name)
    return [] if value is None else [value]


def header_text(value: str | None) -> str | None:
    """A header value :func:`request_headers` holds (ISO-8859-1, as ASGI decodes it) as the text
    its client meant: UTF-8 when its bytes are UTF-8, as curl and most clients send non-ASCII
    text, else ISO-8859-1's characters (one byte each, as Node's fetch sends them). So an end
    user ``josé`` named by a header is the end user ``josé`` of a body's ``user`` and of
    ``/customer/new``, not ``josÃ©`` (until 2026-12-07 it was: billed and budgeted apart)."""
    if value is None or value.isascii():
        return value
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:  # not UTF-8 (or not from request_headers): ISO-8859-1's reading
        return value


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The caller's key from the headers OpenAI-style clients use."""
    authorization = headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("api-key") or headers.get("x-api-key") or None


class Authenticator:
    def __init__(self, master_key: str | None, checks: Sequence[KeyCheck] = ()) -> None:
        self._master = master_key.encode() if master_key else None
        self._checks = tuple(checks)

    @property
    def open(self) -> bool:
        return self._master is None and not self._checks

    async def authenticate(self, headers: Mapping[str, str]) -> Principal:
        if self.open:
            return OPEN
        repeated = headers.get(_AMBIGUOUS)
        if repeated is not None:
            raise ProxyError(
                401,
                f"{repeated}: given more than once with different keys; send one",
                code="invalid_api_key",
                reason="auth",
            )
        token = bearer_token(headers)
        if not token:
            raise ProxyError(
                401,
                "missing API key: send 'Authorization: Bearer <key>'",
                code="missing_api_key",
                reason="auth",
            )
        if self._master is not None and hmac.compare_digest(token.encode(), self._master):
            return MASTER
        for check in self._checks:
            principal = await check.check(token)
            if principal is not None:
                return principal
        raise ProxyError(401, "invalid API key", code="invalid_api_key", reason="auth")
