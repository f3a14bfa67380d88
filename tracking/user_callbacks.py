"""User callbacks in the LiteLLM shapes, adapted onto the bus (docs/architecture.md).

Users register plain functions ``fn(kwargs, response, start_time, end_time)`` (sync or async) and
:class:`CustomLogger` objects. This module turns each registered entry into a :class:`Receiver`:
a name (for counters and logs) plus, for each kind of call, the callable to run and whether it is
a coroutine function. The bus (:mod:`tracking.bus`) decides where each runs; this module only
knows shapes. :func:`callback_kwargs` builds the LiteLLM-style ``kwargs`` dict from the event.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .events import thaw_metadata

if TYPE_CHECKING:
    from .events import ImageEditEvent
    from .response import ImageResponse

__all__ = [
    "LITELLM_ONLY_HOOKS",
    "LOGGER_METHODS",
    "CustomLogger",
    "Receiver",
    "callback_kwargs",
    "callback_name",
    "receivers_for",
    "unread_hooks",
]


class CustomLogger:
    """Subclass and implement any of the four methods; the others are never called.

    A sync call runs ``log_success_event`` / ``log_failure_event`` when implemented, else the
    ``async_`` twin on the bus's own event loop; an async call runs the ``async_`` twin (on the
    bus's own loop too) when implemented, else the sync one on the bus's worker thread. Each runs
    once per call, off the call path; what it raises is logged and counted, never seen by the
    caller.
    """

    def log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        """Called after a successful call (sync)."""

    def log_failure_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        """Called after a failed call (sync); ``response_obj`` is None."""

    async def async_log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        """Called after a successful call (async)."""

    async def async_log_failure_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        """Called after a failed call (async); ``response_obj`` is None."""


Handler = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class Receiver:
    """One user callback, ready for one outcome (success or failure)."""

    name: str
    #: What a sync call runs: (handler, is_coroutine_function), or None when nothing applies.
    for_sync: tuple[Handler, bool] | None
    #: What an async call runs.
    for_async: tuple[Handler, bool] | None


def callback_name(entry: Any) -> str:
    """A stable, low-cardinality name for counters and log lines: a ``functools.partial``'s is
    its function's (every partial was ``functools.partial``, one count and one log line for
    them all)."""
    while isinstance(entry, functools.partial):
        entry = entry.func
    named = inspect.isfunction(entry) or inspect.ismethod(entry) or inspect.isclass(entry)
    target = entry if named else type(entry)
    module = getattr(target, "__module__", None) or "?"
    qualname = getattr(target, "__qualname__", None) or type(entry).__name__
    return f"{module}.{qualname}"


def _is_async(fn: Any) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    return call is not None and inspect.iscoroutinefunction(call)


#: The methods of LiteLLM's ``CustomLogger`` that a logger here runs (:func:`receivers_for`).
LOGGER_METHODS = (
    "log_success_event",
    "log_failure_event",
    "async_log_success_event",
    "async_log_failure_event",
)
#: LiteLLM's other ``CustomLogger`` hooks (its ``litellm/integrations/custom_logger.py``: calls
#: before and after the API request, stream chunks, the proxy's call hooks), never called here.
LITELLM_ONLY_HOOKS = (
    "log_pre_api_call",
    "log_post_api_call",
    "log_stream_event",
    "async_log_pre_api_call",
    "async_log_stream_event",
    "async_pre_call_hook",
    "async_post_call_success_hook",
    "async_post_call_failure_hook",
    "async_post_call_streaming_hook",
    "async_moderation_hook",
)


def unread_hooks(logger: CustomLogger) -> list[str]:
    """The LiteLLM hooks ``logger``'s class defines that no call here runs."""
    return [name for name in LITELLM_ONLY_HOOKS if callable(getattr(type(logger), name, None))]


def _overrides(logger: CustomLogger, method: str) -> bool:
    return getattr(type(logger), method) is not getattr(CustomLogger, method)


def receivers_for(entry: Any, outcome: str) -> Receiver | None:
    """The receiver of ``outcome`` ("success" / "failure") for a function or a logger."""
    name = callback_name(entry)
    if isinstance(entry, CustomLogger):
        sync_method = f"log_{outcome}_event"
        async_method = f"async_log_{outcome}_event"
        sync_h = getattr(entry, sync_method) if _overrides(entry, sync_method) else None
        async_h = getattr(entry, async_method) if _overrides(entry, async_method) else None
        if sync_h is not None:
            sync_pair: tuple[Handler, bool] = (sync_h, False)
            return Receiver(name, sync_pair, (async_h, True) if async_h else sync_pair)
        if async_h is not None:
            return Receiver(name, (async_h, True), (async_h, True))
        return None
    if callable(entry):
        handler = (entry, _is_async(entry))
        return Receiver(name, for_sync=handler, for_async=handler)
    return None


def _standard_logging_object(event: ImageEditEvent) -> dict[str, Any]:
    """The event as a JSON-safe dict, with the fields LiteLLM's ``StandardLoggingPayload``
    names that a callback written for LiteLLM reads (``response_cost`` as a float, ``id``,
    ``model_id``, ``request_tags``, ``startTime`` / ``endTime`` / ``completionStartTime`` as
    epoch seconds, ``response_time`` in seconds, ``cache_hit``, the token counts, ``error_str``),
    beside our own names (``cost_usd`` as a decimal string...)."""
    payload = event.to_dict()
    cost, usage = event.cost_usd, event.usage
    start, end = event.start_time.timestamp(), event.end_time.timestamp()
    # LiteLLM's: a streamed call's first chunk, else the call's end (its answer came whole)
    first = event.time_to_first_image_ms
    first_at = end if first is None else start + first / 1000
    payload.update(
        id=event.request_id,
        response_cost=float(cost) if cost is not None else None,
        model_id=event.deployment_id,
        request_tags=list(event.tags),
        startTime=start,
        endTime=end,
        completionStartTime=first_at,
        response_time=first_at - start,
        cache_hit=False,  # no call is answered from a cache
        prompt_tokens=usage.input_text_tokens + usage.input_image_tokens if usage else 0,
        completion_tokens=usage.output_tokens if usage else 0,
        total_tokens=usage.total_tokens if usage else 0,
        error_str=event.error_message,
    )
    return payload


def callback_kwargs(
    event: ImageEditEvent, response: ImageResponse | None, exception: BaseException | None
) -> dict[str, Any]:
    """The LiteLLM-style ``kwargs`` a callback receives (a fresh dict per callback).

    Built on the callback's thread, off the call path. ``tracking_event`` is the event itself:
    frozen, its metadata read-only, so one callback cannot change what others see.
    """
    logged = _standard_logging_object(event)
    kwargs: dict[str, Any] = {
        "model": event.model,
        "user": event.end_user,
        "response_cost": logged["response_cost"],
        "call_type": event.call_type,
        "metadata": thaw_metadata(event.metadata),  # its own copy: a callback may change it
        "request_id": event.request_id,
        "litellm_call_id": event.request_id,
        "standard_logging_object": logged,
        "tracking_event": event,
        "start_time": event.start_time,
        "end_time": event.end_time,
    }
    kwargs["litellm_params"] = {"metadata": kwargs["metadata"]}
    if exception is not None:
        kwargs["exception"] = exception
    return kwargs
