"""Parsing and validating the parameters of one image call into an immutable request.

A call is an *operation*: ``image_edit`` (OpenAI's ``images.edit``: a prompt and input images)
or ``image_generation`` (``images.generate``: a prompt alone). Their parameters are written
once each (:func:`image_edit_params`, :func:`image_generation_params`), and
:func:`parse_call` is the single entry for both, for the SDK, the router and the proxy: it
applies the generic checks (types, ranges every model shares), reads and inspects the images
once, applies the per-model rules of the model's family for the operation
(:mod:`tracking.rules` over :mod:`tracking.families`), and splits what is sent upstream
(:class:`ImageEditRequest`) from how it is sent (:class:`CallOptions`). Every broken per-model
rule is reported in one ``ValidationError``. Nothing here does I/O beyond reading the caller's
image arguments.
"""

from __future__ import annotations

import base64
import inspect
import math
import os
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .endpoint import (
    check_api_base,
    check_api_key,
    check_vertex_place,
    header_value_problem,
    is_header_name,
)
from .errors import ConfigurationError, ValidationError, Violation, range_code
from .events import MetadataTooLarge, freeze_metadata
from .families import Family, family_for
from .frozen import fast_init
from .images import ImageFile, ImageInput, ImageReference, read_image, read_images
from .providers import is_provider
from .rules import Call, check_call, check_parameters, streaming

__all__ = [
    "API_BASE_VARIABLES",
    "DEFAULT_API_BASE",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT",
    "GENERATION_PARAMETERS",
    "OPERATIONS",
    "PARAMETERS",
    "CallOptions",
    "CallType",
    "ImageEditRequest",
    "Operation",
    "call_type_of",
    "end_user_of",
    "form_items",
    "image_edit_params",
    "image_generation_params",
    "is_text",
    "metadata_tags",
    "metadata_team",
    "model_without_name",
    "openai_api_base",
    "operation_of",
    "parse_call",
    "require_text",
    "split_provider",
]

#: What a call does: edit input images, or generate images from a prompt alone.
Operation = Literal["image_edit", "image_generation"]
#: Every operation, in a stable order (metric labels, the spend split, the dashboards).
OPERATIONS: tuple[Operation, ...] = ("image_edit", "image_generation")
#: The event's ``call_type``: the operation, ``a``-prefixed when the caller was async.
CallType = Literal["image_edit", "aimage_edit", "image_generation", "aimage_generation"]

DEFAULT_API_BASE = "https://api.openai.com/v1"
#: Where OpenAI's API base is read from when none is given, in order (the official clients'
#: variable first, then LiteLLM's).
API_BASE_VARIABLES = ("OPENAI_BASE_URL", "OPENAI_API_BASE")
DEFAULT_TIMEOUT = 600.0
DEFAULT_MAX_RETRIES = 2
MAX_N = 10
#: OpenAI's bound on ``partial_images`` (images.edit); a model family may narrow it.
MAX_PARTIAL_IMAGES = 3
#: A day: longer is a mistake, and a non-finite or huge value breaks the socket layer untyped.
#: Configs (deployments, router settings) are held to the same bound.
MAX_TIMEOUT = 86_400.0


def openai_api_base(given: str | None = None) -> str:
    """``given``, else the first of :data:`API_BASE_VARIABLES` set, else OpenAI's own."""
    if given:
        return given
    for name in API_BASE_VARIABLES:
        if value := os.environ.get(name):
            return value
    return DEFAULT_API_BASE


#: Retries one call may be given (its ``max_retries``, a config's ``num_retries``).
MAX_RETRIES = 100


def _image_ref(file: ImageFile) -> dict[str, str]:
    """One image as OpenAI's JSON edit body names it: a reference as it came, bytes as a
    ``data:`` URL of their own type."""
    if isinstance(file, ImageReference):
        return file.to_json()
    encoded = base64.b64encode(file.content).decode("ascii")
    return {"image_url": f"data:{file.content_type};base64,{encoded}"}


