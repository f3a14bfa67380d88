"""The provider protocol: how one edit becomes one HTTP request, and one HTTP answer a response.

A provider does no I/O. The call flow (:mod:`tracking.flow`) sends what :meth:`Provider.prepare`
built, with the sync or the async client, and hands the answer to :meth:`Provider.parse`.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from ..decimals import strict_decimal
from ..errors import ConfigurationError, UnsupportedParamsError, ValidationError
from ..families import pixel_size
from ..frozen import fast_init
from ..response import ImageResponse, upstream_json

if TYPE_CHECKING:
    from ..request import CallOptions, ImageEditRequest

__all__ = [
    "EDITS_AND_GENERATIONS",
    "EDITS_ONLY",
    "GPT_IMAGE_OPTIONS",
    "OpenAIAnswers",
    "Poll",
    "PreparedRequest",
    "Provider",
    "UpstreamError",
    "add_extra_members",
    "api_base_for",
    "api_key_for",
    "bearer_json",
    "error_object",
    "extra_number",
    "openai_error",
    "text_field",
]


#: A provider's ``operations``: what it serves (:func:`tracking.providers.prepare_call`).
EDITS_ONLY: frozenset[str] = frozenset({"image_edit"})
EDITS_AND_GENERATIONS: frozenset[str] = frozenset({"image_edit", "image_generation"})


@fast_init
@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """One upstream HTTP request, body encoded once; ``secrets`` are masked in every error."""

    url: str
    headers: dict[str, str]
    body: bytes
    secrets: tuple[str, ...] = ()
    #: the size key the answer's per-image price is listed under when the answer does not say
    #: it (Gemini bills by resolution tier: "1K", "2K", "4K"; "any" for one price per image)
    price_size: str | None = None
    #: the model whose prices apply when the provider serves the call with another model than
    #: the one asked (a FLUX Kontext edit with a mask runs on FLUX Fill)
    price_model: str | None = None
    #: "POST" (an edit) or "GET" (a job's status, a result to download)
    method: str = "POST"
    #: reads this request's answer instead of the provider's ``parse`` (a job's polls)
    read: Callable[[int, dict[str, str], bytes], ImageResponse | Poll] | None = field(
        default=None, compare=False, repr=False
    )
    #: a finished job's result to download (FLUX's ``result.sample``): an error answer that a
    #: wait cannot mend (404, 403 once the URL has expired) is then no refusal of the call but
    #: a result that cannot be had, an :class:`~tracking.errors.APIResponseError`
    result: bool = False

    @property
    def host(self) -> str:
        """``host[:port]`` of the upstream: safe to log, never a credential."""
        return _upstream_of(self.url)[0]

    @property
    def port(self) -> int | None:
        """The upstream's port: the URL's own, else its scheme's (443, 80)."""
        return _upstream_of(self.url)[1]


@functools.lru_cache(maxsize=256)
def _upstream_of(url: str) -> tuple[str, int | None]:
    """``url``'s ``host[:port]`` and port (:attr:`PreparedRequest.host` and ``port``): read
    four times per call, and a call's URL is its deployment's, again and again."""
    rest = url.split("://", 1)[-1]
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    tail = host.rpartition("]")[2] if host.startswith("[") else host
    _, colon, port = tail.rpartition(":")
    if colon and port.isdigit():
        return host, int(port)
    scheme = url.partition("://")[0].lower()
    return host, 443 if scheme == "https" else 80 if scheme == "http" else None


@dataclass(frozen=True, slots=True)
class Poll:
    """An answer that is not the result yet (a job to poll, a result to download): the call
    sends ``request`` after ``wait`` seconds and reads its answer with ``request.read``. The
    call's timeout bounds the whole job; once a job is submitted, nothing is sent again (it is
    billed)."""

    request: PreparedRequest
    wait: float


