"""A user's prices file for a test: one model's per-image prices, in our format."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_prices_file(
    folder: Path,
    model: str,
    per_image: dict[str, dict[str, str]],
    provider: str | None = None,
    defaults: Any = None,
) -> Path:
    """``folder``/prices.json pricing ``model`` per image (quality -> size -> USD), each figure
    with a made-up contract as its source; ``defaults`` is the entry's, as given."""
    figures = {
        quality: {
            size: {
                "usd": usd,
                "source": "https://example.com/contract",
                "retrieved": "2026-12-07",
                "confidence": "secondary",
            }
            for size, usd in sizes.items()
        }
        for quality, sizes in per_image.items()
    }
    entry = {
        "model": model,
        "effective_from": None,
        "effective_to": None,
        "shutdown": None,
        "per_image": figures,
    }
    if provider is not None:
        entry["provider"] = provider
    if defaults is not None:
        entry["defaults"] = defaults
    path = folder / "prices.json"
    path.write_text(json.dumps({"schema": 1, "currency": "USD", "entries": [entry]}))
    return path