@fast_init
@dataclass(frozen=True, slots=True)
class ImageEditRequest:
    """What is sent upstream: validated, immutable, images already in memory.

    ``operation`` says which call it is; a generation has no images, no mask and no
    ``input_fidelity``."""

    model: str  #: as the caller asked, provider prefix included
    provider: str
    upstream_model: str  #: the name sent in the body (no provider prefix)
    prompt: str
    images: tuple[ImageFile, ...] = ()
    mask: ImageFile | None = None
    #: a transparent PNG drawn over the first image to guide the edit (GPT Image 2.5 and 2.6)
    markup: ImageFile | None = None
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
    safety_identifier: str | None = None
    extra_body: Mapping[str, Any] = field(default_factory=dict)
    #: The model whose prices apply (a router deployment's ``model_info.base_model``).
    base_model: str | None = None
    #: The model the provider serves it with, when another than the one asked (a FLUX Kontext
    #: edit with a mask runs on FLUX Fill): priced as it, by the deployment's terms
    #: (:func:`tracking.pricing.served_entry`).
    served_as: str | None = None
    #: Answered as Server-Sent Events (:mod:`tracking.streaming`), with this many partial images.
    stream: bool = False
    partial_images: int | None = None
    operation: Operation = "image_edit"
    moderation: str | None = None

    @property
    def family(self) -> Family | None:
        return family_for(self.upstream_model, self.operation)

    @property
    def input_bytes(self) -> int:
        files = (*self.images, *filter(None, (self.mask, self.markup)))
        return sum(len(file.content) for file in files)

    @property
    def input_images(self) -> int:
        """The input images the upstream bills: the images, and the markup as one more."""
        return len(self.images) + (self.markup is not None)

    @property
    def references(self) -> bool:
        """Whether an input image (or the mask, or the markup) is an
        :class:`~tracking.images.ImageReference` (a URL or a file id, not bytes): the call is
        then sent as OpenAI's JSON edit body (:meth:`edit_json_body`)."""
        files = (*self.images, self.mask, self.markup)
        return any(isinstance(file, ImageReference) for file in files)

    def edit_json_body(self) -> dict[str, Any]:
        """An edit as OpenAI's JSON edit body: ``images`` (a list of ``{"image_url": ...}`` or
        ``{"file_id": ...}``), ``mask`` and ``markup`` the same way, then the fields
        :meth:`json_body` writes and ``input_fidelity``. A reference is sent as it came; an
        image held as bytes goes as a ``data:`` URL."""
        body = self.json_body()
        extra = {name: body.pop(name) for name in self.extra_body if name in body}
        body["images"] = [_image_ref(image) for image in self.images]
        if self.mask is not None:
            body["mask"] = _image_ref(self.mask)
        if self.markup is not None:
            body["markup"] = _image_ref(self.markup)
        if self.input_fidelity is not None:
            body["input_fidelity"] = self.input_fidelity
        body.update(extra)
        return body

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
            ("moderation", self.moderation),
            ("response_format", self.response_format),
            ("user", self.user),
            ("safety_identifier", self.safety_identifier),
            ("stream", "true" if self.stream else None),
            ("partial_images", self.partial_images),
        )
        fields.extend((name, str(value)) for name, value in optional if value is not None)
        for name, value in self.extra_body.items():
            fields.extend(form_items(name, value))
        return fields

    def json_body(self) -> dict[str, Any]:
        """A generation's JSON body as OpenAI's ``images.generate`` sends it: only the fields
        the caller set, numbers and booleans as JSON ones, then ``extra_body``."""
        body: dict[str, Any] = {"model": self.upstream_model, "prompt": self.prompt}
        optional: tuple[tuple[str, object], ...] = (
            ("n", self.n),
            ("size", self.size),
            ("quality", self.quality),
            ("background", self.background),
            ("moderation", self.moderation),
            ("output_format", self.output_format),
            ("output_compression", self.output_compression),
            ("response_format", self.response_format),
            ("user", self.user),
            ("safety_identifier", self.safety_identifier),
            ("stream", True if self.stream else None),
            ("partial_images", self.partial_images),
        )
        body.update((name, value) for name, value in optional if value is not None)
        body.update(self.extra_body)
        return body


@fast_init
@dataclass(frozen=True, slots=True)
class CallOptions:
    """How one call is sent: credentials, endpoint, timeout, retries; and what it is recorded
    with: its metadata, and the team and tags read from it. Never logged whole."""

    api_key: str | None = None
    api_base: str | None = None
    api_version: str | None = None
    #: Vertex AI's Google Cloud project and location (a ``vertex_ai/`` call only; else the
    #: environment's): :func:`tracking.endpoint.check_vertex_place` checked their shape
    vertex_project: str | None = None
    vertex_location: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    max_retries: int = DEFAULT_MAX_RETRIES
    extra_headers: Mapping[str, str] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    drop_params: bool = False
    team: str | None = None  #: :func:`metadata_team`
    tags: tuple[str, ...] = ()  #: :func:`metadata_tags`

    def __repr__(self) -> str:  # the key must never reach a log line or a traceback
        key = "set" if self.api_key else "unset"
        return (
            f"CallOptions(api_key=<{key}>, api_base={self.api_base!r}, timeout={self.timeout}, "
            f"max_retries={self.max_retries})"
        )


