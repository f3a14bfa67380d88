"""``image_edit`` and ``aimage_edit``: one signature, driven sync or async.

The parameters are written once, in :func:`tracking.request.image_edit_params` (which
:func:`~tracking.request.parse_call` reads too); the two entry points take that exact signature
(``ParamSpec``), so editors and type checkers show every parameter on both.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec

from .flow import run_async, run_sync
from .request import image_edit_params
from .response import ImageResponse

__all__ = ["aimage_edit", "image_edit"]

P = ParamSpec("P")


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


image_edit = _driven_sync(image_edit_params)
aimage_edit = _driven_async(image_edit_params)
