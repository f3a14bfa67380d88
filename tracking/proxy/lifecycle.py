"""What the proxy does at start and at stop, apart from serving requests.

At start, :func:`install_callbacks` puts ``litellm_settings``' callbacks into
``tracking.success_callback`` / ``failure_callback`` / ``callbacks``, the same lists an SDK user
fills, so proxied calls reach exactly the integrations an SDK call would. A built-in name
(``"prometheus"``, ``"sql"``...) is checked against the known ones; a dotted name
(``"custom_callbacks.handler"``, as LiteLLM configs spell a user's object) is imported, with the
config file's folder on the import path. Any name that cannot be used stops the start with a
clear error. Two sinks are always in: the Prometheus integration (what ``/metrics`` shows) and
the SQL ledger (``general_settings.database_url``, else ``TRACKING_DATABASE_URL``, else
``sqlite:///./tracking.db``), in ``durable`` mode unless ``ledger_mode: background``, so a
response leaves only once its row is acknowledged. Spans are configured from the standard
``OTEL_*`` variables when the otel extra is installed: ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_TRACES_EXPORTER=otlp`` / ``console``) alone turns the ``otel`` integration on, without
naming it in the callbacks (``console`` prints each span as JSON on stdout). At stop,
:func:`shut_down_sinks` flushes and shuts down every integration.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from ..config import ProxyConfig
from ..errors import ConfigurationError
from .start_faults import described

if TYPE_CHECKING:
    from tracking.integrations.prometheus import PrometheusLogger
    from tracking.integrations.sql import SqlLedger

__all__ = [
    "ProxySinks",
    "check_callbacks",
    "check_ledger",
    "install_callbacks",
    "shut_down_sinks",
]

log = logging.getLogger("tracking.proxy")

_SHUTDOWN_TIMEOUT = 30.0


def _entry(name: str, config: ProxyConfig, *, resolve: bool) -> Any:
    from .. import bus

    target = bus.BUILTIN_INTEGRATIONS.get(name)
    if target is not None:
        integration_module = target.partition(":")[0]
        if resolve:
            bus.resolve(name)  # loads it now: a missing extra fails the start, not each call
        elif not _findable(integration_module):
            raise ConfigurationError(
                f"callback {name!r}: its integration ({integration_module}) is not installed"
            )
        return name
    module_name, dot, attribute = name.rpartition(".")
    if not dot:
        known = ", ".join(sorted(bus.BUILTIN_INTEGRATIONS))
        raise ConfigurationError(
            f"litellm_settings: unknown callback {name!r}; built-in integrations: {known}, "
            "or a dotted path to your own object (module.attribute)"
        )
    folder = str(config.source.parent) if config.source else os.getcwd()
    if folder not in sys.path:
        sys.path.insert(0, folder)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"callback {name!r}: cannot import {module_name!r}: {exc}"
        ) from None
    except KeyboardInterrupt:  # Ctrl-C during the import: the start was interrupted
        raise
    except BaseException as exc:  # the module's own code failed, or exited (sys.exit): one
        # line, never a traceback (in a worker, never uvicorn's)
        raise ConfigurationError(
            f"callback {name!r}: importing {module_name!r} failed: {described(exc)}"
        ) from None
    try:
        found = getattr(module, attribute)
    except AttributeError:
        raise ConfigurationError(
            f"callback {name!r}: {module_name!r} has no attribute {attribute!r}"
        ) from None
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # the module's __getattr__ failed or exited
        raise ConfigurationError(
            f"callback {name!r}: looking {attribute!r} up in {module_name!r} failed: "
            f"{described(exc)}"
        ) from None
    try:  # a module ("os.path"), a constant: the start fails here, not every call after it
        if isinstance(found, str):
            raise ConfigurationError(f"not a callback: str {found!r}; {bus.ACCEPTED}")
        bus.check_entry(found)
    except ConfigurationError as error:
        raise ConfigurationError(f"callback {name!r}: {error}") from None
    return found


def _findable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def check_callbacks(config: ProxyConfig) -> None:
    """Fail early (in the parent process) on callbacks that could never load; loads nothing."""
    settings = config.litellm_settings
    for name in (*settings.success_callback, *settings.failure_callback, *settings.callbacks):
        _entry(name, config, resolve=False)


@dataclass(frozen=True, slots=True)
class ProxySinks:
    """The integrations the proxy itself feeds and reads, beside the configured ones."""

    prometheus: PrometheusLogger
    ledger: SqlLedger


def install_callbacks(
    config: ProxyConfig, *, resolve: bool, metrics_registry: Any = None
) -> ProxySinks:
    """Fill the SDK's callback lists from the config (replacing what they held), with the
    proxy's own two sinks always in: Prometheus (``/metrics``) and the SQL ledger."""
    import tracking

    from .ledger import ledger_url, open_ledger

    settings = config.litellm_settings
    # "prometheus" and "sql" are the proxy's own sinks: named in the config, they are still
    # one instance each, configured from general_settings.
    own = ("prometheus", "sql")
    # Before resolving: anything reading the ledger's URL (spend and key stores) finds this one.
    os.environ["TRACKING_DATABASE_URL"] = ledger_url(config)
    success = [
        _entry(n, config, resolve=resolve) for n in settings.success_callback if n not in own
    ]
    failure = [
        _entry(n, config, resolve=resolve) for n in settings.failure_callback if n not in own
    ]
    others = [_entry(n, config, resolve=resolve) for n in settings.callbacks if n not in own]
    named = {*settings.success_callback, *settings.failure_callback, *settings.callbacks}
    if _otel_exporters() and "otel" not in named and _findable("tracking.integrations.otel"):
        others.append(_entry("otel", config, resolve=resolve))  # the OTEL_* variables ask for it
    prometheus = _prometheus(metrics_registry, end_user_metric=settings.end_user_metric)
    # A Prometheus logger of the user's (a dotted callback) on the same registry would count
    # every call a second time: the proxy's own one already feeds /metrics.
    others = _without_prometheus(others)
    success = _without_prometheus(success)
    failure = _without_prometheus(failure)
    ledger = open_ledger(config)
    tracking.success_callback = success
    tracking.failure_callback = failure
    tracking.callbacks = [*others, prometheus, ledger]
    _configure_otel()
    return ProxySinks(prometheus, ledger)