def end_user_of(params: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """The call's end user, and the other id when the caller sent two that differ.

    ``safety_identifier`` (OpenAI's successor of ``user``) wins when it is a non-empty string,
    else ``user``: OpenAI's own rule for the two. The one place both SDK and proxy read it from.
    """
    user = params.get("user")
    safety = params.get("safety_identifier")
    user = user if isinstance(user, str) and user else None
    safety = safety if isinstance(safety, str) and safety else None
    if safety is None:
        return user, None
    return safety, (user if user is not None and user != safety else None)


def split_provider(model: str) -> tuple[str, str]:
    """``"azure/dep"`` -> ``("azure", "dep")``; a bare name, or a prefix that names no registered
    provider, means OpenAI with the whole name (an OpenAI-compatible server may use slashes)."""
    prefix, sep, rest = model.partition("/")
    if sep and rest and is_provider(prefix):
        return prefix, rest
    return "openai", model


def model_without_name(model: str) -> str | None:
    """The provider of a ``model`` that names a registered provider and nothing after it
    (``"gemini/"``, ``"azure/ "``); None for any other name."""
    prefix, sep, rest = model.partition("/")
    return prefix if sep and not rest.strip() and is_provider(prefix) else None


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
    markup: ImageInput | None = None,
    quality: str | None = None,
    background: str | None = None,
    output_format: str | None = None,
    output_compression: int | None = None,
    input_fidelity: str | None = None,
    moderation: str | None = None,
    safety_identifier: str | None = None,
    stream: bool | None = None,
    partial_images: int | None = None,
    timeout: float | None = None,
    max_retries: int | None = None,
    num_retries: int | None = None,
    api_key: str | None = None,
    api_base: str | None = None,
    api_version: str | None = None,
    vertex_project: str | None = None,
    vertex_location: str | None = None,
    vertex_ai_project: str | None = None,
    vertex_ai_location: str | None = None,
    extra_headers: Mapping[str, str] | None = None,
    extra_body: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    drop_params: bool = False,
) -> dict[str, Any]:
    """The call's parameters, defined once: ``image_edit`` and ``aimage_edit`` take this
    signature, :func:`parse_call` reads what it returns.

    Edit an image (or several) with a prompt, as OpenAI's ``images.edit``, tracked.

    ``image``, ``mask`` and ``markup`` may be bytes, a path, an open binary file, an
    ``(filename, bytes)`` tuple, or (``image`` only) a list of these. ``markup`` (GPT Image 2.5
    and 2.6) is a transparent PNG of the first image's size drawn over it to guide the edit,
    never given with a ``mask``; it is billed as one more input image. ``model`` is required unless
    ``TRACKING_DEFAULT_MODEL`` is set; prefix it with a provider (``azure/<deployment>``) to
    choose one. ``timeout`` (seconds, default 600) applies to each attempt; ``max_retries``
    (default 2) retries 408, 409, 429, 5xx, timeouts and dropped connections with backoff
    (``num_retries``, LiteLLM's name for it, is the same setting: both with different values is
    a ``TypeError``).
    ``safety_identifier`` (OpenAI's successor of ``user``) names the end user, and wins over
    ``user`` when both are given (the other is kept in the event's metadata).
    ``vertex_project`` and ``vertex_location`` (LiteLLM's names; a ``vertex_ai/`` model only)
    choose the Google Cloud project and location the call is sent to, else the environment's
    (``VERTEXAI_PROJECT``, ``VERTEXAI_LOCATION``); LiteLLM's other names for them,
    ``vertex_ai_project`` and ``vertex_ai_location``, are read as the same settings (both names
    with different values are a ``ConfigurationError``). ``metadata``
    is recorded on the call's event (``team`` and ``tags`` are read from it). Returns an
    :class:`~tracking.ImageResponse` whose ``cost_usd`` is the call's cost; with
    ``stream=True`` (and ``partial_images`` 0 to 3) an iterator of OpenAI's stream events
    instead (:class:`~tracking.ImageEditStream`, see docs/streaming.md).
    """
    return dict(locals())


def image_generation_params(
    prompt: str,
    model: str | None = None,
    n: int | None = None,
    quality: str | None = None,
    response_format: str | None = None,
    size: str | None = None,
    user: str | None = None,
    *,
    background: str | None = None,
    moderation: str | None = None,
    output_format: str | None = None,
    output_compression: int | None = None,
    safety_identifier: str | None = None,
    stream: bool | None = None,
    partial_images: int | None = None,
    timeout: float | None = None,
    max_retries: int | None = None,
    num_retries: int | None = None,
    api_key: str | None = None,
    api_base: str | None = None,
    api_version: str | None = None,
    vertex_project: str | None = None,
    vertex_location: str | None = None,
    vertex_ai_project: str | None = None,
    vertex_ai_location: str | None = None,
    extra_headers: Mapping[str, str] | None = None,
    extra_body: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    drop_params: bool = False,
) -> dict[str, Any]:
    """A generation's parameters, defined once: ``image_generation`` and
    ``aimage_generation`` take this signature, :func:`parse_call` reads what it returns.

    Generate images from a prompt, as OpenAI's ``images.generate``, tracked. The parameters
    are OpenAI's (``moderation`` is ``"low"`` or ``"auto"``; ``response_format`` only where the
    model takes it) and the tracking ones are those of ``image_edit``: ``timeout``,
    ``max_retries`` (or LiteLLM's ``num_retries``), ``api_key``, ``api_base``,
    ``vertex_project``, ``vertex_location``, ``metadata``, ``drop_params``... Returns an
    :class:`~tracking.ImageResponse` whose ``cost_usd`` is the call's cost; with
    ``stream=True`` (and ``partial_images`` 0 to 3) an iterator of OpenAI's
    ``image_generation.*`` stream events instead.
    """
    return {**locals(), "operation": "image_generation"}


#: The names of an edit's parameters, in order (from :func:`image_edit_params`).
PARAMETERS: tuple[str, ...] = tuple(inspect.signature(image_edit_params).parameters)
#: The names of a generation's parameters, in order (from :func:`image_generation_params`).
GENERATION_PARAMETERS: tuple[str, ...] = tuple(
    inspect.signature(image_generation_params).parameters
)
#: What :func:`parse_call` accepts: both operations' parameters, the ``operation`` and the
#: router's ``base_model`` (the model whose prices apply to a deployment).
_ACCEPTED = frozenset((*PARAMETERS, *GENERATION_PARAMETERS, "operation", "base_model"))
#: What a caller may pass to either operation's function.
_CALL_NAMES = frozenset((*PARAMETERS, *GENERATION_PARAMETERS))
#: Parameters only an edit takes (a generation's are all an edit's too: ``moderation`` is
#: both operations' in OpenAI's images reference).
_EDIT_ONLY = ("image", "mask", "markup", "input_fidelity")
_EDIT_ONLY_NAMES = frozenset(_EDIT_ONLY)


#: Names LiteLLM's calls (and OpenAI's client) take for what a parameter here does.
_OTHER_NAMES = {
    "base_url": "api_base",
    "request_timeout": "timeout",
    "custom_llm_provider": "the provider as the model's prefix (model='azure/...')",
}