@dataclass(frozen=True, slots=True)
class UpstreamError:
    """What an upstream's 4xx/5xx body says, in the library's terms.

    ``status`` overrides the HTTP status when the provider reports a condition under another one
    (Gemini answers a bad API key with 400 ``API_KEY_INVALID``: an authentication failure);
    ``retry_after`` is a wait the body asks for (Gemini's ``RetryInfo``), used when no
    ``Retry-After`` header gives one.
    """

    message: str | None = None
    param: str | None = None
    code: str | None = None
    status: int | None = None
    retry_after: float | None = None
    #: The upstream's own error ``type`` (``image_generation_user_error``, ...), untouched.
    type: str | None = None


class Provider(Protocol):
    """Builds requests for, and reads answers from, one kind of upstream."""

    name: str

    def prepare(self, request: ImageEditRequest, options: CallOptions) -> PreparedRequest: ...

    def parse(self, status: int, headers: dict[str, str], body: bytes) -> ImageResponse | Poll: ...

    def read_error(self, status: int, body: bytes) -> UpstreamError: ...


def error_object(body: bytes) -> dict[str, Any] | UpstreamError:
    """The ``error`` object of a JSON error body; else what can be said without one (a body
    that is not JSON gives its first 200 characters as the message)."""
    try:
        payload = upstream_json(body)
    except ValueError:
        snippet = body[:200].decode("utf-8", "replace").strip()
        return UpstreamError(message=snippet or None)
    error = payload.get("error") if isinstance(payload, dict) else None
    return error if isinstance(error, dict) else UpstreamError()


def text_field(error: dict[str, Any], key: str) -> str | None:
    value = error.get(key)
    return value if isinstance(value, str) else None


def openai_error(status: int, body: bytes) -> UpstreamError:
    """OpenAI's error shape: ``{"error": {"message", "param", "code", "type"}}``."""
    error = error_object(body)
    if isinstance(error, UpstreamError):
        return error
    return UpstreamError(
        message=text_field(error, "message"),
        param=text_field(error, "param"),
        code=text_field(error, "code"),
        type=text_field(error, "type"),
    )


class OpenAIAnswers:
    """Answers in OpenAI's shape (OpenAI, Azure, compatible servers): the JSON body as it came,
    errors as ``{"error": {...}}``; an image is raster or SVG (the 2.6 models' ``svg`` output)."""

    def parse(self, status: int, headers: dict[str, str], body: bytes) -> ImageResponse:
        return ImageResponse.from_json_bytes(body, svg=True)

    def read_error(self, status: int, body: bytes) -> UpstreamError:
        return openai_error(status, body)


