"""The proxy's operator-facing output: one access log line per request and a start-up summary.

Each request logs one INFO line on the ``tracking.proxy.access`` logger in logfmt
(``key=value`` pairs, values quoted when they hold spaces): method, path, status, our request
id, the caller's kind and key alias, the model, the cost and the latency. The same fields ride on
the record as ``extra={"access": {...}}`` for JSON formatters. Nothing secret is ever written: no
key, no header, no query string (it may carry a key), no end-user text.

The start-up summary (``tracking.proxy`` logger, INFO) names the models served, where the ledger
lives (for the default SQLite file, its absolute path, and whether it is about to be created),
whether auth is on, and which variables ``environment_variables`` exported (names only).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..config import ProxyConfig
    from .json_io import Send

__all__ = ["ACCESS_SCOPE_KEY", "AccessEntry", "logfmt", "startup_summary"]

access_log = logging.getLogger("tracking.proxy.access")
log = logging.getLogger("tracking.proxy")

#: Where a request's :class:`AccessEntry` lives in its ASGI scope, for handlers to annotate.
ACCESS_SCOPE_KEY = "tracking.access"
_MAX_VALUE = 120  # a model name chosen by a caller must not make a huge line


def _quote(value: Any) -> str:
    text = str(value)[:_MAX_VALUE]
    if text and text.isprintable() and not any(c in text for c in ' "='):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    if not escaped.isprintable():  # a NUL, ESC or CR from a caller must not reach a terminal
        escaped = "".join(c if c.isprintable() else _escape(c) for c in escaped)
    return f'"{escaped}"'


def _escape(char: str) -> str:
    known = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(char)
    return known or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")


def logfmt(fields: Iterable[tuple[str, Any]]) -> str:
    """``name=value`` pairs, skipping None values."""
    return " ".join(f"{name}={_quote(value)}" for name, value in fields if value is not None)


@dataclass(slots=True)
class AccessEntry:
    """What one request's log line says; handlers fill ``principal`` and ``model``."""

    method: str
    path: str
    started: float = field(default_factory=time.perf_counter)
    status: int | None = None
    request_id: str | None = None
    cost: str | None = None
    caller: str | None = None
    key_alias: str | None = None
    model: str | None = None

    @classmethod
    def begin(cls, scope: MutableMapping[str, Any]) -> AccessEntry:
        entry = cls(str(scope.get("method", "")), str(scope.get("path", "")))
        scope[ACCESS_SCOPE_KEY] = entry
        return entry

    def watch(self, send: Send) -> Send:
        """``send`` that notes the status and our id and cost headers on the way out."""

        async def watched(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.status = int(message["status"])
                for name, value in message.get("headers", ()):
                    if name == b"x-tracking-request-id":
                        self.request_id = value.decode("latin-1")
                    elif name == b"x-tracking-response-cost":
                        self.cost = value.decode("latin-1")
            await send(message)

        return watched

    def emit(self) -> None:
        if not access_log.isEnabledFor(logging.INFO):
            return
        latency_ms = round((time.perf_counter() - self.started) * 1000, 1)
        fields = {
            "method": self.method,
            "path": self.path,
            "status": self.status if self.status is not None else "disconnected",
            "request_id": self.request_id,
            "caller": self.caller,
            "key_alias": self.key_alias,
            "model": self.model,
            "cost_usd": self.cost,
            "latency_ms": latency_ms,
        }
        access_log.info(logfmt(fields.items()), extra={"access": fields})


def _ledger_place(config: ProxyConfig) -> str:
    from .ledger import ledger_url

    url = ledger_url(config)
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///")).resolve()
        state = "exists" if path.exists() else "will be created on first use"
        return f"SQLite file {path} ({state})"
    from tracking.integrations.sql import resolve_url

    # Never the URL itself: it may embed a user and a password. An unreadable one (from
    # TRACKING_DATABASE_URL: the config's own is checked when it is read) is a one-line error.
    parsed = resolve_url(url)
    where = f"{parsed.host}:{parsed.port}" if parsed.port else str(parsed.host)
    return f"{parsed.get_backend_name()} database {parsed.database!r} on {where}"


def startup_summary(
    config: ProxyConfig, exported: Iterable[str], *, listening: str | None = None
) -> list[str]:
    """The lines the proxy logs as it starts (and returns, for tests); ``listening``, where
    clients reach it (with the port as bound: ``--port 0`` shows the one chosen)."""
    models = config.model_names()
    deployments = len(config.model_list)
    auth = (
        "on (master key and virtual keys)"
        if config.general_settings.master_key
        else "OFF: no master_key, anyone who can reach this proxy can call it"
    )
    lines = [
        f"models: {', '.join(models) or '(none)'} ({deployments} deployment(s))",
        f"ledger: {_ledger_place(config)}",
        f"auth: {auth}",
    ]
    names = list(exported)
    if names:
        lines.append(f"environment_variables exported: {', '.join(names)}")
    if listening is not None:
        lines.insert(0, f"listening: {listening}")
    if config.source is not None:
        lines.insert(0, f"config: {config.source.resolve()} (pid {os.getpid()})")
    for line in lines:
        log.info("%s", line)
    return lines
