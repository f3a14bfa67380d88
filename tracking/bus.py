"""Delivery of each call's event to integrations and user callbacks.

Receivers come from three plain lists in :mod:`tracking`: ``success_callback``,
``failure_callback`` and ``callbacks``. Each call takes a snapshot of them (``tuple(...)``), so
changing the lists while calls are in flight is safe and costs no lock.

An entry is either a built-in integration name (``"prometheus"``, ``"otel"``, ``"sql"``,
``"structlog"``), resolved lazily to one shared instance, or an object implementing the
:class:`~tracking.integration.Integration` protocol. Built-in integrations receive success and
failure events whichever list names them, each exactly once per call.
"""

from __future__ import annotations

import importlib
import logging
import threading
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError
from .integration import Integration

if TYPE_CHECKING:
    from .events import ImageEditEvent
    from .integration import CallStart
    from .response import ImageResponse

__all__ = [
    "BUILTIN_INTEGRATIONS",
    "dispatch_start",
    "emit_async",
    "emit_sync",
    "integrations",
    "resolve",
]

log = logging.getLogger("tracking")

#: Built-in names -> "module:class"; imported on first use so unused integrations cost nothing.
BUILTIN_INTEGRATIONS: dict[str, str] = {
    "prometheus": "integrations.prometheus:PrometheusLogger",
    "otel": "integrations.otel:OtelLogger",
    "sql": "integrations.sql:SqlLedger",
    "structlog": "integrations.structlog:StructlogLogger",
}
_INSTANCES: dict[str, Integration] = {}
_LOCK = threading.Lock()


def resolve(entry: Any) -> Integration | None:
    """The integration an entry names or is; None for entries that are not integrations."""
    if isinstance(entry, str):
        instance = _INSTANCES.get(entry)
        if instance is None:
            with _LOCK:
                instance = _INSTANCES.get(entry) or _load(entry)
                _INSTANCES[entry] = instance
        return instance
    if isinstance(entry, Integration):
        return entry
    return None


def _load(name: str) -> Integration:
    target = BUILTIN_INTEGRATIONS.get(name)
    if target is None:
        known = ", ".join(sorted(BUILTIN_INTEGRATIONS))
        raise ConfigurationError(f"unknown callback {name!r}; built-in integrations: {known}")
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            f"callback {name!r} needs {exc.name!r}, which is not installed "
            f"(pip install 'image-edit-tracking[{name}]')"
        ) from None
    instance: Integration = getattr(module, attribute)()
    return instance


def integrations() -> tuple[Integration, ...]:
    """The distinct integrations named in the three lists right now, in order."""
    import tracking

    seen: dict[int, Integration] = {}
    for entry in (*tracking.success_callback, *tracking.failure_callback, *tracking.callbacks):
        integration = resolve(entry)
        if integration is not None:
            seen.setdefault(id(integration), integration)
    return tuple(seen.values())


def dispatch_start(call: CallStart) -> None:
    """Run every integration's cheap ``on_start`` hook; never raises."""
    for integration in integrations():
        try:
            integration.on_start(call)
        except Exception:
            log.exception("integration %r failed in on_start", integration)


def _dispatch_end(event: ImageEditEvent) -> None:
    for integration in integrations():
        try:
            integration.on_end(event)
        except Exception:
            log.exception("integration %r failed in on_end", integration)


def emit_sync(
    event: ImageEditEvent, response: ImageResponse | None, exception: BaseException | None
) -> None:
    """Hand a finished sync call's event to every registered receiver."""
    _dispatch_end(event)


async def emit_async(
    event: ImageEditEvent, response: ImageResponse | None, exception: BaseException | None
) -> None:
    """Hand a finished async call's event to every registered receiver."""
    _dispatch_end(event)
