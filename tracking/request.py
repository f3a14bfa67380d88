"""Parsing and validating the parameters of one image edit into an immutable request.

:func:`parse_call` is the single entry for the SDK, the router and the proxy: it applies the
generic checks (types, ranges every model shares), reads and inspects the images once, applies
the per-model rules of the model's family (:mod:`tracking.rules` over :mod:`tracking.families`),
and splits what is sent upstream (:class:`ImageEditRequest`) from how it is sent
(:class:`CallOptions`). Every broken per-model rule is reported in one ``ValidationError``.
Nothing here does I/O beyond reading the caller's image arguments.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ValidationError
from .families import Family, family_of
from .frozen import fast_init
from .images import ImageFile, ImageInput, read_image, read_images
from .providers import is_provider
from .rules import Call, check

__all__ = [
    "DEFAULT_API_BASE",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT",
    "PARAMETERS",
    "CallOptions",
    "ImageEditRequest",
    "image_edit_params",
    "parse_call",
    "split_provider",
]

DEFAULT_API_BASE = "https://api.openai.com/v1"
DEFAULT_TIMEOUT = 600.0
DEFAULT_MAX_RETRIES = 2
MAX_N = 10
#: OpenAI's bound on ``partial_images`` (images.edit); a model family may narrow it.
MAX_PARTIAL_IMAGES = 3
#: A day: longer is a mistake, and a non-finite or huge value breaks the socket layer untyped.
MAX_TIMEOUT = 86_400.0


@fast_init
@dataclass(frozen=True, slots=True)
class ImageEditRequest:
    """What is sent upstream: validated, immutable, images already in memory."""

    model: str  #: as the caller asked, provider prefix included
    provider: str
    upstream_model: str  #: the name sent in the body (no provider prefix)
    prompt: str
    images: tuple[ImageFile, ...]
    mask: ImageFile | None = None
    n: int | None = None
    size: str | None = None
    quality: str | None = None
    background: str | None = None
    output_format: str | None = None
    output_compression: int | None = None
    input_fidelity: str | None = None
    response_format: str | None = None  #: None when not sent (GPT image models)
    requested_response_format: str | None = None
    user: str | None = None
    extra_body: Mapping[str, Any] = field(default_factory=dict)
    #: The model whose prices apply (a router deployment's ``model_info.base_model``).
    base_model: str | None = None
    #: Answered as Server-Sent Events (:mod:`tracking.streaming`), with this many partial images.
    stream: bool = False
    partial_images: int | None = None

    @property
    def family(self) -> Family | None:
        return family_of(self.upstream_model)

    @property
    def input_bytes(self) -> int:
        return sum(len(i.content) for i in self.images) + (
            len(self.mask.content) if self.mask else 0
        )

    def form_fields(self) -> list[tuple[str, str]]:
        """The non-file multipart fields, in a stable order, only those the caller set."""
        fields: list[tuple[str, str]] = [("model", self.upstream_model), ("prompt", self.prompt)]
        optional: tuple[tuple[str, object], ...] = (
            ("n", self.n),
            ("size", self.size),
            ("quality", self.quality),
            ("background", self.background),
            ("output_format", self.output_format),
            ("output_compression", self.output_compression),
            ("input_fidelity", self.input_fidelity),
            ("response_format", self.response_format),
            ("user", self.user),
            ("stream", "true" if self.stream else None),
            ("partial_images", self.partial_images),
        )
        fields.extend((name, str(value)) for name, value in optional if value is not None)
        fields.extend((name, _form_value(value)) for name, value in self.extra_body.items())
        return fields


@fast_init
@dataclass(frozen=True, slots=True)
class CallOptions:
    """How one call is sent: credentials, endpoint, timeout, retries. Never logged whole."""

    api_key: str | None = None
    api_base: str | None = None
    api_version: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES
    extra_headers: Mapping[str, str] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    drop_params: bool = False

    def __repr__(self) -> str:  # the key must never reach a log line or a traceback
        key = "set" if self.api_key else "unset"
        return (
            f"CallOptions(api_key=<{key}>, api_base={self.api_base!r}, timeout={self.timeout}, "
            f"max_retries={self.max_retries})"
        )


def split_provider(model: str) -> tuple[str, str]:
    """``"azure/dep"`` -> ``("azure", "dep")``; a bare name, or a prefix that names no registered
    provider, means OpenAI with the whole name (an OpenAI-compatible server may use slashes)."""
    prefix, sep, rest = model.partition("/")
    if sep and rest and is_provider(prefix):
        return prefix, rest
    return "openai", model


def image_edit_params(
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
    """The call's parameters, defined once: ``image_edit`` and ``aimage_edit`` take this
    signature, :func:`parse_call` reads what it returns.

    Edit an image (or several) with a prompt, as OpenAI's ``images.edit``, tracked.

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


