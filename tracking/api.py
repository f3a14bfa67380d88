"""``image_edit`` and ``aimage_edit``: one signature, driven sync or async.

The parameters are written once, in :func:`_image_edit_params`; the two entry points take that
exact signature (``ParamSpec``), so editors and type checkers show every parameter on both.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, ParamSpec

from .flow import run_async, run_sync
from .images import ImageInput
from .response import ImageResponse

__all__ = ["aimage_edit", "image_edit"]

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
    safety_identifier: str | None = None,
    stream: bool | None = None,
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
    (default 2) retries 429, 5xx, timeouts and dropped connections with backoff.
    ``safety_identifier`` (OpenAI's successor of ``user``) names the end user, and wins over
    ``user`` when both are given (the other is kept in the event's metadata). ``metadata``
    is recorded on the call's event (``team`` and ``tags`` are read from it). Returns an
    :class:`~tracking.ImageResponse` whose ``cost_usd`` is the call's cost.
    """
    return dict(locals())


def _driven_sync(params: Callable[P, dict[str, Any]]) -> Callable[P, ImageResponse]:
    @functools.wraps(params)
    def image_edit(*args: P.args, **kwargs: P.kwargs) -> ImageResponse:
        return run_sync(params(*args, **kwargs))

    image_edit.__name__ = image_edit.__qualname__ = "image_edit"
    return image_edit


def _driven_async(
    params: Callable[P, dict[str, Any]],
) -> Callable[P, Coroutine[Any, Any, ImageResponse]]:
    @functools.wraps(params)
    async def aimage_edit(*args: P.args, **kwargs: P.kwargs) -> ImageResponse:
        return await run_async(params(*args, **kwargs))

    aimage_edit.__name__ = aimage_edit.__qualname__ = "aimage_edit"
    return aimage_edit


image_edit = _driven_sync(_image_edit_params)
aimage_edit = _driven_async(_image_edit_params)
