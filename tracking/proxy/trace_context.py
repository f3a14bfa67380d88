"""The caller's W3C trace context, made current around a proxied call.

A client that sends ``traceparent`` (and ``tracestate`` / ``baggage``) expects the proxy's work to
join its trace. The ``"otel"`` integration opens each call's span as a child of the current
context, so the proxy reads the incoming headers through the global propagator and attaches the
result while the call runs; the span the upstream sees as its parent is then in the caller's
trace. Nothing is done (and OpenTelemetry is not imported) unless the request carries a
``traceparent`` and OpenTelemetry is already loaded, which the ``"otel"`` integration does.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

__all__ = ["callers_trace"]

log = logging.getLogger(__name__)


@contextmanager
def callers_trace(headers: Mapping[str, str]) -> Iterator[None]:
    """Make the trace context of ``headers`` (lower-cased names) current inside the block."""
    if "traceparent" not in headers or "opentelemetry.propagate" not in sys.modules:
        yield
        return
    from opentelemetry import context, propagate

    token: object | None
    try:
        token = context.attach(propagate.extract(headers))
    except Exception:  # a propagator of the host's that fails on odd headers: no parent, a call
        log.debug("the caller's trace context could not be read", exc_info=True)
        token = None
    try:
        yield
    finally:
        if token is not None:
            context.detach(token)
