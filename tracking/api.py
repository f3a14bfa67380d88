"""``image_edit`` and ``aimage_edit``: one signature, driven sync or async.

The parameters are written once, in :func:`tracking.request.image_edit_params` (which
:func:`~tracking.request.parse_call` reads too); the two entry points take that exact signature
(``ParamSpec``), so editors and type checkers show every parameter on both. With
``stream=True`` they return a stream of events (:mod:`tracking.streaming`), and their types say
so (an overload on ``stream: Literal[True]``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, Literal, ParamSpec, Protocol, cast, overload

from .flow import run_async, run_sync
from .request import image_edit_params
from .response import ImageResponse
from .streaming import AsyncImageEditStream, ImageEditStream, open_async_stream
from .targets import Route

__all__ = ["AsyncEdit", "SyncEdit", "aimage_edit", "call_async", "call_sync", "image_edit"]

P = ParamSpec("P")


class SyncEdit(Protocol[P]):
    """``image_edit``'s type: a stream with ``stream=True``, else the response."""

    # mypy cannot see that P (the signature below) takes no stream=True: no real overlap
    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, *args: Any, stream: Literal[True], **kwargs: Any
    ) -> ImageEditStream: ...
    @overload
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> ImageResponse: ...


class AsyncEdit(Protocol[P]):
    """``aimage_edit``'s type: an async stream with ``stream=True``, else the response."""

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


def _driven_sync(params: Callable[P, dict[str, Any]]) -> SyncEdit[P]:
    @functools.wraps(params)
    def image_edit(*args: P.args, **kwargs: P.kwargs) -> Any:
        return call_sync(params(*args, **kwargs))

    image_edit.__name__ = image_edit.__qualname__ = "image_edit"
    return cast("SyncEdit[P]", image_edit)


def _driven_async(params: Callable[P, dict[str, Any]]) -> AsyncEdit[P]:
    @functools.wraps(params)
    async def aimage_edit(*args: P.args, **kwargs: P.kwargs) -> Any:
        return await call_async(params(*args, **kwargs))

    aimage_edit.__name__ = aimage_edit.__qualname__ = "aimage_edit"
    return cast("AsyncEdit[P]", aimage_edit)


image_edit = _driven_sync(image_edit_params)
aimage_edit = _driven_async(image_edit_params)
