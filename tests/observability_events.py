"""Hand-built events for the observability tests: exact values the real calls cannot give yet.

Real calls through the fake upstream are unpriced until pricing lands; these events carry
Decimal costs, usage, failures, retries and fallbacks, as the router and pricing will.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from tracking.events import ImageEditEvent, TokenUsage

START = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def make_event(**changes: Any) -> ImageEditEvent:
    """A priced, successful gpt-image-1 call of 2.5 s; ``changes`` override any field."""
    latency_ms = changes.pop("latency_ms", 2500.0)
    fields: dict[str, Any] = {
        "request_id": str(uuid.uuid4()),
        "call_type": "image_edit",
        "status": "success",
        "upstream_request_id": "req_up_1",
        "end_user": "user-1",
        "model": "gpt-image-1",
        "model_group": "gpt-image-1",
        "resolved_model": "gpt-image-1",
        "provider": "openai",
        "deployment_id": "dep-a",
        "api_base": "api.example.test:8443",
        "n": 1,
        "size": "1024x1024",
        "quality": "low",
        "input_images": 1,
        "input_bytes": 1234,
        "prompt_chars": 5,
        "images_returned": 1,
        "usage": TokenUsage(
            input_text_tokens=10,
            input_image_tokens=323,
            cached_input_tokens=0,
            output_tokens=272,
            total_tokens=605,
        ),
        "cost_usd": Decimal("0.011"),
        "cost_per_image_usd": Decimal("0.011"),
        "cost_source": "usage",
        "price_ref": "gpt-image-1@2025-04-23",
        "start_time": START,
        "end_time": START + timedelta(milliseconds=latency_ms),
        "latency_ms": latency_ms,
        "upstream_latency_ms": latency_ms - 1,
        "attempts": 1,
    }
    fields.update(changes)
    return ImageEditEvent(**fields)


def failed_event(**changes: Any) -> ImageEditEvent:
    """A rate-limited call that returned nothing and cost nothing."""
    fields: dict[str, Any] = {
        "status": "failure",
        "images_returned": 0,
        "usage": None,
        "cost_usd": None,
        "cost_per_image_usd": None,
        "cost_source": "unpriced",
        "error_type": "rate_limit",
        "http_status": 429,
        "error_message": "429 from api.example.test: slow down",
        "size": None,
        "quality": None,
    }
    fields.update(changes)
    return make_event(**fields)
