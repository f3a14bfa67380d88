"""The fake upstream's ``GET /v1/models``: the image models it knows, with their shutdown dates.

Written from OpenAI's deprecations page (read 2026-12-03), independently of the SDK's price
table, in the shape OpenAI's List models endpoint answers: ``{"object": "list", "data": [...]}``
with ``id``, ``object``, ``created``, ``owned_by`` and ``shutdown_date`` (``YYYY-MM-DD``, or
null when no shutdown has been announced) per model.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SHUTDOWN_DATES", "models_body"]

#: model -> its shutdown date (None: none announced). Retired models stay listed, as OpenAI's
#: endpoint keeps them with their dates.
SHUTDOWN_DATES: dict[str, str | None] = {
    "dall-e-2": "2026-05-12",
    "dall-e-3": "2026-05-12",
    "gpt-image-1": "2026-10-23",
    "gpt-image-1-mini": "2026-12-01",
    "gpt-image-1.5": "2026-12-01",
    "gpt-image-1.5-2025-12-16": "2026-12-01",
    "chatgpt-image-latest": "2026-12-01",
    "gpt-image-2": None,
    "gpt-image-2-2026-04-21": None,
    "gpt-image-2.5-flare": None,
    "gpt-image-2.5-flare-2026-09-08": None,
    "gpt-image-2.5-sunburst": None,
    "gpt-image-2.5-sunburst-2026-09-08": None,
    "gpt-image-2.6-flare": None,
    "gpt-image-2.6-sunburst": None,
}


def models_body(extra_models: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The List models answer: every known model, then the ones the fake was told to serve."""
    data = [
        {
            "id": model,
            "object": "model",
            "created": 1_700_000_000,
            "owned_by": "system",
            "shutdown_date": shutdown,
        }
        for model, shutdown in {**SHUTDOWN_DATES, **dict.fromkeys(extra_models)}.items()
    ]
    return {"object": "list", "data": data}