def _unknown_parameter(build: Callable[..., Any], name: str) -> str:
    """The ``TypeError`` of a name neither operation takes, naming the public function (not the
    builder behind it) and what was meant when that is known: LiteLLM's name for a parameter,
    else a near miss of one (``promt``)."""
    entry = "image_edit" if build is image_edit_params else "image_generation"
    message = f"{entry}() got an unexpected keyword argument {name!r}"
    meant = _OTHER_NAMES.get(name)
    if meant is None:
        import difflib

        close = difflib.get_close_matches(name, PARAMETERS, n=1, cutoff=0.8)
        meant = close[0] if close else None
    return message if meant is None else f"{message}; use {meant}"


def call_params(
    build: Callable[..., dict[str, Any]], args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> dict[str, Any]:
    """An entry point's parameters: ``build(*args, **kwargs)`` (:func:`image_edit_params` or
    :func:`image_generation_params`), except that a parameter only the other operation takes
    (``input_fidelity`` given to a generation) is passed on for
    :func:`parse_call` to refuse as a ``ValidationError`` naming it, recorded as any refused call
    and as the proxy answers it, not a ``TypeError`` before the call starts. A name neither
    operation has stays a ``TypeError``, as for any function. ``num_retries`` (LiteLLM's name)
    becomes ``max_retries``; both given with different values is a ``TypeError`` naming both."""
    taken = PARAMETERS if build is image_edit_params else GENERATION_PARAMETERS
    if not _CALL_NAMES.issuperset(kwargs):  # one set test per call; the name found only then
        unknown = next(name for name in kwargs if name not in _CALL_NAMES)
        raise TypeError(_unknown_parameter(build, unknown))
    if taken is PARAMETERS or _EDIT_ONLY_NAMES.isdisjoint(kwargs):  # every edit: none foreign
        params = build(*args, **kwargs)
    else:
        other = {k: v for k, v in kwargs.items() if k in _EDIT_ONLY}
        foreign = {k: v for k, v in other.items() if k not in taken}
        kept = {k: v for k, v in kwargs.items() if k not in foreign}
        params = {**build(*args, **kept), **foreign}
    retries = params["num_retries"]
    if retries is not None:
        given = params["max_retries"]
        if given is None:
            params["max_retries"] = retries
        elif type(given) is not type(retries) or given != retries:
            entry = "image_edit" if build is image_edit_params else "image_generation"
            raise TypeError(
                f"{entry}() got max_retries={given!r} and num_retries={retries!r}, two names "
                "for one setting (num_retries is LiteLLM's): give one"
            )
    return params


def operation_of(params: Mapping[str, Any]) -> Operation:
    """The operation a call's parameters are for (an edit unless they say otherwise)."""
    return "image_generation" if params.get("operation") == "image_generation" else "image_edit"


def call_type_of(params: Mapping[str, Any], *, asynchronous: bool) -> CallType:
    """The event's ``call_type``: the operation, ``a``-prefixed for an async caller."""
    if operation_of(params) == "image_generation":
        return "aimage_generation" if asynchronous else "image_generation"
    return "aimage_edit" if asynchronous else "image_edit"


def parse_call(**params: Any) -> tuple[ImageEditRequest, CallOptions]:
    """Validate every parameter and read the images; the first fault is a ``ValidationError``.

    ``params`` are those of :func:`image_edit_params` or, with
    ``operation="image_generation"``, of :func:`image_generation_params` (missing ones take
    their defaults) and optionally ``base_model``; any other name is a ``TypeError``, as for a
    function call. A parameter of the other operation is a ``ValidationError``.
    """
    unknown = params.keys() - _ACCEPTED
    if unknown:
        raise TypeError(f"parse_call() got unexpected keyword arguments: {sorted(unknown)}")
    operation = params.get("operation", "image_edit")
    if operation not in OPERATIONS:
        raise ValidationError(
            f"operation: one of {', '.join(OPERATIONS)}, got {operation!r}",
            param="operation",
            rule="enum",
        )
    generating = operation == "image_generation"
    for name in _EDIT_ONLY if generating else ():  # an edit takes every generation parameter
        if params.get(name) is not None:
            raise ValidationError(
                f"{name}: only an edit takes this parameter ({operation} does not)",
                param=name,
                rule="unsupported",
            )
    get = params.get
    image: ImageInput | list[ImageInput] | None = get("image")
    prompt: str | None = get("prompt")
    model: str | None = get("model")
    mask: ImageInput | None = get("mask")
    markup: ImageInput | None = get("markup")
    n: int | None = get("n")
    size: str | None = get("size")
    response_format: str | None = get("response_format")
    user: str | None = get("user")
    quality: str | None = get("quality")
    background: str | None = get("background")
    output_format: str | None = get("output_format")
    output_compression: int | None = get("output_compression")
    input_fidelity: str | None = get("input_fidelity")
    safety_identifier: str | None = get("safety_identifier")
    moderation: str | None = get("moderation")
    stream: bool | None = get("stream")
    partial_images: int | None = get("partial_images")
    timeout: float | None = get("timeout")
    max_retries: int | None = get("max_retries")
    retries_name = "max_retries"  # the name an error about it gives: the one the caller wrote
    if get("num_retries") is not None:  # LiteLLM's name (call_params made it max_retries)
        retries_name = "num_retries"
        max_retries = get("num_retries") if max_retries is None else max_retries
    api_key: str | None = get("api_key")
    api_base: str | None = get("api_base")
    api_version: str | None = get("api_version")
    vertex_project = _vertex_alias(get("vertex_project"), get("vertex_ai_project"), "project")
    vertex_location = _vertex_alias(get("vertex_location"), get("vertex_ai_location"), "location")
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
            "model: required (for example 'gpt-image-2'); dall-e-2, the old default, was shut "
            "down on 2026-05-12. Set TRACKING_DEFAULT_MODEL to choose a default.",
            param="model",
            rule="required",
        )
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValidationError(
            "prompt: required, a non-empty string", param="prompt", rule="required"
        )
    if image is None and not generating:
        raise ValidationError("image: required", param="image", rule="required")
    bare = model_without_name(model)
    if bare is not None:  # "gemini/": sent to OpenAI as is, with the key meant for Gemini
        raise ValidationError(
            f"model: {model!r} names the provider {bare!r} but no model after it "
            f"(for example '{bare}/<model>')",
            param="model",
            rule="required",
        )
    provider, upstream_model = split_provider(model)
    family = family_for(upstream_model, operation)

    n = _int_param("n", n, low=1, high=MAX_N)
    output_compression = _int_param("output_compression", output_compression, low=0, high=100)
    for name, value in (
        ("size", size),
        ("quality", quality),
        ("background", background),
        ("output_format", output_format),
        ("input_fidelity", input_fidelity),
        ("moderation", moderation),
        ("user", user),
        ("safety_identifier", safety_identifier),
    ):
        if value is not None:
            if not isinstance(value, str):
                raise ValidationError(
                    f"{name}: expected a string, got {type(value).__name__}",
                    param=name,
                    rule="type",
                )
            if not value.isascii():  # ASCII is text: the check's own first test, without a call
                require_text(name, value)
    if not model.isascii():
        require_text("model", model)
    if not prompt.isascii():
        require_text("prompt", prompt)
    for name, value in (("model", model), ("user", user), ("safety_identifier", safety_identifier)):
        if value is not None and (len(value) > MAX_ID_CHARS or not value.isprintable()):
            _require_id(name, value)
    if size is not None and not (size.isascii() and size.isprintable()):
        raise ValidationError(
            f"size: WIDTHxHEIGHT in ASCII digits or a size name such as 'auto', got {size!r}",
            param="size",
            rule="format",
        )
    if response_format is not None and response_format not in ("url", "b64_json"):
        raise ValidationError(
            f"response_format: must be 'url' or 'b64_json', got {response_format!r}",
            param="response_format",
            rule="enum",
        )

    api_key = check_api_key(api_key)
    api_base = check_api_base(api_base)
    if vertex_project is not None or vertex_location is not None:  # no work for other calls
        vertex_project, vertex_location = check_vertex_place(
            provider, vertex_project, vertex_location
        )
    metadata = _mapping("metadata", metadata)
    extra_body = _extra_body(_mapping("extra_body", extra_body))

    images = read_images(image, param="image") if image is not None else ()
    mask_file = read_image(mask, param="mask") if mask is not None else None
    markup_file = read_image(markup, param="markup") if markup is not None else None
    optional: dict[str, str | int | None] = {
        "quality": quality,
        "background": background,
        "moderation": moderation,
        "output_format": output_format,
        "output_compression": output_compression,
        "input_fidelity": input_fidelity,
        "response_format": response_format,
        "partial_images": partial_images,
    }
    dropped: frozenset[str] = frozenset()
    known = family if family is not None or not stream else family_for(upstream_model, "image_edit")
    if known is not None:
        call = Call(
            model=upstream_model,
            prompt=prompt,
            images=images,
            mask=mask_file,
            markup=markup_file,
            n=n,
            size=size,
            options={
                **{k: v for k, v in optional.items() if v is not None},
                **_body_options(extra_body, known, generating),
            },
            stream=bool(stream),
            operation=operation,
        )
        if family is not None:
            violations, dropped = _checked(call, family, drop_params)
        else:  # a family without a generation rule still says whether its models stream
            violations = list(streaming(call, known))
        if violations:
            raise ValidationError.from_violations(violations)
    sent_format = response_format
    if dropped:  # what drop_params drops, and b64_json for the models that answer it anyway
        quality = None if "quality" in dropped else quality
        background = None if "background" in dropped else background
        moderation = None if "moderation" in dropped else moderation
        output_format = None if "output_format" in dropped else output_format
        output_compression = None if "output_compression" in dropped else output_compression
        input_fidelity = None if "input_fidelity" in dropped else input_fidelity
        sent_format = None if "response_format" in dropped else response_format
        partial_images = None if "partial_images" in dropped else partial_images
        mask_file = None if "mask" in dropped else mask_file
        markup_file = None if "markup" in dropped else markup_file
    request = ImageEditRequest(
        model=model,
        provider=provider,
        upstream_model=upstream_model,
        prompt=prompt,
        images=images,
        mask=mask_file,
        markup=markup_file,
        n=n,
        size=size,
        quality=quality,
        background=background,
        output_format=output_format,
        output_compression=output_compression,
        input_fidelity=input_fidelity,
        response_format=sent_format,
        requested_response_format=response_format,
        user=user,
        safety_identifier=safety_identifier,
        extra_body=dict(extra_body),
        base_model=base_model,
        stream=bool(stream),
        partial_images=partial_images,
        operation=operation,
        moderation=moderation,
    )
    frozen_metadata = _frozen_metadata(metadata)
    options = CallOptions(
        api_key=api_key,
        api_base=api_base,
        api_version=api_version,
        vertex_project=vertex_project,
        vertex_location=vertex_location,
        timeout=_timeout(timeout),
        max_retries=DEFAULT_MAX_RETRIES
        if max_retries is None
        else _int_param(retries_name, max_retries, low=0, high=MAX_RETRIES) or 0,
        extra_headers=_headers(extra_headers),
        metadata=frozen_metadata,
        drop_params=drop_params,
        team=metadata_team(frozen_metadata),
        tags=metadata_tags(frozen_metadata),
    )
    return request, options


