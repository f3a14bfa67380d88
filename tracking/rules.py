"""The per-model rules of an image edit, read from the family table, checked before any I/O.

:func:`check` runs every rule of :data:`RULES` over one call and returns every broken one as a
:class:`~tracking.errors.Violation`, so a caller fixes them all in one go. Each rule is a small
function of the call and its :class:`~tracking.families.Family`; the numbers and names it checks
against live in the table, not here. Calls to models of no known family are not checked here
at all (the generic checks in :mod:`tracking.request` still apply).

A parameter the family does not take is dropped instead of refused when ``drop_params=True``;
``response_format="b64_json"`` is always dropped for GPT image models, which return base64
anyway and refuse the parameter itself (docs/architecture.md, "Validation").
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from .errors import Violation, range_code
from .families import Family, ImageRule, SizeRule, pixel_size
from .frozen import fast_init
from .images import ImageFile, ImageReference

__all__ = [
    "CALL_RULES",
    "PARAMETER_RULES",
    "RULES",
    "Call",
    "check",
    "check_call",
    "check_parameters",
]


@fast_init
@dataclass(frozen=True, slots=True)
class Call:
    """What the rules look at: the model, the prompt, the images and the optional parameters."""

    model: str
    prompt: str
    images: tuple[ImageFile, ...]
    mask: ImageFile | None
    n: int | None
    size: str | None
    #: the optional model-specific parameters the caller set (quality, background, ...)
    options: Mapping[str, str | int]
    #: the caller asked for a streamed answer (``stream=True``)
    stream: bool = False
    #: ``image_edit`` or ``image_generation``
    operation: str = "image_edit"
    #: the ``markup`` file drawn over the first image (GPT Image 2.5 and 2.6)
    markup: ImageFile | None = None


Rule = Callable[[Call, Family], Iterator[Violation]]


def _allowed(values: frozenset[str]) -> str:
    return ", ".join(repr(v) for v in sorted(values))


def _mb(limit: int) -> str:
    return f"{limit // (1024 * 1024)} MB"


def supported_params(call: Call, family: Family) -> Iterator[Violation]:
    for name, value in call.options.items():
        if family.takes(name):
            continue
        if name == "response_format":
            if value == "b64_json":
                continue  # dropped silently: GPT image models always answer in base64
            message = (
                f"response_format: {call.model} always returns base64 (b64_json) and does not "
                f"accept response_format={value!r}; remove it, or pass drop_params=True to drop it"
            )
        else:
            message = (
                f"{name}: {call.model} does not take this parameter; remove it, or pass "
                "drop_params=True to drop it"
            )
        yield Violation(name, "unsupported", message, unsupported=True)


def enumerated_values(call: Call, family: Family) -> Iterator[Violation]:
    for name, value in call.options.items():
        allowed = family.choices.get(name)
        if allowed is not None and value not in allowed:
            yield Violation(
                name,
                "enum",
                f"{name}: {call.model} takes {_allowed(allowed)}, got {value!r}",
            )


def integer_ranges(call: Call, family: Family) -> Iterator[Violation]:
    for name, value in call.options.items():
        bounds = family.ranges.get(name)
        if bounds is None or not isinstance(value, int):
            continue
        low, high = bounds
        if value < low or (high is not None and value > high):
            allowed = f"{low} to {high}" if high is not None else f"at least {low}"
            yield Violation(
                name,
                "range",
                f"{name}: {call.model} takes {allowed}, got {value}",
                openai_code=range_code(value, low),
            )


def size(call: Call, family: Family) -> Iterator[Violation]:
    if call.size is None or call.size in family.sizes:
        return
    fixed = _allowed(family.sizes)
    if family.custom_size is None:
        yield Violation("size", "enum", f"size: {call.model} takes {fixed}, got {call.size!r}")
        return
    problem = _custom_size_problem(call.size, family.custom_size)
    if problem:
        yield Violation(
            "size",
            problem[0],
            f"size: {call.model} takes {fixed} or WIDTHxHEIGHT with {problem[1]}; "
            f"got {call.size!r}",
        )


def _custom_size_problem(value: str, rule: SizeRule) -> tuple[str, str] | None:
    parsed = pixel_size(value)
    if parsed is None:
        return "format", "both sides whole numbers of pixels"
    width, height = parsed
    if width == 0 or height == 0 or width % rule.multiple_of or height % rule.multiple_of:
        return "multiple_of", f"both sides multiples of {rule.multiple_of}"
    if max(width, height) > rule.max_side:
        return "max_side", f"no side above {rule.max_side}"
    if max(width, height) > rule.max_aspect * min(width, height):
        return "aspect", f"an aspect ratio within {rule.max_aspect:g}:1 and 1:{rule.max_aspect:g}"
    if not rule.min_pixels <= width * height <= rule.max_pixels:
        return (
            "pixels",
            f"between {rule.min_pixels:,} and {rule.max_pixels:,} pixels in all",
        )
    return None


def n_images(call: Call, family: Family) -> Iterator[Violation]:
    if call.n is not None and call.n > family.max_n:
        most = "1 image per call" if family.max_n == 1 else f"1 to {family.max_n} images"
        yield Violation(
            "n",
            "range",
            f"n: {call.model} makes {most}, got {call.n}",
            openai_code="integer_above_max_value",
        )


def prompt_length(call: Call, family: Family) -> Iterator[Violation]:
    if len(call.prompt) > family.max_prompt_chars:
        yield Violation(
            "prompt",
            "max_length",
            f"prompt: {call.model} takes at most {family.max_prompt_chars} characters, "
            f"got {len(call.prompt)}",
        )


def image_count(call: Call, family: Family) -> Iterator[Violation]:
    if len(call.images) > family.max_images:
        yield Violation(
            "image",
            "max_images",
            f"image: {call.model} takes at most {family.max_images} image(s), "
            f"got {len(call.images)}",
        )


def _file_problems(file: ImageFile, rule: ImageRule, param: str, model: str) -> Iterator[Violation]:
    if isinstance(file, ImageReference):
        return  # a URL or file id: its bytes are the upstream's to fetch and check
    if file.format not in rule.formats:
        shown = file.format.upper() if file.format else "not a recognised image"
        yield Violation(
            param,
            "format",
            f"{param}: {model} takes {'/'.join(sorted(rule.formats)).upper()} files; "
            f"{file.filename!r} is {shown}",
        )
        return
    if len(file.content) >= rule.max_bytes:
        yield Violation(
            param,
            "max_bytes",
            f"{param}: {model} takes files under {_mb(rule.max_bytes)}; {file.filename!r} is "
            f"{len(file.content):,} bytes",
        )
    if rule.square and file.width != file.height:
        yield Violation(
            param,
            "square",
            f"{param}: {model} takes square images; {file.filename!r} is {file.dimensions}",
        )
    if rule.needs_alpha and not file.has_alpha:
        yield Violation(
            param, "alpha", f"{param}: {_NEEDS_ALPHA[param]}; {file.filename!r} has none"
        )


#: Why a file needs an alpha channel, by parameter.
_NEEDS_ALPHA = {
    "mask": "the mask needs an alpha channel (its fully transparent pixels mark where to edit)",
    "markup": "the markup needs an alpha channel (a transparent PNG drawn over the first image)",
}


def image_files(call: Call, family: Family) -> Iterator[Violation]:
    for file in call.images:
        yield from _file_problems(file, family.image, "image", call.model)
    limit = family.max_total_bytes
    total = sum(len(file.content) for file in call.images)
    if limit is not None and len(call.images) > 1 and total >= limit:
        yield Violation(
            "image",
            "max_total_bytes",
            f"image: {call.model} takes images of under {_mb(limit)} in all; these are "
            f"{total:,} bytes",
        )


def mask_file(call: Call, family: Family) -> Iterator[Violation]:
    mask = call.mask
    if mask is None:
        return
    if family.mask is None:
        yield Violation(
            "mask",
            "unsupported",
            f"mask: {call.model} does not take a mask (describe the area to change in the "
            "prompt instead); remove it, or pass drop_params=True to drop it",
            unsupported=True,
        )
        return
    yield from _file_problems(mask, family.mask, "mask", call.model)
    yield from _first_image_size(call, mask, "mask")


def _first_image_size(call: Call, file: ImageFile, param: str) -> Iterator[Violation]:
    first = call.images[0] if call.images else None
    if (
        first is not None
        and first.width is not None
        and file.width is not None
        and (file.width, file.height) != (first.width, first.height)
    ):
        yield Violation(
            param,
            "dimensions",
            f"{param}: must have the image's dimensions ({first.dimensions}); "
            f"{file.filename!r} is {file.dimensions}",
        )


def markup_file(call: Call, family: Family) -> Iterator[Violation]:
    """A ``markup`` (a transparent PNG drawn over the first image): only for the families that
    take one, never with a mask, a PNG with an alpha channel of the first image's size."""
    markup = call.markup
    if markup is None:
        return
    if family.markup is None:
        yield Violation(
            "markup",
            "unsupported",
            f"markup: {call.model} does not take a markup (GPT Image 2.5 and 2.6 do); remove "
            "it, or pass drop_params=True to drop it",
            unsupported=True,
        )
        return
    if call.mask is not None:
        yield Violation(
            "markup",
            "exclusive",
            "markup: cannot be combined with mask; send one or the other",
        )
    yield from _file_problems(markup, family.markup, "markup", call.model)
    yield from _first_image_size(call, markup, "markup")


