"""Providers: one module each, chosen through a registry keyed by the model's provider prefix.

``model="azure/my-deployment"`` picks the ``azure`` provider; a bare name, or a prefix that names
no provider, picks ``openai``. Built-in providers are imported on first use, so unused ones cost
nothing; :func:`register_provider` adds or replaces one at run time.

* ``openai`` (:mod:`.openai`): ``{api_base}/images/edits`` with a bearer key; OpenAI, or any
  compatible server given as ``api_base``;
* ``openai_compatible`` (:mod:`.compatible`): the same request to a server you must name, key
  optional;
* ``azure`` (:mod:`.azure`):
  ``{api_base}/openai/deployments/{deployment}/images/edits?api-version=...`` with ``api-key``;
* ``gemini`` (:mod:`.gemini`): Google's Gemini API,
  ``{api_base}/v1beta/models/{model}:generateContent`` with ``x-goog-api-key``; JSON both ways,
  answers turned into OpenAI's shape;
* ``vertex_ai`` (:mod:`.vertex_ai`): the same body to Vertex AI's ``generateContent`` for a
  project and location, with a bearer access token;
* ``black_forest_labs`` (:mod:`.black_forest_labs`): FLUX Kontext and Fill, submitted as a job
  and polled until its result is ready;
* ``stability`` (:mod:`.stability`): Stability AI's edit operations (inpaint, erase,
  search-and-replace, outpaint), multipart out, JSON in;
* ``recraft`` (:mod:`.recraft`): Recraft's image-to-image and inpainting, priced from the
  credits each answer reports;
* ``xai`` (:mod:`.xai`): xAI's Grok Imagine edits and generations, JSON with an edit's images
  as data URIs, priced from the cost each answer reports.

Each provider says which operations it serves in its ``operations`` attribute (edits only when
it has none); :func:`prepare_call` refuses any other with an
:class:`~tracking.errors.UnsupportedOperationError` before anything is sent, and ``stream=True``
with an :class:`~tracking.errors.UnsupportedParamsError` for a provider whose ``streams`` is
False (every one but OpenAI, Azure and OpenAI-compatible servers), whatever its model, and
``stream=True`` with ``n`` above 1 with a :class:`~tracking.errors.ValidationError` on ``n``,
also for a model the family table does not know (a stream ends at its first image).
OpenAI, Azure, OpenAI-compatible servers, Gemini, Vertex AI and xAI generate images as well as
edit them. An edit naming its images by reference (:class:`~tracking.images.ImageReference`: a
URL or a ``file_id``, from OpenAI's JSON edit body) goes only to a provider whose
``takes_image_references`` is True (OpenAI, Azure, OpenAI-compatible servers: it is sent on
unchanged); any other refuses it with an :class:`~tracking.errors.UnsupportedParamsError` on
``image`` before anything is sent, since nothing here fetches a URL (:func:`takes_references`).
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, cast

from ..endpoint import check_api_key, check_prepared
from ..errors import (
    ConfigurationError,
    UnsupportedOperationError,
    UnsupportedParamsError,
    ValidationError,
)
from ..rules import several_streamed_images
from .base import EDITS_ONLY, Poll, PreparedRequest, Provider

if TYPE_CHECKING:
    from ..request import CallOptions, ImageEditRequest

__all__ = [
    "Poll",
    "PreparedRequest",
    "Provider",
    "get_provider",
    "is_provider",
    "operations_of",
    "prepare_call",
    "prepares_heavily",
    "provider_names",
    "references_refused",
    "register_provider",
    "serves",
    "takes_references",
]

#: name -> "module:attribute"; imported on first use so unused providers cost nothing.
_REGISTRY: dict[str, str] = {
    "openai": "tracking.providers.openai:OpenAIProvider",
    "openai_compatible": "tracking.providers.compatible:CompatibleProvider",
    "azure": "tracking.providers.azure:AzureProvider",
    "gemini": "tracking.providers.gemini:GeminiProvider",
    "vertex_ai": "tracking.providers.vertex_ai:VertexAIProvider",
    "black_forest_labs": "tracking.providers.black_forest_labs:BlackForestLabsProvider",
    "stability": "tracking.providers.stability:StabilityProvider",
    "recraft": "tracking.providers.recraft:RecraftProvider",
    "xai": "tracking.providers.xai:XAIProvider",
}
_INSTANCES: dict[str, Provider] = {}


def register_provider(name: str, provider: Provider) -> None:
    """Add or replace a provider under ``name`` (used as ``name/model`` in ``model``)."""
    if not name or "/" in name:
        raise ConfigurationError(f"provider name {name!r}: must be non-empty, without '/'")
    _INSTANCES[name] = provider


def is_provider(name: str) -> bool:
    """Whether ``name`` is a registered provider (a prefix that selects it in ``model``)."""
    return name in _REGISTRY or name in _INSTANCES


def provider_names() -> list[str]:
    return sorted(set(_REGISTRY) | set(_INSTANCES))


def get_provider(name: str) -> Provider:
    provider = _INSTANCES.get(name)
    if provider is not None:
        return provider
    target = _REGISTRY.get(name)
    if target is None:
        known = ", ".join(provider_names())
        raise ConfigurationError(f"unknown provider {name!r}; known providers: {known}")
    module_name, _, attribute = target.partition(":")
    provider = cast(Provider, getattr(importlib.import_module(module_name), attribute)())
    _INSTANCES[name] = provider
    return provider


#: Input bytes from which a provider that writes images into JSON as base64 (``encodes_images``:
#: FLUX, Gemini, Vertex AI, xAI) is prepared off the event loop: encoding and serialising take
#: about 16 ms per MiB here, a 50 MB image most of a second.
ENCODED_OFF_THE_LOOP = 256 * 1024


def prepares_heavily(request: ImageEditRequest) -> bool:
    """Whether preparing ``request`` is work an event loop should not do: its mask decoded and
    converted (a provider with ``converts_masks``: FLUX, Stability, Recraft; up to 20 Mi
    pixels), or images of :data:`ENCODED_OFF_THE_LOOP` bytes or more encoded as base64."""
    if request.mask is None and not request.images:
        return False
    try:
        provider = get_provider(request.provider)
    except Exception:  # an unknown provider: prepare_call says so, on any thread
        return False
    if request.mask is not None and getattr(provider, "converts_masks", False):
        return True
    return bool(getattr(provider, "encodes_images", False)) and (
        request.input_bytes >= ENCODED_OFF_THE_LOOP
    )


def operations_of(provider: Provider) -> frozenset[str]:
    """The operations ``provider`` serves: its ``operations`` attribute, else edits only."""
    operations = getattr(provider, "operations", EDITS_ONLY)
    return operations if isinstance(operations, frozenset) else EDITS_ONLY


def serves(provider: Provider, model: str, operation: str) -> bool:
    """Whether ``provider`` does ``operation`` for ``model`` (its upstream name): one of its
    :func:`operations_of`, narrowed by its ``serves_model(model, operation)`` where it has one
    (Black Forest Labs generates with FLUX.2 alone)."""
    if operation not in operations_of(provider):
        return False
    narrowed = getattr(provider, "serves_model", None)
    return narrowed is None or bool(narrowed(model, operation))


def check_deployment(
    model: str, api_base: str | None, api_version: str | None, api_key: str | None = None
) -> None:
    """What can be known of a deployment before any call: its provider's own settings checks
    (``check_settings``: Azure's URL and API version, Stability's operations), where it has
    them, and, without an ``api_key`` of its own, the key its calls would read from the
    environment (the provider's ``key_variables``): set, and one a header can carry. A
    :class:`~tracking.errors.ConfigurationError` names what is wrong."""
    from ..request import split_provider

    name, upstream_model = split_provider(model)
    provider = get_provider(name)
    check = getattr(provider, "check_settings", None)
    if check is not None:
        check(upstream_model, api_base, api_version)
    variables: tuple[str, ...] = getattr(provider, "key_variables", ())
    if api_key is None and variables:
        found = next((v for v in variables if os.environ.get(v)), None)
        if found is None:
            raise ConfigurationError(
                f"api_key: not given, and {' nor '.join(variables)} is not set in the "
                "environment (every call would fail)"
            )
        try:
            check_api_key(os.environ[found])
        except ConfigurationError as exc:
            raise ConfigurationError(f"{exc.message} (from {found})") from None


def takes_references(provider_name: str) -> bool:
    """Whether the provider ``provider_name`` sends image references (URLs, file ids) on to its
    upstream (its ``takes_image_references``); False for an unknown one."""
    try:
        provider = get_provider(provider_name)
    except ConfigurationError:
        return False
    return getattr(provider, "takes_image_references", False) is True


def references_refused(provider_name: str, where: str) -> UnsupportedParamsError:
    """The refusal of an edit naming its images by URL or file id, for a provider that needs
    their bytes; ``where`` names the model or deployment."""
    return UnsupportedParamsError(
        f"image: {where} (provider {provider_name}) needs the image bytes, and this proxy and "
        "SDK never fetch an image URL nor a file_id; send the images themselves (multipart "
        "image uploads, or data: URLs in the JSON body's images)",
        param="image",
        rule="image_reference",
    )


def prepare_call(
    request: ImageEditRequest, options: CallOptions
) -> tuple[Provider, PreparedRequest]:
    """The request's provider and its prepared HTTP request; an
    :class:`~tracking.errors.UnsupportedOperationError` when the provider cannot do the
    request's operation, a :class:`~tracking.errors.ConfigurationError` when the request cannot
    be sent as built (a key no header can carry, a URL that is not a plain http(s) one; see
    :mod:`tracking.endpoint`)."""
    provider = get_provider(request.provider)
    if request.operation not in operations_of(provider):
        served = ", ".join(sorted(operations_of(provider)))
        raise UnsupportedOperationError(
            f"model: the {request.provider} provider does not serve {request.operation} "
            f"(it serves {served}); choose a model of a provider that does",
            operation=request.operation,
            provider=request.provider,
        )
    if not serves(provider, request.upstream_model, request.operation):
        raise UnsupportedOperationError(
            f"model: the {request.provider} provider does not serve {request.operation} with "
            f"{request.upstream_model!r}; choose a model that does",
            operation=request.operation,
            provider=request.provider,
        )
    if request.stream and getattr(provider, "streams", True) is False:
        # Its upstream answers whole, whatever the request says: sent, the call was billed and
        # then failed as "not a stream of events" (every model the family table does not know:
        # Recraft's, Stability's operations, FLUX.2, a new Gemini model).
        raise UnsupportedParamsError(
            f"stream: the {request.provider} provider does not stream its answer; call without "
            "stream=True",
            param="stream",
            rule="unsupported",
        )
    if request.stream and request.n is not None and request.n > 1:
        # a model the family table does not know (an Azure deployment, an OpenAI-compatible
        # server's): its stream would end at its first image, the others billed unseen
        raise ValidationError.from_violations([several_streamed_images(request.n)])
    if request.references and getattr(provider, "takes_image_references", False) is not True:
        raise references_refused(request.provider, f"model {request.model!r}")
    prepared = provider.prepare(request, options)
    # A key or URL from the environment is held to the rules the call's own were (request.py).
    check_prepared(prepared.url, prepared.headers, prepared.secrets)
    return provider, prepared
