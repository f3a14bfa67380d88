"""Reading OpenAI's JSON ``/images/edits`` body into the SDK's parameters.

OpenAI's images API takes an edit as multipart (``image`` uploads, :mod:`tracking.proxy.form`)
or, with ``Content-Type: application/json``, as a JSON object whose ``images`` is a list of 1 to
16 image references, each ``{"image_url": ...}`` (an ``https://`` URL or a base64 ``data:``
URL) or ``{"file_id": "file-..."}``, with an optional ``mask`` (and ``markup``) written the same
way, a required ``prompt`` and the multipart form's other fields as JSON values. The body is
read under the same size limit and deadline as an upload (:func:`~tracking.proxy.form.read_body`)
and strictly (:func:`~tracking.proxy.json_io.load_json_object`); every fault is an
OpenAI-shaped 400 naming the field: an unknown key, a value of the wrong JSON type, ``images``
empty or longer than 16, an item with both or neither of ``image_url`` and ``file_id``.

What becomes of each reference (the decided design; docs/proxy.md, "JSON edits"):

* A ``data:`` URL is decoded here, bounded as an upload is (its decoded size counted on the
  upload bytes in flight before it is decoded, and refused past the SDK's
  :data:`~tracking.images.MAX_IMAGE_BYTES` per image), and becomes exactly the image a
  multipart upload of those bytes would: the call is the same call, for every provider
  (Gemini, FLUX, ...), checked by the same rules and priced the same way.
* An ``http(s)://`` URL or a ``file_id`` is never fetched (the proxy opens no connection a
  client names: no SSRF). It becomes an :class:`~tracking.images.ImageReference`, which only a
  provider whose upstream speaks OpenAI's images API (OpenAI, Azure, OpenAI-compatible servers)
  sends on, unchanged, as the same JSON body; the call is priced from the upstream's
  ``usage`` as any other. A model whose deployments include one of another provider is refused
  with a 400 naming the deployment (:func:`check_references`): send the bytes instead.

A budget's hold counts input images, not their size
(:data:`~tracking.pricing.estimate.INPUT_IMAGE_TOKENS` tokens each at a token-priced model's
input price, :func:`~tracking.pricing.estimate.input_image_count`), so an image of unknown size
is held exactly as an uploaded one is: a reference never lowers the hold.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable
from typing import Any

from ..images import MAX_IMAGE_BYTES, ImageReference
from ..providers import takes_references
from ..request import split_provider
from .client_metadata import take_metadata
from .errors import ProxyError
from .form import BOOL_FIELDS, INT_FIELDS, TEXT_FIELDS
from .generation_body import read_field
from .json_io import load_json_object
from .limits import mebibytes

__all__ = ["MAX_JSON_IMAGES", "check_references", "json_edit_params"]

#: OpenAI's bound on ``images`` in a JSON edit body.
MAX_JSON_IMAGES = 16
#: The longest ``http(s)://`` URL or ``file_id`` passed on (OpenAI's own URL bound is the
#: data URL's 20 MiB; a URL past a few kilobytes is no real client's).
_MAX_URL_CHARS = 8192
_MAX_FILE_ID_CHARS = 256
#: The keys of the body besides the form's text fields: the images, and the call's metadata.
_IMAGE_KEYS = ("images", "mask", "markup")
_KNOWN = frozenset({*_IMAGE_KEYS, *INT_FIELDS, *BOOL_FIELDS, *TEXT_FIELDS, "metadata"})
_REF_KEYS = frozenset({"image_url", "file_id"})
#: The short words the ledger records (bounded); ``prompt`` and ``user`` are read apart.
_TEXT_FIELDS = TEXT_FIELDS - {"prompt", "user"}

#: One image as the SDK's ``image`` parameter takes it: decoded bytes, or a reference.
ImageValue = tuple[str | None, bytes, str | None] | ImageReference


def _bad(message: str, param: str, code: str = "invalid_value") -> ProxyError:
    return ProxyError(400, message, param=param, code=code)


def json_edit_params(body: bytes, grow: Callable[[int], None] | None = None) -> dict[str, Any]:
    """The keyword arguments of ``tracking.aimage_edit`` that a JSON edit body spells.

    ``grow`` is told the body's size plus the decoded size of its ``data:`` URLs before they
    are decoded (the upload bytes in flight, which may refuse)."""
    payload = load_json_object(body)
    unknown = sorted(name for name in payload if name not in _KNOWN)
    if unknown:
        name = unknown[0]
        hint = (
            "; the JSON body names its images in 'images', a list of {\"image_url\": ...} or "
            "{\"file_id\": ...} ('image' is the multipart field)"
            if name in ("image", "image[]")
            else f"; it takes {', '.join(sorted(_KNOWN))}"
        )
        raise _bad(
            f"{name[:100]}: not a parameter of the JSON images.edit body{hint}",
            name[:100],
            "unknown_parameter",
        )
    # image and prompt are always present, so a missing one is the SDK's clear 400
    params: dict[str, Any] = {"image": None, "prompt": None}
    for name, value in payload.items():
        if value is None or name in _IMAGE_KEYS:  # JSON null: not given; images below
            continue
        if name == "metadata":
            metadata = take_metadata({"metadata": value})
            if metadata is not None:
                params["metadata"] = metadata
        else:  # every other known name is one of the form's (unknown ones are refused above)
            read_field(params, name, value, _TEXT_FIELDS)
    images = payload.get("images")
    if images is None:
        raise _bad(
            'images: required, a list of 1 to 16 {"image_url": ...} or {"file_id": ...}',
            "images",
            "missing_required_parameter",
        )
    if not isinstance(images, list):
        raise _bad("images: expected a list of image references", "images", "invalid_type")
    if not 1 <= len(images) <= MAX_JSON_IMAGES:
        raise _bad(
            f"images: takes 1 to {MAX_JSON_IMAGES} image references, got {len(images)}",
            "images",
        )
    named = [(f"images[{i}]", item) for i, item in enumerate(images)]
    named.extend((key, payload[key]) for key in ("mask", "markup") if payload.get(key) is not None)
    checked = [(where, _reference(item, where)) for where, item in named]
    if grow is not None:  # the decoded bytes join the body in memory: counted first
        grow(len(body) + sum(_decoded_size(v) for _, (kind, v) in checked if kind == "data"))
    values = {where: _image_value(where, kind, data) for where, (kind, data) in checked}
    params["image"] = [values[where] for where, _ in named[: len(images)]]
    for key in ("mask", "markup"):
        if key in values:
            params[key] = values[key]
    return params


def _reference(item: Any, where: str) -> tuple[str, str]:
    """One item checked as OpenAI's ImageRefParam: ``("data", base64)`` with its media type
    before, ``("url", url)`` or ``("file_id", id)``."""
    if not isinstance(item, dict):
        raise _bad(
            f'{where}: expected an object, {{"image_url": ...}} or {{"file_id": ...}}',
            where,
            "invalid_type",
        )
    extra = sorted(set(item) - _REF_KEYS)
    if extra:
        raise _bad(
            f"{where}: unknown key {extra[0][:100]!r}; an image reference takes image_url or "
            "file_id",
            where,
            "unknown_parameter",
        )
    given = [key for key in ("image_url", "file_id") if item.get(key) is not None]
    if len(given) != 1:
        raise _bad(
            f"{where}: give exactly one of image_url and file_id"
            + (" (both were given)" if given else ""),
            where,
        )
    key = given[0]
    value = item[key]
    if not isinstance(value, str):
        raise _bad(f"{where}.{key}: expected a string", where, "invalid_type")
    if key == "file_id":
        if not value or len(value) > _MAX_FILE_ID_CHARS or not _plain(value):
            raise _bad(
                f"{where}.file_id: expected a file id such as 'file-abc123' (printable ASCII, "
                f"at most {_MAX_FILE_ID_CHARS} characters)",
                where,
            )
        return "file_id", value
    if value[:5].lower() == "data:":
        return "data", value
    scheme = value.split(":", 1)[0].lower() if ":" in value else ""
    if scheme not in ("http", "https") or not value.split(":", 1)[1].startswith("//"):
        raise _bad(
            f"{where}.image_url: expected an https:// URL or a base64 data: URL "
            "(data:image/png;base64,...)",
            where,
        )
    if len(value) > _MAX_URL_CHARS or not _plain(value):
        raise _bad(
            f"{where}.image_url: a URL of printable ASCII without spaces, at most "
            f"{_MAX_URL_CHARS} characters",
            where,
        )
    return "url", value


def _plain(value: str) -> bool:
    return value.isascii() and value.isprintable() and " " not in value


def _decoded_size(data_url: str) -> int:
    """An upper bound of the bytes a ``data:`` URL decodes to."""
    return (len(data_url) - data_url.find(",") - 1) * 3 // 4 if "," in data_url else 0


def _image_value(where: str, kind: str, value: str) -> ImageValue:
    if kind == "file_id":
        return ImageReference.of(file_id=value)
    if kind == "url":
        return ImageReference.of(image_url=value)
    return _decode_data_url(where, value)


def _decode_data_url(where: str, value: str) -> tuple[str | None, bytes, str | None]:
    """A ``data:[<media type>];base64,<data>`` URL as the bytes and type an upload carries."""
    header, comma, encoded = value[5:].partition(",")
    options = [option.strip().lower() for option in header.split(";")]
    if not comma or "base64" not in options[1:]:
        raise _bad(
            f"{where}.image_url: a data: URL must be base64 (data:image/png;base64,...)", where
        )
    media_type = options[0]
    if media_type and not (media_type.startswith("image/") and _plain(media_type)):
        if media_type != "application/octet-stream":
            raise _bad(
                f"{where}.image_url: a data: URL of type {media_type[:60]!r}, not an image",
                where,
            )
        media_type = ""
    if _decoded_size(value) > MAX_IMAGE_BYTES:
        raise _bad(
            f"{where}.image_url: the data: URL holds more than the "
            f"{mebibytes(MAX_IMAGE_BYTES)} any image may be",
            where,
            "image_too_large",
        )
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise _bad(
            f"{where}.image_url: the data: URL's base64 is malformed (standard alphabet, "
            "padded, no spaces)",
            where,
        ) from None
    if not data:
        raise _bad(f"{where}.image_url: the data: URL holds no bytes", where)
    return None, data, media_type or None


def check_references(
    params: dict[str, Any], model: str, deployments: Iterable[tuple[str, str]]
) -> None:
    """Refuse (400) a call naming an image by URL or ``file_id`` when a deployment of its
    ``model`` (``(id, litellm model)`` pairs) has a provider that needs the bytes, naming it:
    the proxy fetches nothing, so such a deployment could only fail."""
    values = [*(params.get("image") or ()), params.get("mask"), params.get("markup")]
    if not any(isinstance(value, ImageReference) for value in values):
        return
    for deployment_id, target in deployments:
        provider, _ = split_provider(target)
        if not takes_references(provider):
            raise ProxyError(
                400,
                f"images: model {model!r} is served by deployment {deployment_id!r} "
                f"({target}, provider {provider}), which needs the image bytes; this proxy "
                "never fetches an image URL nor a file_id. Send the images themselves: "
                "multipart image uploads, or base64 data: URLs in the JSON body's images",
                param="images",
                code="image_reference_unsupported",
            )
