"""Per-megapixel prices (FLUX.2), exactly in Decimal.

A ``per_megapixel`` entry gives three prices: ``first_output`` (the output's first megapixel),
``output`` (each further output megapixel) and ``input`` (each megapixel of each input image).
One job costs ``first_output + (output MP - 1) * output + input MP * input``, each image's
megapixels counted whole and rounded up, a megapixel being 1024 x 1024 pixels: BFL's own
integration guide states the formula and the prices
(https://github.com/black-forest-labs/skills, ``skills/bfl-api/SKILL.md``, read 2026-12-07,
official); the rounding is stated by a reseller of the same models (fal.ai's notes, as
https://lumenfall.ai/models/black-forest-labs/flux.2-flex quotes them, read 2026-12-07,
secondary) and matches a BFL answer quoted in https://oauth.openai-hk.com/docs/en/lab/bfl-flux.html
(``"cost": 4.5`` credits for ``"output_mp": 1.98`` on FLUX.2 [pro]: 3 + 1 x 1.5, read 2026-12-07,
secondary). BFL's answer states the job's ``cost`` itself, which is what a call is billed; these
prices estimate a call whose answer did not say.

An image whose size is unknown counts as :data:`MAX_MEGAPIXELS` (the most a FLUX.2 output is),
and so does an output left to the upstream (``auto``) when its first input's size is unknown:
an estimate never below what the call may be billed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal

__all__ = [
    "MAX_MEGAPIXELS",
    "MEGAPIXEL",
    "PER_MEGAPIXEL_KINDS",
    "megapixel_cost",
    "megapixel_estimate",
    "megapixels",
]

#: Pixels in one megapixel, as BFL counts them (1024 x 1024).
MEGAPIXEL = 1024 * 1024
#: The most megapixels a FLUX.2 output has (BFL: "up to 4MP").
MAX_MEGAPIXELS = 4
#: The prices a ``per_megapixel`` entry gives, all three required.
PER_MEGAPIXEL_KINDS = ("first_output", "output", "input")


def megapixels(pixels: int) -> int:
    """Whole megapixels of an image of ``pixels`` pixels, rounded up (0 for none)."""
    return -(-pixels // MEGAPIXEL) if pixels > 0 else 0


def megapixel_cost(
    prices: Mapping[str, Decimal], output_pixels: int, input_pixels: Sequence[int]
) -> Decimal:
    """What one job with an output of ``output_pixels`` and inputs of ``input_pixels`` costs:
    the first output megapixel, each further one and each input megapixel at their prices."""
    output = max(megapixels(output_pixels), 1)
    inputs = sum(megapixels(pixels) for pixels in input_pixels)
    return prices["first_output"] + (output - 1) * prices["output"] + inputs * prices["input"]


def megapixel_estimate(
    prices: Mapping[str, Decimal],
    n: int,
    output_pixels: int | None,
    input_pixels: Sequence[int | None],
) -> Decimal:
    """:func:`megapixel_cost` of ``n`` jobs when sizes may be unknown (None): an unknown input
    counts :data:`MAX_MEGAPIXELS`; an unknown output is the first input's size, capped at
    :data:`MAX_MEGAPIXELS` (BFL's default output), or :data:`MAX_MEGAPIXELS` without one."""
    most = MAX_MEGAPIXELS * MEGAPIXEL
    inputs = [most if pixels is None else pixels for pixels in input_pixels]
    if output_pixels is None:
        first = input_pixels[0] if input_pixels else None
        output_pixels = most if first is None else min(first, most)
    return megapixel_cost(prices, output_pixels, inputs) * n