def _output_format(call: Call, family: Family) -> str | None:
    value = call.options.get("output_format", family.default_output_format)
    return value if isinstance(value, str) else None


def transparent_background(call: Call, family: Family) -> Iterator[Violation]:
    if call.options.get("background") != "transparent" or not family.takes("background"):
        return
    output_format = _output_format(call, family)
    if output_format not in family.transparent_formats:
        yield Violation(
            "background",
            "needs_format",
            f"background: 'transparent' needs output_format "
            f"{_allowed(family.transparent_formats)}, got {output_format!r}",
        )


def compression_format(call: Call, family: Family) -> Iterator[Violation]:
    if "output_compression" not in call.options or not family.takes("output_compression"):
        return
    output_format = _output_format(call, family)
    if output_format not in family.compression_formats:
        yield Violation(
            "output_compression",
            "needs_format",
            f"output_compression: only for output_format "
            f"{_allowed(family.compression_formats)}, got {output_format!r}",
        )


def streaming(call: Call, family: Family) -> Iterator[Violation]:
    if call.stream and not family.streams:
        yield Violation(
            "stream",
            "unsupported",
            f"stream: {call.model} does not stream its answer; call without stream=True",
            unsupported=True,
        )
    elif call.stream and call.n is not None and call.n > 1:
        yield several_streamed_images(call.n)