def _prometheus(registry: Any, *, end_user_metric: bool) -> PrometheusLogger:
    from .. import bus

    if registry is not None or end_user_metric:
        from tracking.integrations.prometheus import PrometheusLogger

        return PrometheusLogger(registry, end_user_metric=end_user_metric)
    logger = bus.resolve("prometheus")
    assert logger is not None
    return cast("PrometheusLogger", logger)


def _without_prometheus(entries: list[Any]) -> list[Any]:
    from tracking.integrations.prometheus import PrometheusLogger

    kept = []
    for entry in entries:
        if isinstance(entry, PrometheusLogger) or entry is PrometheusLogger:
            log.warning(
                "litellm_settings: a second Prometheus callback (%r) is ignored: the proxy's own "
                "already counts every call on /metrics",
                entry,
            )
            continue
        kept.append(entry)
    return kept


def _otel_exporters() -> set[str]:
    """The span exporters the standard variables ask for: ``otlp`` when an endpoint is set
    (OpenTelemetry's default exporter), else what ``OTEL_TRACES_EXPORTER`` lists."""
    listed = {
        name.strip().lower()
        for name in os.environ.get("OTEL_TRACES_EXPORTER", "").split(",")
        if name.strip()
    }
    if "none" in listed:
        return set()
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    if not listed and endpoint:
        listed = {"otlp"}
    return listed & {"otlp", "console"}


def _configure_otel() -> None:
    """Spans from the standard OTEL_* variables, when asked for and the otel extra is present."""
    exporters = _otel_exporters()
    if not exporters:
        return
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError:
        log.warning("OTEL_* is set but the otel extra is not installed; no spans are exported")
        return
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "tracking")})
    provider = TracerProvider(resource=resource)
    if "otlp" in exporters:
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    if "console" in exporters:
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)
    log.info("OpenTelemetry: spans exported to %s", ", ".join(sorted(exporters)))


def shut_down_sinks(timeout: float = _SHUTDOWN_TIMEOUT) -> None:
    """Deliver everything queued and release every integration; never raises.

    The ledger goes first, shipping for at most a few seconds: its acknowledged rows are safe in
    the local outbox either way, and a database that is away must not hold the whole timeout.
    """
    import tracking

    deadline = time.monotonic() + timeout
    for integration in list(tracking.callbacks):
        if type(integration).__name__ == "SqlLedger":
            try:
                integration.shutdown(timeout)
            except Exception:
                log.exception("the ledger failed to shut down")
    timeout = max(0.0, deadline - time.monotonic())
    shutdown = getattr(tracking, "shutdown", None)
    if callable(shutdown):
        try:
            shutdown(timeout)
        except Exception:
            log.exception("tracking.shutdown failed")
    else:
        _shut_down_integrations(time.monotonic() + timeout)
    try:
        from opentelemetry import trace

        provider: Any = trace.get_tracer_provider()
        if hasattr(provider, "shutdown"):
            provider.shutdown()
    except ImportError:
        pass


def _shut_down_integrations(deadline: float) -> None:
    from .. import bus

    try:
        integrations = bus.integrations()
    except Exception:
        log.exception("cannot list the integrations to flush")
        return
    for integration in integrations:
        try:
            if not integration.flush(max(0.0, deadline - time.monotonic())):
                log.warning("integration %r did not deliver everything in time", integration)
            integration.shutdown(max(0.0, deadline - time.monotonic()))
        except Exception:
            log.exception("integration %r failed to shut down", integration)


async def check_ledger(ledger: SqlLedger, stuck_after: float = 60.0) -> str:
    """``connected``, ``unreachable`` or ``stuck`` (the reason is logged, never the URL).

    ``stuck``: the database answers, but for ``stuck_after`` seconds none of the outbox's
    waiting rows has reached it (a table missing, a permission revoked): calls are still
    recorded locally, yet nothing reaches the ledger anyone queries.
    """
    try:
        await asyncio.wait_for(asyncio.to_thread(_ping, ledger.engine), timeout=5.0)
    except Exception as exc:
        log.warning("readiness: the ledger database is unreachable: %s", type(exc).__name__)
        return "unreachable"
    stuck = ledger.stuck_for()
    if stuck >= stuck_after:
        log.warning(
            "readiness: for %.0f s no ledger row reached the database; %d rows wait in %s",
            stuck,
            ledger.outbox_rows(),
            ledger.outbox_path,
        )
        return "stuck"
    return "connected"


def _ping(engine: Any) -> None:
    from sqlalchemy import text

    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))
