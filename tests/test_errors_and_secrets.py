"""Typed errors for bad calls, and the API key never in any error text."""

from __future__ import annotations

import asyncio
import re
import socket
import time

import pytest

import tracking
from tests.conftest import make_png

PNG = make_png(16, 16)
SECRET = "sk-proj-THIS-IS-A-PLANTED-SECRET-0001"


def _all_text(exc: BaseException) -> str:
    parts = [str(exc), repr(exc)]
    seen = exc.__cause__ or exc.__context__
    while seen is not None:
        parts += [str(seen), repr(seen)]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


def test_wrong_key_echoed_by_upstream_is_masked(fake):
    with pytest.raises(tracking.AuthenticationError) as caught:
        tracking.image_edit(
            image=PNG, prompt="p", model="gpt-image-1", api_base=fake.url, api_key=SECRET
        )
    assert caught.value.status_code == 401
    assert "Incorrect API key" in str(caught.value)
    assert SECRET not in _all_text(caught.value)


async def test_wrong_key_masked_on_the_async_path_too(fake):
    with pytest.raises(tracking.AuthenticationError) as caught:
        await tracking.aimage_edit(
            image=PNG, prompt="p", model="gpt-image-1", api_base=fake.url, api_key=SECRET
        )
    assert SECRET not in _all_text(caught.value)


def test_connection_refused_is_a_connection_error_without_the_key():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(tracking.APIConnectionError) as caught:
        tracking.image_edit(
            image=PNG,
            prompt="p",
            model="gpt-image-1",
            api_base=f"http://127.0.0.1:{port}/v1",
            api_key=SECRET,
            max_retries=0,
        )
    assert not isinstance(caught.value, tracking.APITimeoutError)
    assert SECRET not in _all_text(caught.value)


@pytest.mark.parametrize("use_async", [False, True])
def test_timeout_is_honoured(use_async):
    """A server that accepts connections and never answers: the call ends at its timeout."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        kwargs = dict(
            image=PNG,
            prompt="p",
            model="gpt-image-1",
            api_base=f"http://127.0.0.1:{silent.getsockname()[1]}/v1",
            api_key=SECRET,
            timeout=0.5,
            max_retries=0,
        )
        started = time.monotonic()
        call = (
            (lambda: asyncio.run(tracking.aimage_edit(**kwargs)))
            if use_async
            else (lambda: tracking.image_edit(**kwargs))
        )
        with pytest.raises(tracking.APITimeoutError) as caught:
            call()
        elapsed = time.monotonic() - started
    assert elapsed < 10  # bounded by the timeout, not by any default (600 s)
    assert SECRET not in _all_text(caught.value)


def test_missing_api_key_is_a_configuration_error(monkeypatch, fake):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(tracking.ConfigurationError, match="OPENAI_API_KEY"):
        tracking.image_edit(image=PNG, prompt="p", model="gpt-image-1", api_base=fake.url)


def test_api_key_and_base_from_the_environment(monkeypatch, fake, upstream):
    monkeypatch.setenv("OPENAI_API_KEY", upstream["api_key"])
    monkeypatch.setenv("OPENAI_BASE_URL", fake.url)
    response = tracking.image_edit(image=PNG, prompt="p", model="gpt-image-1")
    assert response.images_returned == 1


def test_stream_is_refused_clearly_for_a_model_that_does_not_stream(upstream):
    with pytest.raises(tracking.UnsupportedParamsError, match="stream") as caught:
        tracking.image_edit(image=PNG, prompt="p", model="dall-e-2", stream=True, **upstream)
    assert caught.value.param == "stream"


def test_model_is_required_unless_a_default_is_configured(monkeypatch, upstream):
    monkeypatch.delenv("TRACKING_DEFAULT_MODEL", raising=False)
    with pytest.raises(tracking.ValidationError, match="model: required") as caught:
        tracking.image_edit(image=PNG, prompt="p", **upstream)
    assert caught.value.param == "model"
    # The example the message gives is a model that still answers, not a retired one.
    example = re.search(r"for example '([^']+)'", str(caught.value))
    assert example is not None
    assert tracking.pricing.shutdown_date(example.group(1)) is None
    monkeypatch.setenv("TRACKING_DEFAULT_MODEL", "gpt-image-1")
    assert tracking.image_edit(image=PNG, prompt="p", **upstream).images_returned == 1


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"n": 0}, "n"),
        ({"n": 11}, "n"),
        ({"n": "2"}, "n"),
        ({"prompt": ""}, "prompt"),
        ({"timeout": -1}, "timeout"),
        ({"output_compression": 101}, "output_compression"),
        ({"response_format": "png"}, "response_format"),
        ({"extra_headers": {"X": "a\r\nInjected: 1"}}, "extra_headers"),
    ],
)
def test_bad_parameters_are_typed_errors_naming_the_parameter(upstream, kwargs, param):
    call = {"image": PNG, "prompt": "p", "model": "gpt-image-1", **upstream, **kwargs}
    with pytest.raises(tracking.ValidationError) as caught:
        tracking.image_edit(**call)
    assert caught.value.param == param
    assert caught.value.status_code == 400


def test_default_api_base_is_openai_v1(monkeypatch):
    from tracking.providers import get_provider
    from tracking.request import parse_call

    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_BASE", raising=False)
    request, options = parse_call(image=PNG, prompt="p", model="gpt-image-1", api_key=SECRET)
    prepared = get_provider("openai").prepare(request, options)
    assert prepared.url == "https://api.openai.com/v1/images/edits"
    assert options.timeout == 600.0 and options.max_retries == 2
    assert SECRET not in repr(options)
