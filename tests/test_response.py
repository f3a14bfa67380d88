"""The response has the OpenAI shape and serialises back to exactly what the upstream sent."""

from __future__ import annotations

import base64
import json

import pytest

import tracking
from tests.conftest import make_png
from tracking.response import ImageResponse

#: Base64 of a PNG's 8-byte signature: the least a ``b64_json`` must start with to be an image.
PNG_SIGNATURE = "iVBORw0KGgo="


def test_gpt_image_response_round_trips_exactly(fake, upstream):
    response = tracking.image_edit(image=make_png(), prompt="p", model="gpt-image-1", **upstream)
    sent = fake.state.responses[-1]
    assert response.to_dict() == sent
    assert json.loads(response.to_json()) == sent
    assert set(response.to_dict()) == {
        "created",
        "data",
        "usage",
        "size",
        "quality",
        "background",
        "output_format",
    }
    assert response.created == sent["created"]
    assert response.quality == "medium" and response.background == "opaque"
    assert response.output_format == "png"


def test_dall_e_2_response_has_no_invented_null_fields(fake, upstream):
    response = tracking.image_edit(
        image=make_png(256, 256), prompt="p", model="dall-e-2", response_format="url", **upstream
    )
    assert response.to_dict() == fake.state.responses[-1]
    assert set(response.to_dict()) == {"created", "data"}
    assert set(response.to_dict()["data"][0]) == {"url"}
    assert response.usage is None and response.size is None


def test_revised_prompt_and_usage_details_are_read():
    body = {
        "created": 1,
        "data": [{"b64_json": PNG_SIGNATURE, "revised_prompt": "a cat"}],
        "usage": {
            "input_tokens": 50,
            "input_tokens_details": {"text_tokens": 10, "image_tokens": 40, "cached_tokens": 5},
            "output_tokens": 272,
            "total_tokens": 322,
        },
    }
    response = ImageResponse.from_json_bytes(json.dumps(body).encode())
    assert response.data[0].revised_prompt == "a cat"
    usage = response.usage
    assert usage is not None
    assert (usage.input_text_tokens, usage.input_image_tokens, usage.cached_input_tokens) == (
        10,
        40,
        5,
    )
    assert usage.total_tokens == 322
    assert response["data"][0]["b64_json"] == PNG_SIGNATURE


@pytest.mark.parametrize("body", [b"not json", b"[]", b'{"created": 1}'])
def test_malformed_success_body_is_a_typed_error(body):
    with pytest.raises(tracking.APIResponseError):
        ImageResponse.from_json_bytes(body)


@pytest.mark.parametrize("encoded", ["aGk=", "AA==", "not base64!", "iVBO"])
def test_a_b64_json_that_is_not_base64_of_an_image_is_a_typed_error(encoded):
    body = json.dumps({"created": 1, "data": [{"b64_json": encoded}]}).encode()
    with pytest.raises(tracking.APIResponseError, match=r"data\[0\]\.b64_json is not base64"):
        ImageResponse.from_json_bytes(body)


def test_only_the_head_of_a_b64_json_is_decoded_to_check_it(monkeypatch):
    """Answers are megabytes of base64 on the call path: the check decodes a few characters."""
    decoded: list[int] = []
    real = base64.b64decode

    def counting(data: str | bytes, *args: object, **kwargs: object) -> bytes:
        decoded.append(len(data))
        return real(data, *args, **kwargs)

    monkeypatch.setattr(base64, "b64decode", counting)
    huge = "iVBORw0KGgoAAAAN" + "A" * 8_000_000  # an 8 MB image, as far as its head says
    body = json.dumps({"created": 1, "data": [{"b64_json": huge}] * 3}).encode()
    assert ImageResponse.from_json_bytes(body).images_returned == 3
    assert decoded and max(decoded) <= 64


def test_cost_and_ids_sit_beside_the_openai_fields(upstream):
    response = tracking.image_edit(image=make_png(), prompt="p", model="gpt-image-1", **upstream)
    assert response.request_id
    assert response._hidden_params["litellm_call_id"] == response.request_id
    assert "request_id" not in response.to_dict()


def test_usage_is_parsed_once_and_never_added_to_the_upstream_json():
    raw = {"created": 1, "data": [{"b64_json": PNG_SIGNATURE}], "usage": {"input_tokens": 7}}
    response = ImageResponse.from_json_bytes(json.dumps(raw).encode())
    first = response.usage
    assert first is not None and first.input_tokens == 7
    assert response.usage is first  # parsed once, reused by routing, pricing and the event
    assert response.to_dict() == raw
    assert json.loads(response.to_json()) == raw
