"""One structured log line per image-edit call, via structlog.

:class:`StructlogLogger` is the ``"structlog"`` built-in integration, a sink: ``on_end`` queues
the event and returns; a worker thread writes one line per call, ``event="image_edit"``, with
the event's fields, ``timestamp`` (the call's end, ISO-8601 UTC) and ``trace_id``
(the W3C trace the call's upstream request carried, else the caller's current OpenTelemetry
span). API keys and image bytes are never part of an event; the prompt is added only when
content capture is on, truncated.

Where the line goes: when the host application has configured structlog, its configuration
applies (processors, renderer, output), run in a copy of the caller's context taken at the
call's end, so ``merge_contextvars`` adds what the caller bound. Otherwise, and in the proxy,
the line is JSON on stdout from a private logger: the library never calls
``structlog.configure`` nor touches stdlib logging's handlers. The integration's own failures
(a line that could not be written, a full queue) go to the bus's one failure reporter, which
counts them (``tracking_integration_errors_total``, ``tracking_events_dropped_total``) and logs
them on the stdlib ``tracking`` logger.
"""

from __future__ import annotations

import contextvars
import io
import json
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC
from typing import TYPE_CHECKING, Any, TextIO, cast

import structlog

from tracking import bus

if TYPE_CHECKING:
    from tracking.events import ImageEditEvent
    from tracking.integration import CallStart

__all__ = ["StructlogLogger", "json_line_logger"]

DEFAULT_MAX_PROMPT_CHARS = 1000
DEFAULT_QUEUE_SIZE = 10_000
DEFAULT_LINGER = 0.05
_MAX_IN_FLIGHT = 100_000
_LOG_EVENT = "image_edit"
#: A queued line: the event, its trace id, its prompt (content capture) and the caller's context.
_Line = tuple["ImageEditEvent", str | None, str | None, contextvars.Context | None]


def json_line_logger(stream: TextIO | None = None) -> Any:
    """A private structlog logger writing one JSON object per line to ``stream`` (stdout).

    Nothing global changes: the host's structlog and logging configurations are left alone.
    """
    return structlog.wrap_logger(
        structlog.PrintLogger(stream if stream is not None else cast(TextIO, _Stdout())),
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    )