def request_headers(own: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """A provider's own headers with the call's ``extra_headers`` over them, names compared
    without case: an ``authorization`` of the caller's replaces the provider's
    ``Authorization`` instead of being sent beside it (two keys, which the upstream reads as it
    likes)."""
    if not extra:
        return dict(own)
    given = {name.lower() for name in extra}
    headers = {name: value for name, value in own.items() if name.lower() not in given}
    headers.update(extra)
    return headers


def bearer_json(
    url: str, api_key: str, body: Mapping[str, Any], options: CallOptions, **prepared: Any
) -> PreparedRequest:
    """A JSON POST with a bearer key that asks for JSON (xAI, Recraft's generations)."""
    return PreparedRequest(
        url=url,
        headers=request_headers(
            {
                "Authorization": f"Bearer {api_key}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
            options.extra_headers,
        ),
        body=json.dumps(body).encode(),
        secrets=(api_key,),
        **prepared,
    )


def extra_number(value: object, whole: bool = False) -> Decimal | None:
    """An ``extra_body`` member as a finite number (an integer when ``whole``): an int or float,
    or its decimal text (a form field through the proxy is text, ``"20"``, which the providers'
    schemas read as the number); None for anything else (a bool, NaN, infinity, ``" 20"``,
    which Decimal would take and a provider may not)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        if value != value.strip():
            return None
        try:
            number = strict_decimal(value)
        except ArithmeticError:
            return None
    elif isinstance(value, int | float):
        number = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    else:
        return None
    if not number.is_finite() or (whole and number != number.to_integral_value()):
        return None
    return number


def sides_of(size: str, provider: str) -> tuple[int, int]:
    """Width and height of a ``WIDTHxHEIGHT`` size, both above zero; a
    :class:`~tracking.errors.ValidationError` naming ``provider`` for any other text (checked
    for every model of a provider, also one the family table does not know)."""
    parsed = pixel_size(size)
    if parsed is None or not all(parsed):
        raise ValidationError(
            f"size: {provider} takes 'auto' or WIDTHxHEIGHT with both sides whole numbers of "
            f"pixels above zero; got {size[:40]!r}",
            param="size",
            rule="format",
        )
    return parsed


def refuse_several_images(request: ImageEditRequest, makes: str, advice: str = "") -> None:
    """A :class:`~tracking.errors.ValidationError` on ``n`` when the call asks more than one
    image of an upstream that makes one (``makes``: which, and per what): sent, the rest were
    dropped without a word, the caller paying for one image of many asked."""
    if (request.n or 1) > 1:
        raise ValidationError(
            f"n: {makes}, got {request.n}{advice}",
            param="n",
            rule="range",
            code="integer_above_max_value",
        )


#: OpenAI's GPT image options that providers with no such fields (Gemini, xAI, Recraft)
#: refuse before sending (dropped with ``drop_params=True``); ``markup`` is a file.
GPT_IMAGE_OPTIONS = (
    "markup",
    "quality",
    "background",
    "output_format",
    "output_compression",
    "input_fidelity",
    "moderation",
)


def refuse_unsupported(
    request: ImageEditRequest, options: CallOptions, provider: str, names: Iterable[str]
) -> None:
    """An :class:`~tracking.errors.UnsupportedParamsError` for the first of ``names`` the
    caller set (``response_format`` only when it asks for ``url``): a parameter the provider
    has no field for would be dropped without a word while the event records it as applied.
    ``drop_params=True`` drops them instead."""
    if options.drop_params:
        return
    for name in names:
        if name == "response_format":
            value: object = request.requested_response_format
            if value != "url":
                continue
        else:
            value = getattr(request, name)
        if value is not None:
            raise UnsupportedParamsError(
                f"{name}: {provider} takes no {name} (got {str(value)[:40]!r}); leave it out, "
                "or pass drop_params=True to drop it",
                param=name,
                rule="unsupported",
            )


def add_extra_members(body: dict[str, Any], extra_body: Mapping[str, Any], provider: str) -> None:
    """``extra_body``'s members added to a provider's JSON ``body``; a
    :class:`~tracking.errors.ValidationError` for one the call itself set (an image, the
    aspect ratio or resolution a ``size`` became, the model): replaced, the upstream would make
    and answer another call than the one recorded (and checked, and for a fixed-price model
    priced). Members the call left unset (xAI's ``aspect_ratio`` with ``size='auto'``, FLUX's
    ``seed``) are the provider's to judge."""
    taken = sorted(body.keys() & extra_body.keys())
    if taken:
        raise ValidationError(
            f"extra_body: {taken[0]!r} is set by the call from its own parameters for "
            f"{provider}; extra_body may add members, not replace them",
            param="extra_body",
            rule="unsupported",
        )
    body.update(extra_body)


def api_key_for(options: CallOptions, provider: str, *variables: str) -> str:
    """The call's key, else the first set environment variable; a clear error without one."""
    key = options.api_key or next((os.environ[v] for v in variables if os.environ.get(v)), None)
    if not key:
        names = " (or ".join(variables) + ")" * (len(variables) - 1)
        raise ConfigurationError(f"api_key: no {provider} key; pass api_key=... or set {names}")
    return key


def api_base_for(options: CallOptions, variable: str, default: str) -> str:
    """The call's ``api_base``, else the environment variable, else the provider's own."""
    return (options.api_base or os.environ.get(variable) or default).rstrip("/")