def several_streamed_images(n: int) -> Violation:
    """``stream=True`` with ``n`` above 1, refused for every model, known or not: each streamed
    event carries one image and OpenAI refuses a stream of several ("Streaming is only supported
    with n=1.", unsupported_parameter); a stream ends at its first completed event, so the rest
    would be billed and never delivered nor recorded."""
    return Violation(
        "n",
        "stream_single_image",
        f"n: a streamed answer is one image, got n={n}; ask for n=1, or call "
        "without stream=True for several images",
    )


def animated_output(call: Call, family: Family) -> Iterator[Violation]:
    """An animated format (gif) is answered whole: no stream, no partial images, no mask; the
    frame parameters are for it alone."""
    output_format = _output_format(call, family)
    if output_format not in family.animated_formats:
        for name in sorted(family.animation_params & call.options.keys()):
            yield Violation(
                name,
                "needs_format",
                f"{name}: only for output_format {_allowed(family.animated_formats)}, "
                f"got {output_format!r}",
            )
        return
    if call.stream:
        yield Violation(
            "stream",
            "needs_format",
            f"stream: output_format {output_format!r} is not streamed; call without stream=True",
        )
    if "partial_images" in call.options:
        yield Violation(
            "partial_images",
            "needs_format",
            f"partial_images: output_format {output_format!r} has no partial images",
        )
    if call.mask is not None:
        yield Violation(
            "mask",
            "needs_format",
            f"mask: output_format {output_format!r} takes no mask; remove it",
        )


def single_generation_format(call: Call, family: Family) -> Iterator[Violation]:
    """A format only a generation of one image can have (svg)."""
    output_format = _output_format(call, family)
    if output_format not in family.single_generation_formats:
        return
    if call.operation != "image_generation":
        yield Violation(
            "output_format",
            "needs_generation",
            f"output_format: {output_format!r} is only for a generation (images.generate) of "
            "one image, not an edit",
        )
    elif call.n is not None and call.n > 1:
        yield Violation(
            "n",
            "range",
            f"n: output_format {output_format!r} makes one image, got {call.n}",
            openai_code="integer_above_max_value",
        )


#: The rules that read the call's prompt, images, mask or markup file, run on every call.
CALL_RULES: tuple[Rule, ...] = (
    prompt_length,
    image_count,
    image_files,
    mask_file,
    markup_file,
)
#: The rules that read only the call's parameters (model, operation, ``n``, ``size``, the
#: options, ``stream``, whether a mask or markup was given): the same answer for the same
#: parameters, so :func:`tracking.request.parse_call` remembers which parameter sets pass them.
PARAMETER_RULES: tuple[Rule, ...] = (
    n_images,
    size,
    supported_params,
    enumerated_values,
    integer_ranges,
    transparent_background,
    compression_format,
    streaming,
    animated_output,
    single_generation_format,
)
#: Every rule, in the order their violations are reported.
RULES: tuple[Rule, ...] = CALL_RULES + PARAMETER_RULES


def check(
    call: Call, family: Family, *, drop_params: bool = False
) -> tuple[list[Violation], frozenset[str]]:
    """Every broken rule of ``call``, and the parameters to leave out of the request."""
    found, dropped = check_parameters(call, family, drop_params=drop_params)
    return check_call(call, family, dropped) + found, dropped


def check_parameters(
    call: Call, family: Family, *, drop_params: bool = False
) -> tuple[list[Violation], frozenset[str]]:
    """The broken :data:`PARAMETER_RULES` of ``call`` but those of a dropped parameter, and the
    parameters to leave out of the request."""
    dropped = {
        name
        for name, value in call.options.items()
        if not family.takes(name)
        and (drop_params or (name == "response_format" and value == "b64_json"))
    }
    if drop_params and call.mask is not None and family.mask is None:
        dropped.add("mask")
    if drop_params and call.markup is not None and family.markup is None:
        dropped.add("markup")
    found = [v for rule in PARAMETER_RULES for v in rule(call, family)]
    return [v for v in found if not (v.unsupported and v.param in dropped)], frozenset(dropped)


def check_call(call: Call, family: Family, dropped: frozenset[str]) -> list[Violation]:
    """The broken :data:`CALL_RULES` of ``call`` but those of a ``dropped`` parameter."""
    found = [v for rule in CALL_RULES for v in rule(call, family)]
    return [v for v in found if not (v.unsupported and v.param in dropped)]
