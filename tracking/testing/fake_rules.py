"""The fake upstream's own request checks, written from OpenAI's documentation independently of
the SDK's rule table: if one side gets a rule wrong, a test sees the two disagree.

:func:`check_edit` returns the first problem as ``(status, message, param, code)`` worded as
OpenAI words it, or None when the request is acceptable; :func:`check_generation` does the same
for a ``/images/generations`` JSON body (read from OpenAI's ``images.generate`` reference: the
edit's parameters without images, mask and ``input_fidelity``; both take ``moderation``). Models
the fake does not know are refused as OpenAI refuses them, unless the fake was told to serve
them (``extra_models``), as an OpenAI-compatible server would; those, and Azure deployments of
unknown names, get only the checks every model shares.
"""

from __future__ import annotations

from collections.abc import Collection

from .fake_images import inspect

__all__ = [
    "DALL_E_2",
    "EXTRA_QUALITY_MODELS",
    "FLEXIBLE_SIZE_MODELS",
    "GIF_SVG_MODELS",
    "GPT_IMAGE_MODELS",
    "MARKUP_MODELS",
    "Problem",
    "check_edit",
    "check_generation",
    "json_edit_fields",
]

Problem = tuple[int, str, str | None, str | None]
Upload = tuple[str, str, str, bytes]  # (field name, filename, content type, bytes)

DALL_E_2 = "dall-e-2"
#: The 2.5 and 2.6 models: gpt-image-2's flexible sizes plus the ``xhigh`` and ``max`` qualities.
EXTRA_QUALITY_MODELS = frozenset(
    {
        "gpt-image-2.5-flare",
        "gpt-image-2.5-flare-2026-09-08",
        "gpt-image-2.5-sunburst",
        "gpt-image-2.5-sunburst-2026-09-08",
        "gpt-image-2.6-flare",
        "gpt-image-2.6-sunburst",
    }
)
#: The 2.6 models, which also answer an animated GIF or an SVG (OpenAI's model pages, read
#: 2026-12-05): ``complexity`` low/medium/high; for gif ``frame_count`` 2 to 16 and
#: ``frame_duration_ms`` at least 20, no stream, partial images, mask or compression; svg only
#: for a generation of one image.
GIF_SVG_MODELS = frozenset({"gpt-image-2.6-flare", "gpt-image-2.6-sunburst"})
FLEXIBLE_SIZE_MODELS = frozenset({"gpt-image-2", "gpt-image-2-2026-04-21"}) | EXTRA_QUALITY_MODELS
GPT_IMAGE_MODELS = (
    frozenset({"gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5", "chatgpt-image-latest"})
    | FLEXIBLE_SIZE_MODELS
)
#: The models that take a ``markup`` file: "A transparent PNG overlaid on the first image to
#: guide the edit. Must match that image's dimensions after orientation and contain transparent
#: pixels. Supports GPT Image 2.5. Cannot be combined with mask." (OpenAI's images.edit
#: reference as openai-python 3.63 carries it, read 2026-12-07); 2.6 too (OpenRouter's image
#: API reference: "OpenAI gpt-image-2.6", read 2026-12-07).
MARKUP_MODELS = EXTRA_QUALITY_MODELS
MB = 1024 * 1024


def _invalid(message: str, param: str | None, code: str | None = "invalid_value") -> Problem:
    return 400, message, param, code


def _flexible_size_ok(size: str) -> bool:
    width, sep, height = size.partition("x")
    if not (sep and width.isdigit() and height.isdigit()):
        return False
    w, h = int(width), int(height)
    return (
        w > 0
        and h > 0
        and w % 16 == 0
        and h % 16 == 0
        and max(w, h) <= 3840
        and max(w, h) <= 3 * min(w, h)
        and 655_360 <= w * h <= 8_294_400
    )


def _check_shared(fields: dict[str, str], images: list[Upload]) -> Problem | None:
    if not fields.get("prompt"):
        return _invalid("Missing required parameter: 'prompt'.", "prompt", "missing_required")
    if not images:
        return _invalid("Missing required parameter: 'image'.", "image", "missing_required")
    try:
        n = int(fields.get("n", "1"))
    except ValueError:
        return _invalid(f"Invalid value for 'n': {fields['n']!r}.", "n")
    if not 1 <= n <= 10:
        return _invalid(f"Invalid 'n': integer between 1 and 10 expected, got {n}.", "n")
    return None