#: How many parameter sets that pass the per-model parameter rules are remembered (see
#: :func:`_checked`); past it the memory starts again empty. A set is only remembered when its
#: values are plain text, integers, booleans or None, of :data:`_MAX_REMEMBERED_CHARS` in all.
_MAX_REMEMBERED = 512
_MAX_REMEMBERED_CHARS = 1024
#: Parameter sets (:func:`_parameter_key`) that broke none of the parameter rules, and what
#: they drop.
_passed: dict[tuple[Any, ...], frozenset[str]] = {}


def _checked(
    call: Call, family: Family, drop_params: bool
) -> tuple[list[Violation], frozenset[str]]:
    """:func:`tracking.rules.check`, with the answer of the parameter rules remembered for a
    parameter set that passes them: they read nothing else (:data:`tracking.rules
    .PARAMETER_RULES`), so the same parameters get the same answer, and only the rules of the
    prompt and files run again. A set that breaks one is checked anew every time (its errors
    are never kept), and at most :data:`_MAX_REMEMBERED` small sets are held, so no input grows
    the memory without bound."""
    key = _parameter_key(call, drop_params)
    dropped = _passed.get(key)
    if dropped is None:
        found, dropped = check_parameters(call, family, drop_params=drop_params)
        if found:
            return check_call(call, family, dropped) + found, dropped
        if _rememberable(key):
            if len(_passed) >= _MAX_REMEMBERED:
                _passed.clear()
            _passed[key] = dropped
    return check_call(call, family, dropped), dropped


