"""The image-edit model families and their rules: one data table, matched by exact model name.

Each :class:`Family` says what its edit endpoint accepts: sizes, the values of each enumerated
parameter (and so which parameters it takes at all), image formats and byte limits, how many
images, how long a prompt. :mod:`tracking.rules` reads this table and nothing else, so adding a
model or a family is a data change. Unknown names belong to no family and get only the generic
checks: an OpenAI-compatible server may know models we do not.

Sources: OpenAI's API reference for ``POST /v1/images/edits`` and its image-generation guide
(sizes, qualities, formats, the 4 MB / 50 MB limits: images under 50 MB, a mask under 4 MB,
gpt-image-2's flexible sizes). The 2.5 and
2.6 models (Flare and Sunburst, read 2026-12-03): the same flexible sizes as gpt-image-2
(docs.comfy.org's GPT Image 2.6 node page) and two more qualities, ``xhigh`` and ``max``
(docs.apiyi.com's GPT-image-2.5 launch notes). Streaming and ``partial_images`` for the GPT
image models were read on 2026-12-03 too. The 2.6 models' own outputs and parameters (read
2026-12-05) are sourced where they are defined below (``_GPT_IMAGE_2_6``).

Generations (``POST /v1/images/generations``) take the same sizes, qualities, formats, ``n``,
``moderation`` (``low`` or ``auto``) and streaming as edits for the GPT image models, without
``input_fidelity`` (OpenAI's API reference for ``images.generate``, as the official clients'
``ImageGenerateParams`` spell it, read 2026-12-03). Edits take ``moderation`` too: OpenAI's
images.edit reference lists it for the GPT image models, 2 and 2.5 included
(https://developers.openai.com/api/reference/resources/images/methods/edit, as the OpenAPI
document 2.3.0's ``EditImageBodyJsonParam`` carries it, read 2026-12-07). Gemini's image models
generate from a prompt alone through the same ``generateContent`` call. A family's
:class:`GenerationRule` says this; :func:`family_for` gives the family's rules for one
operation. A family without one (FLUX Kontext, dall-e-2) is checked only by the generic rules
for a generation, and its provider decides whether it can make one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

__all__ = [
    "FAMILIES",
    "Family",
    "GenerationRule",
    "ImageRule",
    "SizeRule",
    "family_for",
    "family_of",
    "pixel_size",
    "resolution_tier",
    "tier_side",
]

MB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ImageRule:
    """What an input image (or mask) must be."""

    formats: frozenset[str]  #: short format names: "png", "jpeg", "webp"
    max_bytes: int  #: strictly less than this many bytes
    square: bool = False
    needs_alpha: bool = False


@dataclass(frozen=True, slots=True)
class SizeRule:
    """Free ``WIDTHxHEIGHT`` sizes beyond the fixed list (gpt-image-2)."""

    multiple_of: int
    max_side: int
    min_pixels: int
    max_pixels: int
    max_aspect: float  #: long side / short side


def _choices(**values: tuple[str, ...]) -> Mapping[str, frozenset[str]]:
    return MappingProxyType({name: frozenset(allowed) for name, allowed in values.items()})


@dataclass(frozen=True, slots=True)
class GenerationRule:
    """How a family's generations differ from its edits (same sizes, formats and limits)."""

    #: enumerated parameters only generations take, with their values
    choices: Mapping[str, frozenset[str]] = field(default_factory=lambda: MappingProxyType({}))
    #: parameters only edits take (``input_fidelity``)
    edit_only: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True, eq=False)