def _check_dall_e_2(
    fields: dict[str, str], images: list[Upload], mask: Upload | None
) -> Problem | None:
    if len(fields["prompt"]) > 1000:
        return _invalid("Invalid 'prompt': maximum length is 1000 characters.", "prompt")
    if len(images) != 1:
        return _invalid("dall-e-2 edits exactly one image.", "image")
    header = inspect(images[0][3])
    if header is None or header[0] != "png":
        return _invalid("Invalid image: dall-e-2 needs a PNG image.", "image", "invalid_image")
    if len(images[0][3]) >= 4 * MB:
        return _invalid("Invalid image: must be less than 4 MB.", "image", "image_too_large")
    if header[1] != header[2]:
        return _invalid("Invalid image: dall-e-2 needs a square image.", "image", "invalid_image")
    if fields.get("size", "1024x1024") not in ("256x256", "512x512", "1024x1024"):
        return _invalid(f"Invalid size {fields['size']!r} for dall-e-2.", "size")
    if fields.get("response_format", "url") not in ("url", "b64_json"):
        return _invalid("Invalid 'response_format': url or b64_json.", "response_format")
    for name in (
        "background",
        "output_format",
        "output_compression",
        "input_fidelity",
        "moderation",
        "stream",
        "partial_images",
    ):
        if name in fields:
            return _invalid(f"Unknown parameter: '{name}'.", name, "unknown_parameter")
    return _check_mask(images, mask, 4 * MB)


def _check_gpt_image(
    model: str,
    fields: dict[str, str],
    images: list[Upload],
    mask: Upload | None,
    *,
    generation: bool = False,
) -> Problem | None:
    if len(fields["prompt"]) > 32000:
        return _invalid("Invalid 'prompt': maximum length is 32000 characters.", "prompt")
    if len(images) > 16:
        return _invalid("Invalid 'image': at most 16 images.", "image")
    for upload in images:
        header = inspect(upload[3])
        if header is None or header[0] not in ("png", "jpeg", "webp"):
            return _invalid(
                f"Invalid image file {upload[1]!r}: png, jpeg or webp expected.",
                "image",
                "invalid_image_format",
            )
        if len(upload[3]) >= 50 * MB:
            return _invalid("Invalid image: must be less than 50 MB.", "image", "image_too_large")
    if "response_format" in fields:
        return _invalid(
            f"Unknown parameter: 'response_format'. ({model} always returns b64_json)",
            "response_format",
            "unknown_parameter",
        )
    size = fields.get("size", "auto")
    standard = ("1024x1024", "1536x1024", "1024x1536", "auto")
    if size not in standard and not (model in FLEXIBLE_SIZE_MODELS and _flexible_size_ok(size)):
        return _invalid(f"Invalid value for 'size': {size!r}.", "size")
    qualities = ("low", "medium", "high", "auto")
    animated = ("gif", "svg") if model in GIF_SVG_MODELS else ()
    enums = {
        "quality": (*qualities, "xhigh", "max") if model in EXTRA_QUALITY_MODELS else qualities,
        "background": ("transparent", "opaque", "auto"),
        "output_format": ("png", "jpeg", "webp", *animated),
        "input_fidelity": ("low", "high"),
        "moderation": ("low", "auto"),
    }
    for name, allowed in enums.items():
        if name in fields and fields[name] not in allowed:
            return _invalid(f"Invalid value for '{name}': {fields[name]!r}.", name)
    if "input_fidelity" in fields and model == "gpt-image-1-mini":
        return _invalid("input_fidelity is not supported for gpt-image-1-mini.", "input_fidelity")
    # OpenAI's image generation guide: gpt-image-2 takes background opaque or auto, and no
    # input_fidelity (every input is read at high fidelity)
    if model in ("gpt-image-2", "gpt-image-2-2026-04-21"):
        if fields.get("background") == "transparent":
            return _invalid("Transparent background is not supported for this model.", "background")
        if "input_fidelity" in fields:
            return _invalid("input_fidelity is not supported for this model.", "input_fidelity")
    problem = _check_stream(fields)
    if problem is not None:
        return problem
    output_format = fields.get("output_format", "png")
    problem = _check_gif_svg(model, fields, output_format, mask, generation=generation)
    if problem is not None:
        return problem
    if fields.get("background") == "transparent" and output_format == "jpeg":
        return _invalid("Transparent background needs png, webp, gif or svg output.", "background")
    if "output_compression" in fields:
        raw = fields["output_compression"]
        if not raw.isdigit() or int(raw) > 100:
            return _invalid("Invalid 'output_compression': 0 to 100.", "output_compression")
        if output_format not in ("jpeg", "webp"):
            return _invalid(
                "output_compression is only for jpeg and webp output.", "output_compression"
            )
    return _check_mask(images, mask, 4 * MB)  # a mask: 'a valid PNG file, less than 4MB'