def _parameter_key(call: Call, drop_params: bool) -> tuple[Any, ...]:
    """Everything the parameter rules read: the model and operation (so the family), ``n``,
    ``size``, ``stream``, whether a mask or a markup was given, the options, and
    ``drop_params``."""
    return (
        call.model,
        call.operation,
        call.n,
        call.size,
        call.stream,
        bool(drop_params),
        call.mask is not None,
        call.markup is not None,
        *call.options.items(),
    )


_PLAIN = frozenset({str, int, bool, type(None)})


def _rememberable(key: tuple[Any, ...]) -> bool:
    """Whether ``key`` holds only plain values (no subclass: equal values then behave alike)
    of at most :data:`_MAX_REMEMBERED_CHARS` characters in all."""
    chars = 0
    for item in key:
        for value in item if type(item) is tuple else (item,):
            if type(value) not in _PLAIN:
                return False
            # an integer counts about its digits (3.3 bits each); it never goes through repr,
            # which refuses one past 4,300 digits
            chars += len(value) if type(value) is str else 1 + int.bit_length(value or 0) // 3
    return chars <= _MAX_REMEMBERED_CHARS


#: The most digits an ``extra_body`` range value sent as text may have (leading zeros included).
_MAX_RANGE_DIGITS = 18


def _body_options(
    extra_body: Mapping[str, Any], family: Family, generating: bool
) -> dict[str, str | int]:
    """The parameters ``family`` takes only through ``extra_body`` (2.6's ``complexity``,
    ``frame_count``), as the rules check them: a choice is text, a range an integer (an edit's
    multipart fields are all text, so there ASCII digits count as one). They are sent as they
    came; any other ``extra_body`` member is the upstream's to judge."""
    found: dict[str, str | int] = {}
    for name in sorted(family.body_params & extra_body.keys()):
        value = extra_body[name]
        if name in family.ranges:
            if isinstance(value, str) and not generating and value.isascii() and value.isdigit():
                if len(value) > _MAX_RANGE_DIGITS:  # int() refuses past 4,300 digits
                    raise ValidationError(
                        f"{name}: {value[:20]}... ({len(value)} digits) is out of range",
                        param=name,
                        rule="range",
                    )
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValidationError(
                    f"{name}: expected an integer, got {type(value).__name__}",
                    param=name,
                    rule="type",
                )
        elif not isinstance(value, str):
            raise ValidationError(
                f"{name}: expected a string, got {type(value).__name__}", param=name, rule="type"
            )
        found[name] = value
    return found


