"""Observable, billable OpenAI-style image edits and generations.

``tracking.image_edit(...)`` / ``await tracking.aimage_edit(...)`` call an ``/images/edits``
endpoint exactly as OpenAI's ``images.edit`` does, ``tracking.image_generation(...)`` /
``await tracking.aimage_generation(...)`` an ``/images/generations`` one as ``images.generate``
does, and both record for every call what it cost, who caused it and how it went. Heavy
modules (httpx, aiohttp, Pillow) load on first use, so ``import tracking`` stays cheap.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from .callback_list import CallbackList as _CallbackList
from .callback_list import stored as _stored
from .errors import (
    APIConnectionError,
    APIError,
    APIResponseError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ConflictError,
    ContentPolicyError,
    InternalServerError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RequestTimeoutError,
    RequestTooLargeError,
    StreamClosed,
    StreamInterruptedError,
    TrackingError,
    UnprocessableEntityError,
    UnsupportedOperationError,
    UnsupportedParamsError,
    ValidationError,
)

if TYPE_CHECKING:
    from . import bus
    from .api import aimage_edit, aimage_generation, image_edit, image_generation
    from .bus import flush, register, shutdown
    from .events import ImageEditEvent
    from .pricing import register_prices
    from .response import ImageData, ImageResponse, Usage
    from .router import NoDeploymentAvailableError, Router
    from .stream_events import (
        ImageEditCompletedEvent,
        ImageEditPartialImageEvent,
        ImageEditStreamEvent,
    )
    from .streaming import AsyncImageEditStream, ImageEditStream
    from .user_callbacks import CustomLogger

__version__ = "0.1.0"

# Each is a tracking.callback_list.CallbackList: a list that checks every entry that goes in.
#: Callbacks run after every successful call (functions, logger objects, integration names).
success_callback: list[Any] = _CallbackList("success_callback")
#: Callbacks run after every failed call.
failure_callback: list[Any] = _CallbackList("failure_callback")
#: Logger objects (``CustomLogger`` subclasses) that see successes and failures.
callbacks: list[Any] = _CallbackList("callbacks")

_LAZY = {
    "image_edit": "tracking.api",
    "aimage_edit": "tracking.api",
    "image_generation": "tracking.api",
    "aimage_generation": "tracking.api",
    "ImageResponse": "tracking.response",
    "ImageData": "tracking.response",
    "Usage": "tracking.response",
    "ImageEditEvent": "tracking.events",
    "Router": "tracking.router",
    "NoDeploymentAvailableError": "tracking.router",
    "CustomLogger": "tracking.user_callbacks",
    "register": "tracking.bus",
    "flush": "tracking.bus",
    "shutdown": "tracking.bus",
    "register_prices": "tracking.pricing",
    "ImageEditStream": "tracking.streaming",
    "AsyncImageEditStream": "tracking.streaming",
    "ImageEditPartialImageEvent": "tracking.stream_events",
    "ImageEditCompletedEvent": "tracking.stream_events",
    "ImageEditStreamEvent": "tracking.stream_events",
}
#: Submodules the docs use as ``tracking.<name>`` without importing them first.
_LAZY_MODULES = frozenset({"bus"})

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIResponseError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncImageEditStream",
    "AuthenticationError",
    "BadRequestError",
    "ConfigurationError",
    "ConflictError",
    "ContentPolicyError",
    "CustomLogger",
    "ImageData",
    "ImageEditCompletedEvent",
    "ImageEditEvent",
    "ImageEditPartialImageEvent",
    "ImageEditStream",
    "ImageEditStreamEvent",
    "ImageResponse",
    "InternalServerError",
    "NoDeploymentAvailableError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestTimeoutError",
    "RequestTooLargeError",
    "Router",
    "StreamClosed",
    "StreamInterruptedError",
    "TrackingError",
    "UnprocessableEntityError",
    "UnsupportedOperationError",
    "UnsupportedParamsError",
    "Usage",
    "ValidationError",
    "aimage_edit",
    "aimage_generation",
    "bus",
    "callbacks",
    "failure_callback",
    "flush",
    "image_edit",
    "image_generation",
    "register",
    "register_prices",
    "shutdown",
    "success_callback",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY_MODULES:  # importing it binds it here: this runs once
        return importlib.import_module(f"tracking.{name}")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tracking' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | _LAZY_MODULES)


_CALLBACK_LISTS = frozenset({"success_callback", "failure_callback", "callbacks"})

#: LiteLLM's module-wide settings (``litellm.max_budget = 10``, docs.litellm.ai/docs/budget_manager
#: and /docs/completion/reliable_completions, read 2026-12-07) that this module does not read,
#: with what does their work here. Set on ``tracking`` they were kept as plain attributes and
#: ignored: a spending cap that capped nothing, retries or a timeout never applied.
_LITELLM_SETTINGS = {
    "max_budget": "this library enforces no process-wide spending cap (nothing would stop the "
    "spend); budgets are the proxy's (max_budget of a key, an end user or litellm_settings)",
    "num_retries": "pass max_retries= (or num_retries=) to each call, or num_retries= to "
    "tracking.Router",
    "request_timeout": "pass timeout= (seconds) to each call",
    "drop_params": "pass drop_params=True to each call",
    "api_key": "pass api_key= to each call, or set OPENAI_API_KEY",
    "openai_key": "pass api_key= to each call, or set OPENAI_API_KEY",
    "api_base": "pass api_base= to each call, or set OPENAI_BASE_URL",
    "input_callback": "an integration's on_start sees each call before it is sent "
    "(docs: The integration protocol)",
    "_async_success_callback": "put async functions in tracking.success_callback",
    "_async_failure_callback": "put async functions in tracking.failure_callback",
    "set_verbose": "configure the standard 'tracking' logger "
    "(logging.getLogger('tracking').setLevel(logging.DEBUG))",
}


def _refuse_unread_setting(name: str, value: Any) -> None:
    """A LiteLLM setting, or a misspelt callback list, set on this module: never read, so
    refused (a ``ConfigurationError``) rather than kept and silently ignored."""
    hint = _LITELLM_SETTINGS.get(name)
    if hint is not None:
        raise ConfigurationError(f"tracking.{name}: LiteLLM's setting is not read here; {hint}")
    if isinstance(value, types.ModuleType) or name in globals():
        return  # a submodule being bound by its import, or a name this module already has
    import difflib

    close = difflib.get_close_matches(name, sorted(_CALLBACK_LISTS), n=1, cutoff=0.8)
    if close:
        raise ConfigurationError(
            f"tracking.{name}: no such setting (calls would never read it); "
            f"did you mean tracking.{close[0]}?"
        )


class _Tracking(types.ModuleType):
    """This module, whose callback lists are checked when set: ``tracking.success_callback =
    [os.path]`` is refused there, naming the entry, rather than at the next call. What is kept
    is a checked copy, a :class:`~tracking.callback_list.CallbackList` (None is an empty one, a
    lone entry a list of it), so that ``.append`` and the rest check what they add too.
    Deleting one (``del tracking.success_callback``) leaves it empty: every call reads the three
    lists, and a missing one failed the next call with an ``AttributeError``. LiteLLM's
    module-wide settings this library does not read (``max_budget``, ``num_retries``, ...) and
    near misses of the three lists' names (``success_callbacks``) are refused when set."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _CALLBACK_LISTS:
            value = _stored(name, value)
        else:
            _refuse_unread_setting(name, value)
        super().__setattr__(name, value)

    def __delattr__(self, name: str) -> None:
        if name in _CALLBACK_LISTS:
            super().__setattr__(name, _CallbackList(name))
            return
        super().__delattr__(name)


sys.modules[__name__].__class__ = _Tracking