def _check_gif_svg(
    model: str,
    fields: dict[str, str],
    output_format: str,
    mask: Upload | None,
    *,
    generation: bool,
) -> Problem | None:
    """The 2.6 models' ``complexity``, frames, gif and svg; other models know none of them."""
    names = ("complexity", "frame_count", "frame_duration_ms")
    if model not in GIF_SVG_MODELS:
        for name in names:
            if name in fields:
                return _invalid(f"Unknown parameter: '{name}'.", name, "unknown_parameter")
        return None
    if fields.get("complexity", "high") not in ("low", "medium", "high"):
        return _invalid(f"Invalid value for 'complexity': {fields['complexity']!r}.", "complexity")
    for name, low, high in (("frame_count", 2, 16), ("frame_duration_ms", 20, None)):
        if name not in fields:
            continue
        raw = fields[name]
        if not raw.isdigit() or int(raw) < low or (high is not None and int(raw) > high):
            bounds = f"{low} to {high}" if high is not None else f"at least {low}"
            return _invalid(f"Invalid '{name}': {bounds}.", name)
        if output_format != "gif":
            return _invalid(f"'{name}' is only for gif output.", name)
    if output_format == "gif":
        if fields.get("stream", "false").lower() in ("true", "1"):
            return _invalid("gif output cannot be streamed.", "stream")
        if mask is not None:
            return _invalid("gif output takes no mask.", "mask")
    if output_format == "svg":
        if not generation:
            return _invalid("svg output is only for generations of one image.", "output_format")
        if fields.get("n", "1") != "1":
            return _invalid("svg output makes one image: n must be 1.", "n")
    return None


def _check_stream(fields: dict[str, str]) -> Problem | None:
    """``stream`` is a boolean; ``partial_images`` is 0 to 3 and only streamed answers have any."""
    stream = fields.get("stream", "false").lower()
    if stream not in ("true", "false", "1", "0"):
        return _invalid(f"Invalid value for 'stream': {fields['stream']!r}.", "stream")
    if "partial_images" in fields:
        raw = fields["partial_images"]
        if not raw.isdigit() or int(raw) > 3:
            return _invalid("Invalid 'partial_images': 0 to 3.", "partial_images")
        if stream not in ("true", "1"):
            return _invalid("partial_images is only for streamed answers.", "partial_images")
    if stream in ("true", "1") and fields.get("n", "1") != "1":
        return _invalid("Streaming is only supported with n=1.", "n", "unsupported_parameter")
    return None


def _check_mask(images: list[Upload], mask: Upload | None, limit: int) -> Problem | None:
    if mask is None:
        return None
    header = inspect(mask[3])
    if header is None or header[0] != "png":
        return _invalid("Invalid mask: must be a PNG image.", "mask", "invalid_image")
    if len(mask[3]) >= limit:
        return _invalid("Invalid mask: too large.", "mask", "image_too_large")
    if not header[3]:
        return _invalid("Invalid mask: needs an alpha channel.", "mask", "invalid_image")
    first = inspect(images[0][3])
    if first is not None and first[1:3] != header[1:3]:
        return _invalid(
            "Invalid mask: must have the same dimensions as the image.", "mask", "invalid_image"
        )
    return None


def _check_markup(
    model: str, images: list[Upload], mask: Upload | None, markup: Upload | None
) -> Problem | None:
    if markup is None:
        return None
    if model not in MARKUP_MODELS:
        return _invalid("Unknown parameter: 'markup'.", "markup", "unknown_parameter")
    if mask is not None:
        return _invalid("markup cannot be combined with mask.", "markup")
    header = inspect(markup[3])
    if header is None or header[0] != "png":
        return _invalid("Invalid markup: must be a PNG image.", "markup", "invalid_image")
    if len(markup[3]) >= 50 * MB:
        return _invalid("Invalid markup: must be less than 50 MB.", "markup", "image_too_large")
    if not header[3]:
        return _invalid(
            "Invalid markup: must contain transparent pixels.", "markup", "invalid_image"
        )
    first = inspect(images[0][3])
    if first is not None and first[1:3] != header[1:3]:
        return _invalid(
            "Invalid markup: must have the same dimensions as the first image.",
            "markup",
            "invalid_image",
        )
    return None