def is_text(value: str) -> bool:
    """Whether a UTF-8 request can carry ``value``: False for a lone UTF-16 surrogate
    (U+D800..U+DFFF, as a JSON ``"\\ud800"`` escape decodes), which every upstream, database and
    log would refuse or mangle after the call was billed."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def require_text(name: str, value: str) -> None:
    """A :class:`~tracking.errors.ValidationError` naming ``name`` unless :func:`is_text`."""
    if not is_text(value):
        raise ValidationError(
            f"{name}: not valid text (a lone UTF-16 surrogate)",
            param=name,
            rule="type",
            code="invalid_value",
        )


#: The longest end-user id (``user``, ``safety_identifier``) and model name a call takes: the
#: proxy's bound on ids too (``tracking.proxy.limits.MAX_ID_CHARS``). Both are indexed columns
#: of the ledger, and PostgreSQL refuses an index entry past about 8 KB: a longer id had the
#: billed call's row refused, set aside in quarantine, out of ``spend_logs``.
MAX_ID_CHARS = 256

#: Tags a call may carry (``metadata.tags``, with the proxy's ``x-litellm-tags``), each of at
#: most :data:`MAX_ID_CHARS` characters, as ``/global/spend/tags`` bounds the tags it is asked
#: for: LiteLLM documents no bound, and a 5,000-character tag was stored in the ledger.
MAX_TAGS = 64


def _require_id(name: str, value: str) -> None:
    """An end-user id or model name: at most :data:`MAX_ID_CHARS` characters, no control
    character (a line break would split every log line and CSV export that holds it)."""
    if len(value) > MAX_ID_CHARS:
        raise ValidationError(
            f"{name}: at most {MAX_ID_CHARS} characters, got {len(value):,}",
            param=name,
            rule="max_length",
        )
    if not value.isprintable() and any(
        unicodedata.category(c) == "Cc" for c in value
    ):  # isprintable is False for spaces other than " " too, which are text
        raise ValidationError(
            f"{name}: control characters (NUL, line breaks, tabs...) are not allowed",
            param=name,
            rule="format",
        )


def _vertex_alias(given: Any, alias: Any, what: str) -> Any:
    """``vertex_{what}``, or LiteLLM's other name for it, ``vertex_ai_{what}``: one setting
    (checked with the other Vertex AI settings); both with different values is a mistake."""
    if alias is None:
        return given
    if given is not None and str(given) != str(alias):  # a project number as int or text
        raise ConfigurationError(
            f"vertex_ai_{what} {alias!r} and vertex_{what} {given!r} differ; they are two names "
            f"for one setting: give vertex_{what} alone",
            param=f"vertex_{what}",
        )
    return alias


def _int_param(name: str, value: Any, *, low: int, high: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(
            f"{name}: expected an integer, got {type(value).__name__}", param=name, rule="type"
        )
    if not low <= value <= high:
        raise ValidationError(
            f"{name}: must be between {low} and {high}, got {value}",
            param=name,
            rule="range",
            code=range_code(value, low),
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


#: Headers that frame the request (its body's length, encoding and type, with the multipart
#: boundary; the connection): the HTTP client and the provider write them. Given again in
#: ``extra_headers`` they contradict the body (an untyped protocol error before sending, or a
#: request with both a length and chunked encoding that the upstream refuses).
_FRAMING_HEADERS = frozenset(
    {
        "connection",
        "content-length",
        "content-type",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)


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
        if not is_header_name(key):
            raise ValidationError(
                "extra_headers: a header name must be an HTTP token (letters, digits and "
                "!#$%&'*+-.^_`|~; no spaces, colons or line breaks)",
                param="extra_headers",
                rule="format",
            )
        if key.lower() in _FRAMING_HEADERS:
            raise ValidationError(
                f"extra_headers: {key!r} describes the request's body or connection, which the "
                "library writes itself (a header of yours would contradict it)",
                param="extra_headers",
                rule="unsupported",
            )
        problem = header_value_problem(item)
        if problem is not None:  # the value is never echoed: it may be a credential
            raise ValidationError(
                f"extra_headers: the value of {key!r}: {problem}",
                param="extra_headers",
                rule="format",
            )
        headers[key] = item
    return headers


def _mapping(name: str, value: Any) -> Mapping[str, Any]:
    """``metadata`` / ``extra_body``: None (empty) or a mapping with string keys, as given."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValidationError(
            f"{name}: expected a dict, got {type(value).__name__}", param=name, rule="type"
        )
    if not all(isinstance(key, str) for key in value):
        raise ValidationError(f"{name}: keys must be strings", param=name, rule="type")
    return value


def _frozen_metadata(value: Mapping[str, Any]) -> Mapping[str, Any]:
    try:
        return freeze_metadata(value)
    except ValueError as exc:
        rule = "max_size" if isinstance(exc, MetadataTooLarge) else "format"
        raise ValidationError(f"metadata: {exc}", param="metadata", rule=rule) from None


#: An integer team id or tag is recorded as its decimal text; one past 64 bits is no id.
_MAX_ID_INT = 2**63 - 1


def metadata_team(metadata: Mapping[str, Any]) -> str | None:
    """``metadata["team"]`` as the event records it: text as it is, an integer id as its
    decimal text (``5`` is ``"5"``), None when absent or None. Anything else (a bool, a float, a
    list...) is a :class:`~tracking.errors.ValidationError` naming ``metadata.team``: it was
    recorded as no team without a word."""
    team = metadata.get("team")
    return None if team is None else _label(team, "metadata.team", "expected")


def metadata_tags(metadata: Mapping[str, Any]) -> tuple[str, ...]:
    """``metadata["tags"]`` as the event records them: a list (or tuple) of strings, as
    LiteLLM's tags are (its ``request_tags``, the ``x-litellm-tags`` header's); none when
    absent or None. A bare string, a set or anything else, or a tag that is no string (an
    integer included: it was recorded as its text, while the error said strings), is a
    :class:`~tracking.errors.ValidationError` on ``metadata.tags`` whose message names the
    first such tag by its place (``metadata.tags[1]``); so is one of more than
    :data:`MAX_ID_CHARS` characters, or more than :data:`MAX_TAGS` tags."""
    tags = metadata.get("tags")
    if tags is None:
        return ()
    if not isinstance(tags, list | tuple):  # frozen metadata holds a list as a tuple
        raise ValidationError(
            f"metadata.tags: expected a list of strings, got {_kind(tags)}",
            param="metadata.tags",
            rule="type",
        )
    if len(tags) > MAX_TAGS:
        raise ValidationError(
            f"metadata.tags: at most {MAX_TAGS} tags, got {len(tags):,}",
            param="metadata.tags",
            rule="max_length",
            code="array_above_max_length",
        )
    for place, tag in enumerate(tags):
        if not isinstance(tag, str):
            raise ValidationError(
                f"metadata.tags[{place}]: each tag must be a string, got {_tag_kind(tag)}",
                param="metadata.tags",
                rule="type",
            )
        if len(tag) > MAX_ID_CHARS:
            raise ValidationError(
                f"metadata.tags[{place}]: at most {MAX_ID_CHARS} characters, got {len(tag):,}",
                param="metadata.tags",
                rule="max_length",
            )
    return tuple(tags)


