"""OpenTelemetry spans and GenAI metrics for every image call (docs/observability.md).

:class:`OtelLogger` is the ``"otel"`` built-in integration. ``on_start`` opens one CLIENT span,
``{operation} {model}`` (``image_edit`` or ``image_generation``, also its
``gen_ai.operation.name``), as a child of whatever span is current in the caller, and writes its W3C
trace context into the headers sent upstream; ``on_end`` sets the attributes of the GenAI
semantic conventions (v1.41, Development) plus our ``image_edit.*`` ones, marks failures
(status ERROR and ``error.type``), adds retries and fallbacks as span events (and the attempts
resent as ``http.request.resend_count``), ends the span at
the call's end time, and records ``gen_ai.client.operation.duration``,
``gen_ai.client.token.usage`` and, for a streamed call that had a first image,
``gen_ai.client.operation.time_to_first_chunk``. A call refused before it started gets its span
in ``on_end``.

The span is not made the current span while the request is sent (the call flow is a generator
driven by sync and async runners; a context attached there could not be detached safely), so
spans of an instrumented HTTP client are its siblings; the upstream still receives our span as
its parent through ``traceparent``. The library never installs a provider: it uses the global
tracer and meter providers (which may be set after this integration is created) unless some
are injected. End-user ids are an HMAC of the id by default; prompts are recorded only when
content capture is on, truncated, and images never.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import itertools
import json
import os
import secrets
import threading
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Literal

from opentelemetry import metrics, propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from tracking import bus
from tracking.errors import ConfigurationError

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Span, TracerProvider
    from opentelemetry.util.types import AttributeValue

    from tracking.events import ImageEditEvent
    from tracking.integration import CallStart

__all__ = [
    "DURATION_BUCKETS",
    "TOKEN_BUCKETS",
    "EndUserMode",
    "OtelLogger",
]


#: The GenAI semantic conventions' advised boundaries (seconds, then tokens); the durations go on
#: doubling past the advised 81.92 s to 655.36 s, since image calls run for minutes (a high-quality
#: edit, a queued job) and the default timeout is 600 s.
DURATION_BUCKETS: tuple[float, ...] = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
    163.84,
    327.68,
    655.36,
)
TOKEN_BUCKETS: tuple[float, ...] = tuple(float(4**i) for i in range(14))  # 1 .. 67108864

EndUserMode = Literal["hashed", "raw", "off"]
_END_USER_MODES = ("hashed", "raw", "off")
#: ``gen_ai.provider.name``: the GenAI conventions' well-known values for our provider prefixes
#: (a provider without one is named by its prefix).
_PROVIDER_NAMES = {
    "openai": "openai",
    "azure": "azure.ai.openai",
    "gemini": "gcp.gemini",
    "vertex_ai": "gcp.vertex_ai",
    "xai": "x_ai",
}
_INSTRUMENTATION = "tracking"
DEFAULT_MAX_PROMPT_CHARS = 1000
_MAX_OPEN_SPANS = 100_000
#: Entries kept by each per-label-value cache below (reset past it: model names are unbounded).
_MAX_CACHED = 4096


class OtelLogger:
    """The ``"otel"`` integration: one span per call plus the GenAI client metrics.

    ``tracer_provider`` / ``meter_provider`` default to the global ones (never set here).
    ``enduser_id`` is ``"hashed"`` (HMAC-SHA256 with ``enduser_salt``, default; the salt comes
    from the argument, else ``TRACKING_ENDUSER_SALT``, else a random per-process one),
    ``"raw"`` or ``"off"`` (also settable by ``TRACKING_OTEL_ENDUSER_ID``). ``capture_content``
    (or ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``) records the prompt as
    ``gen_ai.input.messages``, truncated to ``max_prompt_chars``.
    """

    def __init__(
        self,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        *,
        enduser_id: EndUserMode | None = None,
        enduser_salt: str | bytes | None = None,
        capture_content: bool | None = None,
        max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS,
    ) -> None:
        from tracking import __version__

        mode = enduser_id or os.environ.get("TRACKING_OTEL_ENDUSER_ID", "hashed").strip().lower()
        if mode not in _END_USER_MODES:
            raise ConfigurationError(f"enduser_id: one of hashed, raw, off; got {mode!r}")
        self.enduser_id: EndUserMode = mode  # type: ignore[assignment]
        salt = enduser_salt if enduser_salt is not None else os.environ.get("TRACKING_ENDUSER_SALT")
        if isinstance(salt, str):
            salt = salt.encode()
        # Without a configured salt, hashes are stable for this process only: safe by default.
        self._salt: bytes = salt or secrets.token_bytes(32)
        if capture_content is None:
            flag = os.environ.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "")
            capture_content = flag.strip().lower() in ("1", "true", "yes")
        self.capture_content = capture_content
        self.max_prompt_chars = max_prompt_chars
        bus.expect("integration_errors", "otel")  # its failures count from 0: the first is a rise
        self._tracer = trace.get_tracer(
            _INSTRUMENTATION, __version__, tracer_provider=tracer_provider
        )
        meter = metrics.get_meter(_INSTRUMENTATION, __version__, meter_provider=meter_provider)
        self._duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        # Streamed calls only, as the conventions ask (recommended, with the duration's buckets)
        self._time_to_first_chunk = meter.create_histogram(
            "gen_ai.client.operation.time_to_first_chunk",
            unit="s",
            description="Time to receive the first chunk of a streamed response.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        #: open spans by request id, with the model and upstream they were opened for
        self._spans: dict[str, tuple[Span, str, str]] = {}
        self._lock = threading.Lock()
        # The same end users call again and again: their HMAC is computed once (bounded).
        self._hashed_users: dict[str, str] = {}

    # -- the integration protocol --------------------------------------------------------

    def on_start(self, call: CallStart) -> None:
        try:
            request = call.request
            model = request.upstream_model or request.model
            attributes = {
                **_start_attributes(
                    model,
                    request.provider,
                    request.n,
                    call.api_base,
                    request.operation,
                    call.server_port,
                ),
                "image_edit.request_id": call.request_id,
            }
            if self.capture_content:
                attributes["gen_ai.input.messages"] = self._prompt_messages(request.prompt)
            span = self._tracer.start_span(
                f"{request.operation} {model}",
                kind=SpanKind.CLIENT,
                attributes=attributes,
                start_time=_nanos(call.start_time),
            )
            with self._lock:
                self._spans[call.request_id] = (span, model, call.api_base)
                if len(self._spans) > _MAX_OPEN_SPANS:
                    # An end that never comes (a callback list changed mid-call) must not leak.
                    self._spans.pop(next(iter(self._spans)))[0].end()
            propagate.inject(call.headers, context=trace.set_span_in_context(span))
        except Exception as exc:
            bus.report_failure("otel", "opening the call's span failed", exc)

    def on_end(self, event: ImageEditEvent) -> None:
        try:
            self._end_span(event)
        except Exception as exc:
            bus.report_failure("otel", "ending the call's span failed", exc)
        try:
            self._record_metrics(event)
        except Exception as exc:
            bus.report_failure("otel", "recording the GenAI metrics failed", exc)

    def flush(self, timeout: float | None = None) -> bool:
        # Export belongs to the host's providers; the library only hands spans over.
        return True

    def shutdown(self, timeout: float | None = None) -> None:
        pass

    # -- spans ----------------------------------------------------------------------------

    def _end_span(self, event: ImageEditEvent) -> None:
        with self._lock:
            opened = self._spans.pop(event.request_id, None)
        if opened is not None:
            span = opened[0]
            _follow_the_last_attempt(span, event, opened[1], opened[2])
        else:  # refused before the exchange (validation): a span still records it
            model = event.resolved_model or event.model or "unknown"
            span = self._tracer.start_span(
                f"{event.operation} {model}",
                kind=SpanKind.CLIENT,
                attributes={
                    "gen_ai.operation.name": event.operation,
                    "gen_ai.output.type": "image",
                    "gen_ai.request.model": model,
                    "image_edit.request_id": event.request_id,
                },
                start_time=_nanos(event.start_time),
            )
            if event.provider:
                span.set_attribute("gen_ai.provider.name", _provider_name(event.provider))
            if event.api_base:
                span.set_attributes(_server_attributes(event.api_base, event.server_port))
        span.set_attributes(self._end_attributes(event))
        end = _nanos(event.end_time)
        for hop, (source, target) in enumerate(_fallback_hops(event), start=1):
            span.add_event(
                "image_edit.fallback",
                {
                    "image_edit.fallback.from_model": source,
                    "image_edit.fallback.to_model": target,
                    "image_edit.fallback.hop": hop,
                },
                timestamp=end,
            )
        # Numbered among the retries: the event counts them but not where they fell among the
        # attempts (a fallback's first attempt, not a retry, may come between two of them).
        for number in range(1, event.retries + 1):
            span.add_event("image_edit.retry", {"image_edit.retry.number": number}, timestamp=end)
        if event.status == "failure":
            span.set_attribute("error.type", event.error_type or "_OTHER")
            span.set_status(Status(StatusCode.ERROR, event.error_message or event.error_type))
        span.end(end_time=end)

    def _end_attributes(self, event: ImageEditEvent) -> dict[str, AttributeValue]:
        attributes: dict[str, AttributeValue] = {
            "image_edit.model": event.model,
            "image_edit.status": event.status,
            "image_edit.call_type": event.call_type,
            "image_edit.images_returned": event.images_returned,
            "image_edit.input_images": event.input_images,
            "image_edit.input_bytes": event.input_bytes,
            "image_edit.has_mask": event.has_mask,
            "image_edit.prompt_chars": event.prompt_chars,
            "image_edit.cost_source": event.cost_source,
            "image_edit.attempts": event.attempts,
            "image_edit.retries": event.retries,
        }
        # Each set only when the event has it (one test each: no dict of them filtered after)
        if event.model_group is not None:
            attributes["image_edit.model_group"] = event.model_group
        if event.deployment_id is not None:
            attributes["image_edit.deployment_id"] = event.deployment_id
        if event.size is not None:
            attributes["image_edit.size"] = event.size
        if event.quality is not None:
            attributes["image_edit.quality"] = event.quality
        if event.output_format is not None:
            attributes["image_edit.output_format"] = event.output_format
        if event.upstream_request_id is not None:
            attributes["image_edit.upstream_request_id"] = event.upstream_request_id
        if event.http_status is not None:
            attributes["image_edit.http_status"] = event.http_status
        if event.price_ref is not None:
            attributes["image_edit.price_ref"] = event.price_ref
        if event.cost_usd is not None:
            attributes["image_edit.cost_usd"] = float(event.cost_usd)  # span attributes: floats
        if event.cost_per_image_usd is not None:
            attributes["image_edit.cost_per_image_usd"] = float(event.cost_per_image_usd)
        if event.upstream_latency_ms is not None:
            attributes["image_edit.upstream_latency_ms"] = event.upstream_latency_ms
        if event.has_markup:  # set only when sent
            attributes["image_edit.has_markup"] = True
        end_user = self._enduser(event.end_user)
        if end_user is not None:
            attributes["enduser.id"] = end_user
        if event.status == "success" and event.resolved_model is not None:
            # the model that answered: OpenAI-style image answers do not name it, so the one
            # the successful attempt was sent to
            attributes["gen_ai.response.model"] = event.resolved_model
        if event.time_to_first_image_ms is not None:  # a streamed call (semconv: seconds)
            attributes["gen_ai.response.time_to_first_chunk"] = event.time_to_first_image_ms / 1000
        if event.fallback_from:
            attributes["image_edit.fallback_from"] = list(event.fallback_from)
        if event.attempts > 1:
            # HTTP semconv: the resends before the request the span ends on (its last attempt,
            # whose model and upstream it names), for any cause: retries and fallbacks alike;
            # the first attempt has none
            attributes["http.request.resend_count"] = event.attempts - 1
        usage = event.usage
        if usage is not None:
            attributes["gen_ai.usage.input_tokens"] = _input_tokens(event)
            attributes["gen_ai.usage.output_tokens"] = usage.output_tokens
            if usage.cached_input_tokens:
                attributes["gen_ai.usage.cache_read.input_tokens"] = usage.cached_input_tokens
        return attributes

    def _enduser(self, end_user: str | None) -> str | None:
        if not end_user or self.enduser_id == "off":
            return None
        if self.enduser_id == "raw":
            return end_user
        hashed = self._hashed_users.get(end_user)
        if hashed is None:
            hashed = hmac.new(self._salt, end_user.encode(), hashlib.sha256).hexdigest()[:32]
            if len(self._hashed_users) >= _MAX_CACHED:
                self._hashed_users.clear()
            self._hashed_users[end_user] = hashed
        return hashed

    def _prompt_messages(self, prompt: str) -> str:
        text = prompt[: self.max_prompt_chars]
        return json.dumps([{"role": "user", "parts": [{"type": "text", "content": text}]}])

    # -- metrics --------------------------------------------------------------------------

    def _record_metrics(self, event: ImageEditEvent) -> None:
        error_type = (event.error_type or "_OTHER") if event.status == "failure" else None
        attributes, input_attributes, output_attributes = _metric_attributes(
            event.resolved_model or event.model or "unknown",
            event.provider,
            event.api_base,
            error_type,
            event.operation,
            event.server_port,
        )
        self._duration.record(event.latency_ms / 1000, attributes)
        if event.time_to_first_image_ms is not None:  # a streamed call that had a first image
            first_chunk = {k: v for k, v in attributes.items() if k != "error.type"}
            self._time_to_first_chunk.record(event.time_to_first_image_ms / 1000, first_chunk)
        usage = event.usage
        if usage is not None:
            self._tokens.record(_input_tokens(event), input_attributes)
            self._tokens.record(usage.output_tokens, output_attributes)


def _provider_name(provider: str) -> str:
    return _PROVIDER_NAMES.get(provider, provider)


def _follow_the_last_attempt(span: Span, event: ImageEditEvent, model: str, api_base: str) -> None:
    """After a fallback (or a retry on another deployment) the span names the last attempt's
    model, provider and upstream, as the call's metrics do; it was opened for the first's."""
    final = event.resolved_model
    moved = bool(event.api_base) and event.api_base != api_base
    if final and final != model:
        span.update_name(f"{event.operation} {final}")
        span.set_attribute("gen_ai.request.model", final)
        moved = True
    if not moved:
        return
    if event.provider:
        span.set_attribute("gen_ai.provider.name", _provider_name(event.provider))
    if event.api_base:
        span.set_attributes(_server_attributes(event.api_base, event.server_port))


# The attribute sets below depend only on label values that repeat call after call (model,
# provider, upstream address); they are built once and shared read-only (the SDK copies what it
# keeps), so a call builds one small dict at most.


@functools.lru_cache(maxsize=_MAX_CACHED)
def _start_attributes(
    model: str,
    provider: str,
    count: int | None,
    api_base: str,
    operation: str = "image_edit",
    server_port: int | None = None,
) -> Mapping[str, AttributeValue]:
    # The GenAI conventions ask for gen_ai.request.choice.count only when the request sets it
    # and it is not 1 ("Conditionally Required if available, in the request, and !=1").
    choices = {} if count is None or count == 1 else {"gen_ai.request.choice.count": count}
    return {
        "gen_ai.operation.name": operation,
        "gen_ai.provider.name": _provider_name(provider),
        "gen_ai.request.model": model,
        "gen_ai.output.type": "image",
        **choices,
        **_server_attributes(api_base, server_port),
    }


@functools.lru_cache(maxsize=_MAX_CACHED)
def _metric_attributes(
    model: str,
    provider: str | None,
    api_base: str | None,
    error_type: str | None,
    operation: str = "image_edit",
    server_port: int | None = None,
) -> tuple[
    Mapping[str, AttributeValue], Mapping[str, AttributeValue], Mapping[str, AttributeValue]
]:
    """The duration's attributes, then the input and output token counts' ones."""
    attributes: dict[str, AttributeValue] = {
        "gen_ai.operation.name": operation,
        "gen_ai.request.model": model,
    }
    if provider:
        attributes["gen_ai.provider.name"] = _provider_name(provider)
    if api_base:
        attributes.update(_server_attributes(api_base, server_port))
    if error_type is not None:
        attributes["error.type"] = error_type
    return (
        attributes,
        {**attributes, "gen_ai.token.type": "input"},
        {**attributes, "gen_ai.token.type": "output"},
    )


def _server_attributes(
    api_base: str, port_if_unnamed: int | None = None
) -> dict[str, AttributeValue]:
    """``host[:port]`` (IPv6 hosts in brackets) as ``server.address`` and ``server.port``; the
    port is ``port_if_unnamed`` (the scheme's default, from the call) when ``api_base`` has none."""
    if api_base.startswith("["):
        host, _, rest = api_base[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = api_base.partition(":")
    if port.isdigit():
        return {"server.address": host, "server.port": int(port)}
    if port_if_unnamed is not None:
        return {"server.address": host, "server.port": port_if_unnamed}
    return {"server.address": host}


def _input_tokens(event: ImageEditEvent) -> int:
    usage = event.usage
    assert usage is not None
    return usage.input_text_tokens + usage.input_image_tokens


def _fallback_hops(event: ImageEditEvent) -> list[tuple[str, str]]:
    return list(itertools.pairwise(event.fallback_chain))


def _nanos(moment: datetime) -> int:
    return int(moment.timestamp() * 1_000_000_000)