def check_edit(
    model: str,
    fields: dict[str, str],
    images: list[Upload],
    mask: Upload | None,
    *,
    markup: Upload | None = None,
    extra_models: Collection[str] = (),
    deployment: str | None = None,
) -> Problem | None:
    """The first problem of one edit request, or None."""
    problem = _check_shared(fields, images)
    if problem is not None:
        return problem
    if model == DALL_E_2:
        return _check_dall_e_2(fields, images, mask) or _check_markup(model, images, mask, markup)
    if model in GPT_IMAGE_MODELS:
        return _check_gpt_image(model, fields, images, mask) or _check_markup(
            model, images, mask, markup
        )
    if model in extra_models or deployment is not None:
        return None
    return 404, f"The model '{model}' does not exist.", "model", "model_not_found"


#: The JSON type each generation parameter must have (OpenAI's ``images.generate`` reference).
_GENERATION_TYPES: dict[str, tuple[type, ...]] = {
    "prompt": (str,),
    "model": (str,),
    "n": (int,),
    "size": (str,),
    "quality": (str,),
    "background": (str,),
    "moderation": (str,),
    "output_format": (str,),
    "output_compression": (int,),
    "response_format": (str,),
    "style": (str,),
    "user": (str,),
    "safety_identifier": (str,),
    "stream": (bool,),
    "partial_images": (int,),
    "complexity": (str,),
    "frame_count": (int,),
    "frame_duration_ms": (int,),
}


#: The JSON type of each field of an edit's JSON body (OpenAI's ``EditImageBodyJsonParam``):
#: the generation's, less its own ``style``, plus ``input_fidelity``; the images are read apart.
_EDIT_JSON_TYPES: dict[str, tuple[type, ...]] = {
    **{name: types for name, types in _GENERATION_TYPES.items() if name != "style"},
    "input_fidelity": (str,),
}


def generation_fields(body: dict[str, object]) -> dict[str, str] | Problem:
    """A generation's JSON body as the text fields the edit checks read, or its type problem."""
    return _typed_fields(body, _GENERATION_TYPES)


def json_edit_fields(body: dict[str, object]) -> dict[str, str] | Problem:
    """An edit's JSON body, but its ``images``, ``mask`` and ``markup``, as the text fields the
    edit checks read, or its type problem."""
    rest = {k: v for k, v in body.items() if k not in ("images", "mask", "markup")}
    return _typed_fields(rest, _EDIT_JSON_TYPES)


def _typed_fields(
    body: dict[str, object], types: dict[str, tuple[type, ...]]
) -> dict[str, str] | Problem:
    fields: dict[str, str] = {}
    for name, value in body.items():
        if value is None:
            continue
        allowed = types.get(name)
        if allowed is None:
            return _invalid(f"Unknown parameter: '{name}'.", name, "unknown_parameter")
        if not isinstance(value, allowed) or (bool not in allowed and isinstance(value, bool)):
            return _invalid(f"Invalid type for '{name}'.", name, "invalid_type")
        fields[name] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return fields


def check_generation(
    model: str,
    fields: dict[str, str],
    *,
    extra_models: Collection[str] = (),
    deployment: str | None = None,
) -> Problem | None:
    """The first problem of one generation request (its fields as text), or None."""
    if not fields.get("prompt"):
        return _invalid("Missing required parameter: 'prompt'.", "prompt", "missing_required")
    n = int(fields.get("n", "1"))
    if not 1 <= n <= 10:
        return _invalid(f"Invalid 'n': integer between 1 and 10 expected, got {n}.", "n")
    if fields.get("moderation", "auto") not in ("low", "auto"):
        return _invalid(f"Invalid value for 'moderation': {fields['moderation']!r}.", "moderation")
    if model in GPT_IMAGE_MODELS:
        if "style" in fields:
            return _invalid("Unknown parameter: 'style'.", "style", "unknown_parameter")
        return _check_gpt_image(model, fields, [], None, generation=True)
    if model in extra_models or deployment is not None:
        return None
    return 404, f"The model '{model}' does not exist.", "model", "model_not_found"