def _tag_kind(tag: Any) -> str:
    """A tag that is no string, for its error: a short integer with its value and the text to
    write instead (``int 7; write it as "7"``), anything else by its type alone."""
    if type(tag) is int and abs(tag) <= _MAX_ID_INT:
        return f'int {tag}; write it as "{tag}"'
    return _kind(tag)


def _label(value: Any, param: str, expected: str) -> str:
    """A team or a tag: text as it is, an integer (64 bits at most, never a bool) as text."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        if not -_MAX_ID_INT - 1 <= value <= _MAX_ID_INT:
            raise ValidationError(
                f"{param}: an integer id must fit in 64 bits", param=param, rule="range"
            )
        return str(int(value))
    raise ValidationError(
        f"{param}: {expected} a string or an integer, got {_kind(value)}",
        param=param,
        rule="type",
    )


def _kind(value: Any) -> str:
    """A value's type as a caller wrote it: frozen metadata holds a dict as a read-only mapping
    (``mappingproxy``) and a list as a tuple, which are no names the caller ever used."""
    if isinstance(value, Mapping):
        return "an object (dict)"
    if isinstance(value, tuple):
        return "a list"
    return type(value).__name__


#: How deep ``extra_body`` values may nest (dicts and lists): a form field names every level.
MAX_EXTRA_BODY_DEPTH = 8
#: An ``extra_body`` integer longer than this (about 3,900 digits) is refused: Python will not
#: write one over 4,300 digits as text, for a form field or a JSON body.
_MAX_EXTRA_INT_BITS = 13_000
#: Parameters the call is priced, read and recorded by: ``extra_body`` may not set them (sent
#: after the call's own fields, the upstream would take its value and bill another model, size
#: or count than the ledger records, or answer in another shape, or for another end user).
_OWN_PARAMETERS = frozenset(
    {
        "model",
        "prompt",
        "image",
        "image[]",
        "mask",
        "markup",
        "n",
        "size",
        "quality",
        "output_format",
        "response_format",
        "stream",
        "partial_images",
        "user",
        "safety_identifier",
    }
)


def _extra_body(value: Mapping[str, Any], depth: int = MAX_EXTRA_BODY_DEPTH) -> Mapping[str, Any]:
    """``extra_body``, checked that every key, nested ones too, can name a form field or a JSON
    member (a non-empty text without control characters), every text value can be sent as
    UTF-8, and nothing nests deeper than :data:`MAX_EXTRA_BODY_DEPTH`: the body is encoded after
    the call has started, where a bad one would fail untyped."""
    for key, item in value.items():
        if not isinstance(key, str) or not key or not key.isprintable():
            raise ValidationError(  # a lone surrogate is not printable either
                f"extra_body: the key {key!r} cannot name a form field (empty, a control "
                "character or a lone UTF-16 surrogate)",
                param="extra_body",
                rule="format",
            )
        if depth == MAX_EXTRA_BODY_DEPTH and key in _OWN_PARAMETERS:
            raise ValidationError(
                f"extra_body: {key!r} is a parameter of the call; pass it as {key.rstrip('[]')}= "
                "(the call is priced and recorded by its own parameters, which extra_body would "
                "override upstream)",
                param="extra_body",
                rule="unsupported",
            )
        _extra_body_value(key, item, depth)
    return value


def _extra_body_value(key: str, item: Any, depth: int) -> None:
    if isinstance(item, str):
        if not is_text(item):
            raise ValidationError(
                f"extra_body: the value of {key!r} is not valid text (a lone UTF-16 surrogate)",
                param="extra_body",
                rule="type",
                code="invalid_value",
            )
        return
    if item is None or isinstance(item, bool):
        return
    if isinstance(item, int):
        if item.bit_length() > _MAX_EXTRA_INT_BITS:
            raise ValidationError(
                f"extra_body: the value of {key!r} is an integer too long to send as text "
                f"({item.bit_length():,} bits)",
                param="extra_body",
                rule="range",
            )
        return
    if isinstance(item, float):
        if not math.isfinite(item):  # JSON has no NaN or infinity; a form field no number
            raise ValidationError(
                f"extra_body: the value of {key!r} is {item!r}, not a finite number",
                param="extra_body",
                rule="range",
            )
        return
    if not isinstance(item, Mapping | list | tuple):  # a set, bytes, a Decimal, an object...
        raise ValidationError(
            f"extra_body: the value of {key!r} is {type(item).__name__}; expected text, a "
            "number, true or false, None, a list or a dict (what a JSON body or a form field "
            "can carry)",
            param="extra_body",
            rule="type",
        )
    if depth <= 1:
        raise ValidationError(
            f"extra_body: {key!r} nests deeper than {MAX_EXTRA_BODY_DEPTH} levels",
            param="extra_body",
            rule="max_depth",
        )
    if isinstance(item, Mapping):
        _extra_body(item, depth - 1)
    else:
        for member in item:
            _extra_body_value(key, member, depth - 1)


def form_items(name: str, value: Any) -> list[tuple[str, str]]:
    """One ``extra_body`` value as form fields, as the official clients send it: a mapping as
    ``name[key]``, a list as ``name[]`` once per item (nested alike), None left out."""
    if isinstance(value, Mapping):
        return [pair for k, v in value.items() for pair in form_items(f"{name}[{k}]", v)]
    if isinstance(value, list | tuple):
        return [pair for v in value for pair in form_items(f"{name}[]", v)]
    return [] if value is None else [(name, _form_value(value))]


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
