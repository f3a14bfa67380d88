"""The provider protocol: how one edit becomes one HTTP request, and one HTTP answer a response.

A provider does no I/O. The call flow (:mod:`tracking.flow`) sends what :meth:`Provider.prepare`
built, with the sync or the async client, and hands the answer to :meth:`Provider.parse`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..frozen import fast_init

if TYPE_CHECKING:
    from ..request import CallOptions, ImageEditRequest
    from ..response import ImageResponse

__all__ = ["PreparedRequest", "Provider"]


@fast_init
@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """One upstream HTTP request, body encoded once; ``secrets`` are masked in every error."""

    url: str
    headers: dict[str, str]
    body: bytes
    secrets: tuple[str, ...] = ()

    @property
    def host(self) -> str:
        """``host[:port]`` of the upstream: safe to log, never a credential."""
        rest = self.url.split("://", 1)[-1]
        return rest.split("/", 1)[0].rsplit("@", 1)[-1]


class Provider(Protocol):
    """Builds requests for, and reads answers from, one kind of upstream."""

    name: str

    def prepare(self, request: ImageEditRequest, options: CallOptions) -> PreparedRequest: ...

    def parse(self, status: int, headers: dict[str, str], body: bytes) -> ImageResponse: ...
