"""``image_edit`` / ``aimage_edit`` and ``image_generation`` / ``aimage_generation``: one
signature per operation, driven sync or async.

The parameters are written once per operation, in :func:`tracking.request.image_edit_params`
and :func:`tracking.request.image_generation_params` (which
:func:`~tracking.request.parse_call` reads too); the entry points take that exact signature
(``ParamSpec``), so editors and type checkers show every parameter. Both operations run the one
call flow. With ``stream=True`` they return a stream of events (:mod:`tracking.streaming`), and
their types say so (an overload on ``stream: Literal[True]``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, Literal, ParamSpec, Protocol, cast, overload

from .flow import run_async, run_sync
from .request import call_params, image_edit_params, image_generation_params
from .response import ImageResponse
from .streaming import AsyncImageEditStream, ImageEditStream, open_async_stream
from .targets import Route

__all__ = [
    "AsyncEdit",
    "SyncEdit",
    "aimage_edit",
    "aimage_generation",
    "call_async",
    "call_sync",
    "image_edit",
    "image_generation",
]

P = ParamSpec("P")


class SyncEdit(Protocol[P]):
    """``image_edit``'s (and ``image_generation``'s) type: a stream with ``stream=True``, else
    the response."""

    # mypy cannot see that P (the signature below) takes no stream=True: no real overlap
    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, *args: Any, stream: Literal[True], **kwargs: Any
    ) -> ImageEditStream: ...
    @overload
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> ImageResponse: ...


class AsyncEdit(Protocol[P]):
    """``aimage_edit``'s (and ``aimage_generation``'s) type: an async stream with
    ``stream=True``, else the response."""

    @overload
    def __call__(  # type: ignore[overload-overlap]  # as SyncEdit
        self, *args: Any, stream: Literal[True], **kwargs: Any
    ) -> Coroutine[Any, Any, AsyncImageEditStream]: ...
    @overload
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, ImageResponse]: ...


def call_sync(params: dict[str, Any], route: Route | None = None) -> Any:
    """A plain call's response, or with ``stream=True`` its :class:`ImageEditStream`."""
    if params.get("stream") is True:
        return ImageEditStream(params, route)
    return run_sync(params, route)


async def call_async(params: dict[str, Any], route: Route | None = None) -> Any:
    """As :func:`call_sync`, for async callers (an :class:`AsyncImageEditStream`)."""
    if params.get("stream") is True:
        return await open_async_stream(params, route)
    return await run_async(params, route)


def _driven_sync(params: Callable[P, dict[str, Any]], name: str) -> SyncEdit[P]:
    @functools.wraps(params)
    def call(*args: P.args, **kwargs: P.kwargs) -> Any:
        return call_sync(call_params(params, args, kwargs))

    call.__name__ = call.__qualname__ = name
    return cast("SyncEdit[P]", call)


def _driven_async(params: Callable[P, dict[str, Any]], name: str) -> AsyncEdit[P]:
    @functools.wraps(params)
    async def call(*args: P.args, **kwargs: P.kwargs) -> Any:
        return await call_async(call_params(params, args, kwargs))

    call.__name__ = call.__qualname__ = name
    return cast("AsyncEdit[P]", call)


image_edit = _driven_sync(image_edit_params, "image_edit")
aimage_edit = _driven_async(image_edit_params, "aimage_edit")
image_generation = _driven_sync(image_generation_params, "image_generation")
aimage_generation = _driven_async(image_generation_params, "aimage_generation")