class Family:
    """One model family and what its edit endpoint accepts."""

    name: str
    models: frozenset[str]
    max_images: int
    max_prompt_chars: int
    image: ImageRule
    #: None: the family takes no mask (an ``UnsupportedParamsError``, dropped with drop_params)
    mask: ImageRule | None
    sizes: frozenset[str]
    #: the enumerated parameters the family takes, with their allowed values; a parameter absent
    #: here is one the family does not take (an ``UnsupportedParamsError``)
    choices: Mapping[str, frozenset[str]]
    #: the integer parameters the family takes, with their inclusive range (no upper bound: None)
    ranges: Mapping[str, tuple[int, int | None]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    custom_size: SizeRule | None = None
    max_n: int = 10
    #: output formats that can carry ``background="transparent"``
    transparent_formats: frozenset[str] = frozenset()
    #: output formats ``output_compression`` applies to
    compression_formats: frozenset[str] = frozenset()
    default_output_format: str | None = None
    #: all input images together must be smaller than this many bytes (inline request limits)
    max_total_bytes: int | None = None
    #: the edit endpoint can answer as Server-Sent Events (``stream=True``, ``partial_images``
    #: in :attr:`ranges`)
    streams: bool = False
    #: what its generations take differently; None: the family documents no generations
    generation: GenerationRule | None = None
    #: parameters of :attr:`choices` / :attr:`ranges` that have no argument of their own: they
    #: come in ``extra_body`` (through the proxy, as any other field) and are checked there
    body_params: frozenset[str] = frozenset()
    #: output formats that are animations (``gif``): not streamed, no ``partial_images``, no mask
    animated_formats: frozenset[str] = frozenset()
    #: parameters only an animated output format takes (``frame_count``, ...)
    animation_params: frozenset[str] = frozenset()
    #: output formats only a generation of one image can have (``svg``)
    single_generation_formats: frozenset[str] = frozenset()
    #: what a ``markup`` file (a transparent PNG drawn over the first image to guide the edit;
    #: never with a mask) must be; None: the family takes none (an ``UnsupportedParamsError``,
    #: dropped with drop_params)
    markup: ImageRule | None = None

    @property
    def takes_response_format(self) -> bool:
        """``response_format`` is a real parameter (dall-e-2); GPT image models return base64."""
        return "response_format" in self.choices

    def takes(self, param: str) -> bool:
        return param in self.choices or param in self.ranges

    @property
    def max_pixels(self) -> int:
        """The most pixels an image of this family can have (its largest size)."""
        listed = (w * h for w, h in filter(None, map(pixel_size, self.sizes)))
        free = self.custom_size.max_pixels if self.custom_size else 0
        return max(free, *listed, 0)


def pixel_size(size: str | None) -> tuple[int, int] | None:
    """``"WIDTHxHEIGHT"`` as ``(width, height)`` in ASCII digits; None for anything else (a size
    name such as ``auto``, full-width digits, which ``int`` would read but no API takes, or a
    side of more than :data:`_MAX_SIDE_DIGITS` digits, which ``int`` refuses past 4,300)."""
    width, sep, height = (size or "").partition("x")
    if sep and _is_side(width) and _is_side(height):
        return int(width), int(height)
    return None


#: The most digits a size's side may have (leading zeros included) to be read as a number.
_MAX_SIDE_DIGITS = 9


def _is_side(text: str) -> bool:
    return len(text) <= _MAX_SIDE_DIGITS and text.isascii() and text.isdigit()


def tier_side(tier: str) -> int | None:
    """The side in pixels of a resolution tier named as Google names them (``512`` is 512,
    ``1K`` 1024, ``2K`` 2048, ``4K`` 4096); None for any other name."""
    if tier == "512":  # Gemini 3.1 Flash Image's smallest tier, named by its side
        return 512
    count = tier[:-1]
    return int(count) * 1024 if tier.endswith("K") and _is_side(count) else None


def resolution_tier(width: int, height: int, tiers: Sequence[str]) -> str:
    """The tier of ``tiers`` (smallest first) an image of ``width`` x ``height`` is made and billed
    at: the smallest whose side is at least two thirds of the long side (OpenAI's 1536x1024 is
    1K, 2048 or 1920 wide 2K, 4096 4K; 512x512 or 768x512 the 512 tier where a model has one),
    else the largest."""
    long_side = max(width, height)
    return next((t for t in tiers if long_side <= (tier_side(t) or 0) * 1.5), tiers[-1])


_DALL_E_2 = Family(
    name="dall-e-2",
    models=frozenset({"dall-e-2"}),
    max_images=1,
    max_prompt_chars=1000,
    image=ImageRule(formats=frozenset({"png"}), max_bytes=4 * MB, square=True),
    mask=ImageRule(formats=frozenset({"png"}), max_bytes=4 * MB, needs_alpha=True),
    sizes=frozenset({"256x256", "512x512", "1024x1024"}),
    choices=_choices(response_format=("url", "b64_json"), quality=("standard",)),
)

_GPT_IMAGE = Family(
    name="gpt-image-1",
    models=frozenset({"gpt-image-1", "gpt-image-1.5", "chatgpt-image-latest"}),
    max_images=16,
    max_prompt_chars=32000,
    image=ImageRule(formats=frozenset({"png", "webp", "jpeg"}), max_bytes=50 * MB),
    # images under 50 MB, but the mask "a valid PNG file, less than 4MB" for every model
    # (OpenAI's images.edit reference, as the official clients' ImageEditParams carry it,
    # openai-python src/openai/types/image_edit_params.py, read 2026-12-05); every family made
    # from this one (mini, 2, 2.5, 2.6) inherits it.
    mask=ImageRule(formats=frozenset({"png"}), max_bytes=4 * MB, needs_alpha=True),
    sizes=frozenset({"1024x1024", "1536x1024", "1024x1536", "auto"}),
    choices=_choices(
        quality=("low", "medium", "high", "auto"),
        background=("transparent", "opaque", "auto"),
        output_format=("png", "jpeg", "webp"),
        input_fidelity=("low", "high"),
        moderation=("low", "auto"),
    ),
    # partial_images: 0 to 3, only with stream=True (OpenAI's API reference, images.edit)
    ranges=MappingProxyType({"output_compression": (0, 100), "partial_images": (0, 3)}),
    transparent_formats=frozenset({"png", "webp"}),
    compression_formats=frozenset({"jpeg", "webp"}),
    default_output_format="png",
    streams=True,
    generation=GenerationRule(edit_only=frozenset({"input_fidelity"})),
)

_GPT_IMAGE_MINI = dataclasses.replace(
    _GPT_IMAGE,
    name="gpt-image-1-mini",
    models=frozenset({"gpt-image-1-mini"}),
    # input_fidelity is documented as unsupported for gpt-image-1-mini.
    choices=MappingProxyType(
        {k: v for k, v in _GPT_IMAGE.choices.items() if k != "input_fidelity"}
    ),
)

# gpt-image-2 takes no transparent background and no ``input_fidelity``: OpenAI's image
# generation guide ("`background`: `opaque` or `auto`; `transparent` is not supported for
# `gpt-image-2`"; "For `gpt-image-2`, omit this parameter; the API doesn't allow changing it
# because the model processes every image input at high fidelity automatically"), as quoted by
# OpenAI's own skills (github.com/openai/skills, imagegen references, read 2026-12-05); OpenAI
# answers 400 "Transparent background is not supported for this model.", unbilled
# (docs.apiyi.com/en/live/2026-10/gpt-image-2-transparent-shutdown, 2026-10-15: a preview
# opened on 2026-08-21 was closed on 2026-09-30). The 2.5 and 2.6 models take a transparent
# background again (same page; measured on 2.6 on 2026-11-12, see below); ``input_fidelity``
# is documented for neither, so they keep it and the upstream decides.
_GPT_IMAGE_2 = dataclasses.replace(
    _GPT_IMAGE,
    name="gpt-image-2",
    models=frozenset({"gpt-image-2", "gpt-image-2-2026-04-21"}),
    choices=MappingProxyType(
        {
            **{k: v for k, v in _GPT_IMAGE.choices.items() if k != "input_fidelity"},
            "background": frozenset({"opaque", "auto"}),
        }
    ),
    # Any WxH with both sides multiples of 16, aspect within 3:1, 655,360 to 8,294,400 pixels
    # (3840x2160), no side above 3840.
    custom_size=SizeRule(
        multiple_of=16, max_side=3840, min_pixels=655_360, max_pixels=8_294_400, max_aspect=3.0
    ),
)

# ``markup``: "A transparent PNG overlaid on the first image to guide the edit. Must match that
# image's dimensions after orientation and contain transparent pixels. Supports GPT Image 2.5.
# Cannot be combined with mask." (OpenAI's images.edit reference as openai-python 3.63's
# ImageEditParams carries it, read 2026-12-07; sent as a multipart file). The 2.6 models take it
# too: OpenRouter's image API reference ("honored by models with markup-guided editing (OpenAI
# gpt-image-2.6)", openrouter.ai/docs/client-sdks/python/components/markup, read 2026-12-07);
# OpenAI's own pages found that day are silent on 2.6, so 2.6 inherits 2.5's rule (the upstream
# decides). No byte limit is documented: the image's 50 MB is kept.
_MARKUP = ImageRule(formats=frozenset({"png"}), max_bytes=50 * MB, needs_alpha=True)

_GPT_IMAGE_2_5 = dataclasses.replace(
    _GPT_IMAGE_2,
    markup=_MARKUP,
    name="gpt-image-2.5",
    models=frozenset(
        {
            "gpt-image-2.5-flare",
            "gpt-image-2.5-flare-2026-09-08",
            "gpt-image-2.5-sunburst",
            "gpt-image-2.5-sunburst-2026-09-08",
        }
    ),
    choices=MappingProxyType(
        {
            **_GPT_IMAGE.choices,
            "quality": frozenset({*_GPT_IMAGE.choices["quality"], "xhigh", "max"}),
        }
    ),
)

# The 2.6 models (read 2026-12-05) also answer an animated GIF or an SVG: OpenAI's model page
# (https://developers.openai.com/de-DE/api/docs/models/gpt-image-2.6-sunburst, "Ausgabe als SVG
# oder animiertes GIF"). ``complexity`` low/medium/high, ``frame_count`` 2 to 16 (default 9)
# and ``frame_duration_ms`` (default 200) for gif: OpenAI's own Codex image tool
# (github.com/openai/codex rust-v0.168.0, codex-rs/ext/image-generation/
# imagegen_gif_description.md: "2-16 frames", "9 frames, 200 ms per frame") and Replicate's 2.6
# schemas (replicate.com/openai/gpt-image-2.6-flare/versions/87277bd4.../api: frame_count 2 to
# 16, default 9, complexity default high; "'svg' ... works only for generation with one
# image"). ``frame_duration_ms`` at least 20, and a gif not streamed and taking no
# ``partial_images``, mask or ``output_compression``: OpenAI's images.edit reference as
# translated by w3cschool.cn (updated 2026-11-11; read through the 2026-12-05 price audit, not
# found again by search that day, so medium confidence). A transparent background works with
# gif and svg too (docs.apiyi.com/en/faq/gpt-image-output-format-background, measured
# 2026-11-12: only jpeg refuses it).
# ``frame_duration_ms`` has no upper bound in OpenAI's pages (read 2026-12-05); the longest
# frame a GIF can hold is its format's: GIF89a's Graphic Control Extension keeps a frame's
# delay in 16 bits of hundredths of a second (https://www.w3.org/Graphics/GIF/spec-gif89a.txt),
# 65,535 cs = 655,350 ms. A longer value cannot be made; it is refused, not sent.
_GIF_MAX_MS = 655_350
_GPT_IMAGE_2_6 = dataclasses.replace(
    _GPT_IMAGE_2_5,
    name="gpt-image-2.6",
    models=frozenset({"gpt-image-2.6-flare", "gpt-image-2.6-sunburst"}),
    choices=MappingProxyType(
        {
            **_GPT_IMAGE_2_5.choices,
            "output_format": frozenset({"png", "jpeg", "webp", "gif", "svg"}),
            "complexity": frozenset({"low", "medium", "high"}),
        }
    ),
    ranges=MappingProxyType(
        {**_GPT_IMAGE_2_5.ranges, "frame_count": (2, 16), "frame_duration_ms": (20, _GIF_MAX_MS)}
    ),
    transparent_formats=frozenset({"png", "webp", "gif", "svg"}),
    body_params=frozenset({"complexity", "frame_count", "frame_duration_ms"}),
    animated_formats=frozenset({"gif"}),
    animation_params=frozenset({"frame_count", "frame_duration_ms"}),
    single_generation_formats=frozenset({"svg"}),
)

# Gemini's native image models (``gemini/`` and ``vertex_ai/``), from Google's image-generation
# guide and model pages (read 2026-12-03): PNG/JPEG/WebP inputs sent inline, up to 14 reference
# images (3 for gemini-2.5-flash-image), one image per request, no mask and none of OpenAI's
# quality/background/format options. Inline data is bounded by the request size limit (100 MB
# since 2026-01-08; base64 grows data by 4/3, so 75 MB of images). Any WIDTHxHEIGHT is accepted
# and mapped to the nearest aspect ratio the model offers, within its widest ratio.
_GEMINI_IMAGE_RULE = ImageRule(formats=frozenset({"png", "jpeg", "webp"}), max_bytes=75 * MB)
_GEMINI_SIZES = frozenset({"1024x1024", "1536x1024", "1024x1536", "auto"})
_GEMINI_ANY_SIZE = SizeRule(
    multiple_of=1, max_side=8192, min_pixels=1, max_pixels=8192 * 8192, max_aspect=8.0
)
_GEMINI_FLASH = Family(
    name="gemini-3.1-flash-image",
    models=frozenset({"gemini-3.1-flash-image", "gemini-3.1-flash-image-preview"}),
    max_images=14,
    max_prompt_chars=200_000,
    image=_GEMINI_IMAGE_RULE,
    mask=None,
    sizes=_GEMINI_SIZES,
    choices=_choices(),
    custom_size=_GEMINI_ANY_SIZE,
    max_n=1,
    max_total_bytes=75 * MB,
    generation=GenerationRule(),  # the same generateContent call, with the prompt alone
)
_GEMINI_PRO = dataclasses.replace(
    _GEMINI_FLASH,
    name="gemini-3-pro-image",
    models=frozenset({"gemini-3-pro-image", "gemini-3-pro-image-preview"}),
    custom_size=dataclasses.replace(_GEMINI_ANY_SIZE, max_aspect=2.4),  # 21:9
)
# Nano Banana 2.1 (Google's changelog of 2026-10-06, read 2026-12-07: the update of
# gemini-3.1-flash-image, with its wide ratios), up to 14 reference images (LiteLLM's day-0
# announcement, github.com/BerriAI/litellm/discussions/44983, read 2026-12-07)
_GEMINI_NANO_BANANA_21 = dataclasses.replace(
    _GEMINI_FLASH,
    name="gemini-nano-banana-2.1",
    models=frozenset({"gemini-nano-banana-2.1"}),
)
# Nano Banana 2 Lite (generally available 2026-06-30, Google's changelog): up to 14 images, the
# wide ratios, 1K output alone (Google's Vertex AI model page, read 2026-12-07)
_GEMINI_FLASH_LITE = dataclasses.replace(
    _GEMINI_FLASH,
    name="gemini-3.1-flash-lite-image",
    models=frozenset({"gemini-3.1-flash-lite-image"}),
)
_GEMINI_25_FLASH = dataclasses.replace(
    _GEMINI_PRO,
    name="gemini-2.5-flash-image",
    models=frozenset({"gemini-2.5-flash-image"}),
    max_images=3,
)

# Black Forest Labs' FLUX.1 Kontext (``black_forest_labs/``), from BFL's API reference (read
# 2026-12-03): the image and up to three more references as base64, an aspect ratio between 21:9
# and 9:21, PNG or JPEG out, one image per job; a mask sends the edit to FLUX.1 Fill instead.
_FLUX_KONTEXT = Family(
    name="flux-kontext",
    models=frozenset({"flux-kontext-pro", "flux-kontext-max"}),
    max_images=4,
    max_prompt_chars=10_000,
    image=ImageRule(formats=frozenset({"png", "jpeg", "webp"}), max_bytes=20 * MB),
    mask=ImageRule(formats=frozenset({"png"}), max_bytes=20 * MB, needs_alpha=True),
    sizes=frozenset({"1024x1024", "1536x1024", "1024x1536", "auto"}),
    choices=_choices(output_format=("png", "jpeg")),
    custom_size=SizeRule(
        multiple_of=1, max_side=8192, min_pixels=1, max_pixels=8192 * 8192, max_aspect=21 / 9
    ),
    max_n=1,
    default_output_format="png",
)

# Black Forest Labs' FLUX.2 (``black_forest_labs/flux-2-...``), from BFL's API reference and
# editing guide and its own integration guide (github.com/black-forest-labs/skills, read
# 2026-12-07): the image and up to seven more references (three for [klein]) as base64, a size as
# width and height (at least 64, multiples of 16, at most 4 MP), PNG, JPEG or WebP out (the
# OpenAPI's OutputFormat), one image per job, no mask; prompts of up to 32K tokens (a bound in
# characters four times that). BFL states no byte limit for FLUX.2 inputs: Kontext's 20 MB.
_FLUX_2 = Family(
    name="flux-2",
    models=frozenset({"flux-2-pro", "flux-2-max", "flux-2-flex"}),
    max_images=8,
    max_prompt_chars=128_000,
    image=ImageRule(formats=frozenset({"png", "jpeg", "webp"}), max_bytes=20 * MB),
    mask=None,
    sizes=frozenset({"1024x1024", "1536x1024", "1024x1536", "auto"}),
    choices=_choices(output_format=("png", "jpeg", "webp")),
    custom_size=SizeRule(
        multiple_of=16, max_side=4096, min_pixels=64 * 64, max_pixels=2048 * 2048, max_aspect=64
    ),
    max_n=1,
    default_output_format="png",
    # generations: the same endpoint and sizes without an input image (BFL's integration guide,
    # references/endpoints.md, "FLUX.2 Text-to-Image Endpoints", read 2026-12-07)
    generation=GenerationRule(),
)
_FLUX_2_KLEIN = dataclasses.replace(
    _FLUX_2,
    name="flux-2-klein",
    models=frozenset({"flux-2-klein-4b", "flux-2-klein-9b"}),
    max_images=4,
)

# xAI's Grok Imagine (``xai/``), from xAI's image guides and API reference (read 2026-12-03):
# JSON with the image(s) as URLs or base64 data URIs, up to three references, 1 to 10 outputs, no
# mask in xAI's own guides (so none is sent), no ``size`` (xAI refuses it): a size is mapped to
# the nearest of xAI's aspect ratios, 1:2 to 2:1 or wider (20:9), and to its 1k or 2k resolution.
# Generations (``POST /v1/images/generations``, xAI's image generation guide and API reference,
# read 2026-12-07) take the same JSON without images: the same ``n``, aspect ratios, resolutions
# and ``response_format``, no mask.
_GROK_IMAGINE = Family(
    name="grok-imagine-image",
    models=frozenset({"grok-imagine-image"}),
    max_images=3,
    # xAI states no prompt limit for edits: a generous bound, the rest is xAI's to judge
    max_prompt_chars=32_000,
    # 20 MB per image: xAI's stated limit for images sent to Grok (unconfirmed for edits)
    image=ImageRule(formats=frozenset({"png", "jpeg", "webp"}), max_bytes=20 * MB),
    mask=None,
    sizes=frozenset({"1024x1024", "1536x1024", "1024x1536", "auto"}),
    choices=_choices(response_format=("url", "b64_json")),
    custom_size=SizeRule(
        multiple_of=1, max_side=3072, min_pixels=1, max_pixels=2048 * 2048, max_aspect=20 / 9
    ),
    max_n=10,
    generation=GenerationRule(),  # the same JSON to images/generations, without images
)
# Grok Imagine Image 2.0 (``xai/grok-imagine-image-2.0``), from xAI's release notes and its
# migration guide for grok-imagine-image-quality (https://docs.x.ai/release-notes.md,
# https://docs.x.ai/developers/migration/imagine-image-quality-nov-2, read 2026-12-07): the same
# endpoints and JSON, up to five source images for an edit, and ``quality`` (``low``,
# ``medium`` or ``auto``, the default: ``low`` for a generation, ``medium`` for an edit), which
# sets the price. Its 21:9 and 5:2 aspect ratios are not mapped from a size (a size stays within
# 20:9 as for 1.0).
_GROK_IMAGINE_2 = dataclasses.replace(
    _GROK_IMAGINE,
    name="grok-imagine-image-2.0",
    models=frozenset({"grok-imagine-image-2.0"}),
    max_images=5,
    choices=_choices(response_format=("url", "b64_json"), quality=("low", "medium", "auto")),
)

FAMILIES: tuple[Family, ...] = (
    _FLUX_KONTEXT,
    _FLUX_2,
    _FLUX_2_KLEIN,
    _GROK_IMAGINE,
    _GROK_IMAGINE_2,
    _DALL_E_2,
    _GPT_IMAGE,
    _GPT_IMAGE_MINI,
    _GPT_IMAGE_2,
    _GPT_IMAGE_2_5,
    _GPT_IMAGE_2_6,
    _GEMINI_FLASH,
    _GEMINI_PRO,
    _GEMINI_NANO_BANANA_21,
    _GEMINI_FLASH_LITE,
    _GEMINI_25_FLASH,
)

_BY_MODEL = {model: family for family in FAMILIES for model in family.models}


def family_of(model: str) -> Family | None:
    """The family of a bare model name (no provider prefix), or None when unknown."""
    return _BY_MODEL.get(model)


def _generating(family: Family) -> Family | None:
    rule = family.generation
    if rule is None:
        return None
    choices = {k: v for k, v in family.choices.items() if k not in rule.edit_only}
    return dataclasses.replace(
        family, choices=MappingProxyType({**choices, **rule.choices}), mask=None, markup=None
    )


#: Each family with a generation rule, as its generations are checked.
_GENERATING = {
    family.name: generating
    for family in FAMILIES
    if (generating := _generating(family)) is not None
}


def family_for(model: str, operation: str) -> Family | None:
    """The rules of ``model``'s family for ``operation`` (``image_edit`` or
    ``image_generation``); None when the model is unknown, or its family documents no
    generations (only the generic checks then apply)."""
    family = _BY_MODEL.get(model)
    if family is None or operation == "image_edit":
        return family
    return _GENERATING.get(family.name)