class StructlogLogger:
    """The ``"structlog"`` integration: one line per call, written off the call path.

    ``logger`` overrides where lines go (any structlog-style logger with ``info``); ``stream``
    sends JSON lines to that text stream; by default the host's structlog configuration applies
    if it has one, else JSON lines go to stdout.
    ``capture_content`` (or ``TRACKING_CAPTURE_CONTENT=true``) adds the prompt, truncated to
    ``max_prompt_chars``. At most ``queue_size`` lines wait for the writer; past that the oldest
    is dropped, counted in ``dropped`` and reported to the bus (``tracking_events_dropped_total``).
    """

    def __init__(
        self,
        logger: Any = None,
        *,
        stream: TextIO | None = None,
        capture_content: bool | None = None,
        max_prompt_chars: int = DEFAULT_MAX_PROMPT_CHARS,
        queue_size: int = DEFAULT_QUEUE_SIZE,
    ) -> None:
        self._logger = logger
        self._stream = stream
        self._own_logger: Any = None
        #: structlog's lazy proxy for the host's configuration, made once: with the host's
        #: ``cache_logger_on_first_use`` it binds once instead of once per line (about 3 µs of
        #: a line's 20); without it, it still reads the configuration at every line.
        self._host_logger: Any = None
        if capture_content is None:
            flag = os.environ.get("TRACKING_CAPTURE_CONTENT", "")
            capture_content = flag.strip().lower() in ("1", "true", "yes")
        self.capture_content = capture_content
        self.max_prompt_chars = max_prompt_chars
        self.dropped = 0
        self.failed = 0
        # Per call in flight: the headers dict sent upstream (read at the end, when every
        # integration's on_start has added to it) and the prompt when content capture is on.
        self._started: dict[str, tuple[dict[str, str], str | None]] = {}
        self._queue: deque[_Line] = deque()
        self._queue_size = queue_size
        self._cond = threading.Condition()
        self._busy = 0
        self._idle = False  # the writer waits for a first line: a new line must wake it
        self._hurry = 0  # callers in flush(): the writer stops gathering lines
        #: Seconds the writer gathers lines after the first before writing them all (cut short
        #: by flush, shutdown or a half-full queue): one thread wake-up per batch of lines
        #: instead of one per call, which cost a sync call several times the line itself.
        self.linger = DEFAULT_LINGER
        # its failures and drops count from 0: the first is a rise (tracking.bus.expect)
        bus.expect("integration_errors", "structlog")
        bus.expect("events_dropped", "structlog")
        self._worker: threading.Thread | None = None
        self._worker_pid = 0
        self._closed = False

    # -- the integration protocol --------------------------------------------------------

    def on_start(self, call: CallStart) -> None:
        try:
            prompt = call.request.prompt[: self.max_prompt_chars] if self.capture_content else None
            self._started[call.request_id] = (call.headers, prompt)
            if len(self._started) > _MAX_IN_FLIGHT:  # an end that never comes must not leak
                self._started.pop(next(iter(self._started)), None)
        except Exception as exc:
            bus.report_failure("structlog", "recording a call's start failed", exc)

    def on_end(self, event: ImageEditEvent) -> None:
        try:
            headers, prompt = self._started.pop(event.request_id, (None, None))
            trace_id = _trace_id_from(headers) if headers else None
            if trace_id is None:
                trace_id = _current_trace_id()
            # The caller's context, so that a host configuration's processors
            # (structlog.contextvars.merge_contextvars) see what the caller bound, not the
            # writer thread's empty context. A copy is O(1) and later bindings do not reach it.
            context = contextvars.copy_context() if self._stream is None else None
            self._enqueue((event, trace_id, prompt, context))
        except Exception as exc:
            bus.report_failure("structlog", "queueing a call's log line failed", exc)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued line is written (or ``timeout`` seconds pass)."""
        with self._cond:
            self._hurry += 1
            self._cond.notify_all()
            try:
                return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout)
            finally:
                self._hurry -= 1

    def shutdown(self, timeout: float | None = None) -> None:
        self.flush(timeout)
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # -- the line ---------------------------------------------------------------------------

    def fields(
        self, event: ImageEditEvent, trace_id: str | None = None, prompt: str | None = None
    ) -> dict[str, Any]:
        """The key/value pairs of one call's line (``event`` itself is the log message)."""
        fields = event.to_dict()
        fields["timestamp"] = event.end_time.astimezone(UTC).isoformat().replace("+00:00", "Z")
        fields["trace_id"] = trace_id
        if prompt is not None:
            fields["prompt"] = prompt
        return fields

    def _target(self) -> Any:
        if self._logger is not None:
            return self._logger
        if self._stream is None and structlog.is_configured():
            if self._host_logger is None:
                self._host_logger = structlog.get_logger("tracking")
            return self._host_logger
        if self._own_logger is None:
            self._own_logger = _JsonLines(self._stream)
        return self._own_logger

    def _write(self, item: _Line) -> None:
        event, trace_id, prompt, context = item
        target = self._target()
        fields = self.fields(event, trace_id, prompt)
        if context is None or isinstance(target, _JsonLines):  # no processor reads a context
            target.info(_LOG_EVENT, **fields)
        else:
            context.run(target.info, _LOG_EVENT, **fields)

    # -- the writer thread: a bounded queue, drained off the call path --------------------------

    def _enqueue(self, item: _Line) -> None:
        with self._cond:
            if self._closed:  # after shutdown, write inline: late lines are still worth having
                self._write_safely(item)
                return
            if len(self._queue) >= self._queue_size:
                self._queue.popleft()
                self.dropped += 1
                bus.record_drop(
                    "structlog", reason="its log queue is full; the oldest line was dropped"
                )
            self._queue.append(item)
            self._ensure_worker()
            if self._idle or len(self._queue) >= self._queue_size // 2:
                self._cond.notify()

    def _ensure_worker(self) -> None:
        # A forked child inherits the deque but not the thread: start a fresh one there.
        if self._worker is None or self._worker_pid != os.getpid():
            self._worker_pid = os.getpid()
            self._worker = threading.Thread(
                target=self._run, name="tracking-structlog", daemon=True
            )
            self._worker.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._idle = True
                self._cond.wait_for(lambda: bool(self._queue) or self._closed)
                self._idle = False
                deadline = time.monotonic() + self.linger
                while (
                    not self._closed
                    and not self._hurry
                    and len(self._queue) < self._queue_size // 2
                    and (remaining := deadline - time.monotonic()) > 0
                ):
                    self._cond.wait(remaining)
                if not self._queue:
                    return
                batch = list(self._queue)
                self._queue.clear()
                self._busy = len(batch)
            for item in batch:
                self._write_safely(item)
            with self._cond:
                self._busy = 0
                self._cond.notify_all()

    def _write_safely(self, item: _Line) -> None:
        try:
            self._write(item)
        except Exception as exc:
            self.failed += 1
            bus.report_failure("structlog", "writing a call's log line failed", exc)


def _trace_id_from(headers: dict[str, str]) -> str | None:
    traceparent = headers.get("traceparent")
    if not traceparent:
        return None
    parts = traceparent.split("-")
    if len(parts) >= 4 and len(parts[1]) == 32 and parts[1] != "0" * 32:
        return parts[1]
    return None


_current_trace: Callable[[], str | None] | None = None


def _current_trace_id() -> str | None:
    global _current_trace
    if _current_trace is None:
        _current_trace = _make_current_trace_reader()
    return _current_trace()


def _make_current_trace_reader() -> Callable[[], str | None]:
    try:
        from opentelemetry import trace
    except ImportError:  # the otel extra is optional
        return lambda: None

    def read() -> str | None:
        context = trace.get_current_span().get_span_context()
        return format(context.trace_id, "032x") if context.is_valid else None

    return read


class _JsonLines:
    """The private logger's lines, written without structlog's processor chain.

    Each line is byte for byte what :func:`json_line_logger` prints (the fields, then
    ``event`` and ``level``, through ``json.dumps`` with structlog's ``repr`` fallback; flushed
    per line as structlog's ``PrintLogger``), at about half its cost: the chain's copies and
    calls were most of a line's time on the writer thread (docs/benchmarks.md).
    """

    def __init__(self, stream: TextIO | None) -> None:
        self._stream: TextIO = stream if stream is not None else cast(TextIO, _Stdout())
        self._lock = threading.Lock()

    def info(self, event: str, **fields: Any) -> None:
        fields["event"] = event
        fields["level"] = "info"
        line = json.dumps(fields, default=repr) + "\n"
        with self._lock:
            self._stream.write(line)
            self._stream.flush()


class _Stdout(io.TextIOBase):
    """Whatever ``sys.stdout`` is at each write (it may be swapped after we start)."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()