#: The names of the call's parameters, in order (from :func:`image_edit_params`).
PARAMETERS: tuple[str, ...] = tuple(inspect.signature(image_edit_params).parameters)
#: What :func:`parse_call` accepts: the parameters and the router's ``base_model`` (the model
#: whose prices apply to a deployment).
_ACCEPTED = frozenset((*PARAMETERS, "base_model"))


def parse_call(**params: Any) -> tuple[ImageEditRequest, CallOptions]:
    """Validate every parameter and read the images; the first fault is a ``ValidationError``.

    ``params`` are those of :func:`image_edit_params` (missing ones take its defaults) and
    optionally ``base_model``; any other name is a ``TypeError``, as for a function call.
    """
    unknown = params.keys() - _ACCEPTED
    if unknown:
        raise TypeError(f"parse_call() got unexpected keyword arguments: {sorted(unknown)}")
    get = params.get
    image: ImageInput | list[ImageInput] | None = get("image")
    prompt: str | None = get("prompt")
    model: str | None = get("model")
    mask: ImageInput | None = get("mask")
    n: int | None = get("n")
    size: str | None = get("size")
    response_format: str | None = get("response_format")
    user: str | None = get("user")
    quality: str | None = get("quality")
    background: str | None = get("background")
    output_format: str | None = get("output_format")
    output_compression: int | None = get("output_compression")
    input_fidelity: str | None = get("input_fidelity")
    stream: bool | None = get("stream")
    partial_images: int | None = get("partial_images")
    timeout: float | None = get("timeout")
    max_retries: int | None = get("max_retries")
    api_key: str | None = get("api_key")
    api_base: str | None = get("api_base")
    api_version: str | None = get("api_version")
    extra_headers: Mapping[str, str] | None = get("extra_headers")
    extra_body: Mapping[str, Any] | None = get("extra_body")
    metadata: Mapping[str, Any] | None = get("metadata")
    drop_params: bool = get("drop_params", False)
    base_model: str | None = get("base_model")
    if stream is not None and not isinstance(stream, bool):
        raise ValidationError(
            f"stream: expected true or false, got {type(stream).__name__}",
            param="stream",
            rule="type",
        )
    partial_images = _int_param("partial_images", partial_images, low=0, high=MAX_PARTIAL_IMAGES)
    if partial_images is not None and not stream:
        raise ValidationError(
            "partial_images: only with stream=True (partial images are streamed events)",
            param="partial_images",
            rule="needs_stream",
        )
    model = model or os.environ.get("TRACKING_DEFAULT_MODEL") or None
    if not model or not isinstance(model, str):
        raise ValidationError(
            "model: required (for example 'gpt-image-1'); dall-e-2, the old default, was shut "
            "down on 2026-05-12. Set TRACKING_DEFAULT_MODEL to choose a default.",
            param="model",
            rule="required",
        )
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValidationError(
            "prompt: required, a non-empty string", param="prompt", rule="required"
        )
    if image is None:
        raise ValidationError("image: required", param="image", rule="required")
    provider, upstream_model = split_provider(model)
    family = family_of(upstream_model)

    n = _int_param("n", n, low=1, high=MAX_N)
    output_compression = _int_param("output_compression", output_compression, low=0, high=100)
    for name, value in (
        ("size", size),
        ("quality", quality),
        ("background", background),
        ("output_format", output_format),
        ("input_fidelity", input_fidelity),
        ("user", user),
    ):
        if value is not None and not isinstance(value, str):
            raise ValidationError(
                f"{name}: expected a string, got {type(value).__name__}", param=name, rule="type"
            )
    if response_format is not None and response_format not in ("url", "b64_json"):
        raise ValidationError(
            f"response_format: must be 'url' or 'b64_json', got {response_format!r}",
            param="response_format",
            rule="enum",
        )

    images = read_images(image, param="image")
    mask_file = read_image(mask, param="mask") if mask is not None else None
    optional: dict[str, str | int | None] = {
        "quality": quality,
        "background": background,
        "output_format": output_format,
        "output_compression": output_compression,
        "input_fidelity": input_fidelity,
        "response_format": response_format,
        "partial_images": partial_images,
    }
    dropped: frozenset[str] = frozenset()
    if family is not None:
        call = Call(
            model=upstream_model,
            prompt=prompt,
            images=images,
            mask=mask_file,
            n=n,
            size=size,
            options={k: v for k, v in optional.items() if v is not None},
            stream=bool(stream),
        )
        violations, dropped = check(call, family, drop_params=drop_params)
        if violations:
            raise ValidationError.from_violations(violations)
    sent = {k: (None if k in dropped else v) for k, v in optional.items()}
    request = ImageEditRequest(
        model=model,
        provider=provider,
        upstream_model=upstream_model,
        prompt=prompt,
        images=images,
        mask=None if "mask" in dropped else mask_file,
        n=n,
        size=size,
        quality=_str_or_none(sent["quality"]),
        background=_str_or_none(sent["background"]),
        output_format=_str_or_none(sent["output_format"]),
        output_compression=output_compression if sent["output_compression"] is not None else None,
        input_fidelity=_str_or_none(sent["input_fidelity"]),
        response_format=_str_or_none(sent["response_format"]),
        requested_response_format=response_format,
        user=user,
        extra_body=dict(extra_body or {}),
        base_model=base_model,
        stream=bool(stream),
        partial_images=_int_or_none(sent["partial_images"]),
    )
    options = CallOptions(
        api_key=api_key,
        api_base=api_base,
        api_version=api_version,
        timeout=_timeout(timeout),
        max_retries=DEFAULT_MAX_RETRIES
        if max_retries is None
        else _int_param("max_retries", max_retries, low=0, high=100) or 0,
        extra_headers=_headers(extra_headers),
        metadata=dict(metadata or {}),
        drop_params=drop_params,
    )
    return request, options


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) else None


