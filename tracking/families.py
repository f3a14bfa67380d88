"""Which image-edit model family a model name belongs to, matched exactly from one table.

A family decides the parameter rules (see :mod:`tracking.request`). Unknown names belong to no
family and get only the generic checks: an OpenAI-compatible server may know models we do not.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FAMILIES", "Family", "family_of"]


@dataclass(frozen=True, slots=True)
class Family:
    """One model family and what its edit endpoint accepts."""

    name: str
    models: frozenset[str]
    #: ``response_format`` is a real parameter (dall-e-2); GPT image models always return base64.
    takes_response_format: bool
    max_images: int
    max_prompt_chars: int


FAMILIES: tuple[Family, ...] = (
    Family(
        name="dall-e-2",
        models=frozenset({"dall-e-2"}),
        takes_response_format=True,
        max_images=1,
        max_prompt_chars=1000,
    ),
    Family(
        name="gpt-image",
        models=frozenset(
            {
                "gpt-image-1",
                "gpt-image-1-mini",
                "gpt-image-1.5",
                "gpt-image-2",
                "gpt-image-2-2026-04-21",
                "chatgpt-image-latest",
            }
        ),
        takes_response_format=False,
        max_images=16,
        max_prompt_chars=32000,
    ),
)

_BY_MODEL = {model: family for family in FAMILIES for model in family.models}


def family_of(model: str) -> Family | None:
    """The family of a bare model name (no provider prefix), or None when unknown."""
    return _BY_MODEL.get(model)
