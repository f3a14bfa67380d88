"""``image_edit`` and ``aimage_edit``: one signature, driven sync or async.

The parameters are written once, in :func:`_image_edit_params`; the two entry points take that
exact signature (``ParamSpec``), so editors and type checkers show every parameter on both. With
``stream=True`` they return a stream of events (:mod:`tracking.streaming`), and their types say
so (an overload on ``stream: Literal[True]``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Literal, ParamSpec, Protocol, cast, overload

from .flow import run_async, run_sync
from .images import ImageInput
from .response import ImageResponse
from .streaming import AsyncImageEditStream, ImageEditStream, open_async_stream
from .targets import Route

__all__ = ["AsyncEdit", "SyncEdit", "aimage_edit", "call_async", "call_sync", "image_edit"]

P = ParamSpec("P")


def _image_edit_params(
    image: ImageInput | list[ImageInput],
    prompt: str,
    model: str | None = None,
    mask: ImageInput | None = None,
    n: int | None = None,
    size: str | None = None,
    response_format: str | None = None,
    user: str | None = None,
    *,
    quality: str | None = None,
    background: str | None = None,
    output_format: str | None = None,
    output_compression: int | None = None,
    input_fidelity: str | None = None,
    stream: Literal[False] | None = None,  # True: the overloads of SyncEdit and AsyncEdit
    partial_images: int | None = None,
    timeout: float | None = None,
    max_retries: int | None = None,
    api_key: str | None = None,
    api_base: str | None = None,
    api_version: str | None = None,
    extra_headers: Mapping[str, str] | None = None,
    extra_body: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    drop_params: bool = False,
) -> dict[str, Any]:
    """Edit an image (or several) with a prompt, as OpenAI's ``images.edit``, tracked.

    ``image`` and ``mask`` may be bytes, a path, an open binary file, an ``(filename, bytes)``
    tuple, or (``image`` only) a list of these. ``model`` is required unless
    ``TRACKING_DEFAULT_MODEL`` is set; prefix it with a provider (``azure/<deployment>``) to
    choose one. ``timeout`` (seconds, default 600) applies to each attempt; ``max_retries``
    (default 2) retries 429, 5xx, timeouts and dropped connections with backoff. ``metadata``
    is recorded on the call's event (``team`` and ``tags`` are read from it). Returns an
    :class:`~tracking.ImageResponse` whose ``cost_usd`` is the call's cost; with
    ``stream=True`` (and ``partial_images`` 0 to 3) an iterator of OpenAI's stream events
    instead (:class:`~tracking.ImageEditStream`, see docs/streaming.md).
    """
    return dict(locals())


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


image_edit = _driven_sync(_image_edit_params)
aimage_edit = _driven_async(_image_edit_params)