def _int_param(name: str, value: Any, *, low: int, high: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(
            f"{name}: expected an integer, got {type(value).__name__}", param=name, rule="type"
        )
    if not low <= value <= high:
        raise ValidationError(
            f"{name}: must be between {low} and {high}, got {value}", param=name, rule="range"
        )
    return value


def _timeout(value: Any) -> float:
    if value is None:
        return DEFAULT_TIMEOUT
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 < value <= MAX_TIMEOUT  # also False for NaN
    ):
        raise ValidationError(
            f"timeout: expected a positive number of seconds, at most {MAX_TIMEOUT:g}, "
            f"got {value!r}",
            param="timeout",
            rule="range",
        )
    return float(value)


def _headers(value: Mapping[str, str] | None) -> dict[str, str]:
    if not value:
        return {}
    if not isinstance(value, Mapping):
        raise ValidationError(
            "extra_headers: expected a mapping", param="extra_headers", rule="type"
        )
    headers: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise ValidationError(
                "extra_headers: names and values must be strings",
                param="extra_headers",
                rule="type",
            )
        if "\n" in key or "\r" in key or "\n" in item or "\r" in item:
            raise ValidationError(
                "extra_headers: line breaks are not allowed", param="extra_headers", rule="format"
            )
        headers[key] = item
    return headers


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
