"""Where a proxied edit goes: the seam between the proxy and the SDK's call path.

:class:`ModelTable` maps each public ``model_name`` to its deployment's ``litellm_params`` and
calls :func:`tracking.aimage_edit` with them, exactly as an SDK user would. It serves a single
deployment per model (the first entry of a ``model_name``; the others are reported at start) and
enforces each deployment's ``rpm`` in this process. Anything with the same
``aimage_edit(model=..., **params)`` method can take its place: :func:`build_dispatcher` is the
one line that becomes ``tracking.Router(model_list=..., **router_settings)`` once the router
exists.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

from .errors import ProxyError

if TYPE_CHECKING:
    from ..config import Deployment, ProxyConfig
    from ..response import ImageResponse

__all__ = ["Dispatcher", "ModelTable", "build_dispatcher"]

log = logging.getLogger("tracking.proxy")

#: litellm_params passed to the SDK call as they are.
_CALL_PARAMS = ("api_key", "api_base", "api_version", "timeout", "max_retries", "drop_params")


class Dispatcher(Protocol):
    async def aimage_edit(self, *, model: str, **params: Any) -> ImageResponse: ...


def build_dispatcher(config: ProxyConfig) -> Dispatcher:
    """The object every proxied edit is handed to."""
    return ModelTable(config)


class _RequestsPerMinute:
    """A sliding one-minute window of call times: exact, and small for the limits rpm takes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.times: deque[float] = deque()

    def admit(self) -> float | None:
        """None when admitted (and counted); else the seconds until a slot frees up."""
        now = time.monotonic()
        while self.times and now - self.times[0] >= 60.0:
            self.times.popleft()
        if len(self.times) >= self.limit:
            return 60.0 - (now - self.times[0])
        self.times.append(now)
        return None


class ModelTable:
    def __init__(self, config: ProxyConfig) -> None:
        self._deployments: dict[str, Deployment] = {}
        self._limits: dict[str, _RequestsPerMinute] = {}
        self._defaults: dict[str, Any] = {}
        settings = config.litellm_settings
        if settings.drop_params:
            self._defaults["drop_params"] = True
        if settings.request_timeout is not None:
            self._defaults["timeout"] = settings.request_timeout
        retries = config.router_settings.get("num_retries", settings.num_retries)
        if retries is not None:
            self._defaults["max_retries"] = retries
        for deployment in config.model_list:
            name = deployment.model_name
            if name in self._deployments:
                log.warning(
                    "model %r has several deployments; this proxy serves the first one only "
                    "(load balancing arrives with the router)",
                    name,
                )
                continue
            self._deployments[name] = deployment
            rpm = deployment.litellm_params.get("rpm")
            if rpm is not None:
                self._limits[name] = _RequestsPerMinute(rpm)

    async def aimage_edit(self, *, model: str, **params: Any) -> ImageResponse:
        import tracking

        deployment = self._deployments[model]
        limit = self._limits.get(model)
        if limit is not None:
            wait = limit.admit()
            if wait is not None:
                raise ProxyError(
                    429,
                    f"rate limit reached for model {model!r}: {limit.limit} requests per minute",
                    type="rate_limit_error",
                    code="rate_limit_exceeded",
                    headers={"retry-after": str(max(1, math.ceil(wait)))},
                    reason="rate",
                )
        call = {**params, **self._defaults, "model": deployment.model}
        for name in _CALL_PARAMS:
            value = deployment.litellm_params.get(name)
            if value is not None:
                call[name] = value
        return await tracking.aimage_edit(**call)
