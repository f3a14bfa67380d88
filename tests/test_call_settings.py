"""Bad call settings (the API key, ``api_base``, header values) are typed errors naming the
setting, raised before anything is sent, the same on the sync and async paths, and a key never
appears in the error, the event or its traceback in any form (raw, ``repr``, bytes ``repr``).
"""

from __future__ import annotations

import json
import traceback
import urllib.parse
from typing import Any

import pytest

import tracking
from tests.conftest import API_KEY, edit_either
from tests.recorder import record_events
from tracking.errors import mask_secrets
from tracking.testing.fake_images import solid_png

PNG = solid_png(256, 256, (10, 20, 30))
SECRET = "sk-proj-SECRETSECRET1234567890"


def _call(use_async: bool, **kwargs: Any) -> Any:
    params: dict[str, Any] = {
        "model": "gpt-image-2",
        "image": PNG,
        "prompt": "x",
        "max_retries": 2,
        **kwargs,
    }
    return edit_either(use_async, **params)


def _all_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc) + repr(exc.args) + repr(vars(exc))


BAD_KEYS = [
    SECRET + "\n",
    SECRET + "\r\n",
    SECRET + "\x00",
    SECRET + "\u00e9",  # latin-1, not ASCII
    SECRET + "\u20ac",  # not even latin-1
    "sk-proj SECRET with a space",
    "   ",
    "",
]


@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize("key", BAD_KEYS)
def test_a_key_no_header_can_carry_is_a_configuration_error_never_echoed(
    fake, monkeypatch, use_async, key
):
    recorder = record_events(monkeypatch)
    hits = fake.hits
    with pytest.raises(tracking.ConfigurationError) as caught:
        _call(use_async, api_base=fake.url, api_key=key)
    assert caught.value.param == "api_key"
    assert "api_key" in str(caught.value)
    assert fake.hits == hits  # nothing was sent, and nothing retried
    event = recorder.last
    assert event.error_type == "configuration_error" and event.attempts == 0
    text = _all_text(caught.value) + repr(event)
    assert "SECRETSECRET" not in text and "SECRET with" not in text


@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize("key", [5, ["sk-a"], b"sk-bytes-key-1234"])
def test_a_key_that_is_not_a_string_is_a_configuration_error(fake, use_async, key):
    hits = fake.hits
    with pytest.raises(tracking.ConfigurationError, match="api_key: expected a string") as caught:
        _call(use_async, api_base=fake.url, api_key=key)
    assert caught.value.param == "api_key" and fake.hits == hits


@pytest.mark.parametrize("use_async", [False, True])
def test_a_key_from_the_environment_is_held_to_the_same_rules(fake, monkeypatch, use_async):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET + "\n")
    hits = fake.hits
    with pytest.raises(tracking.ConfigurationError) as caught:
        _call(use_async, api_base=fake.url)
    assert caught.value.param == "api_key" and fake.hits == hits
    assert "SECRETSECRET" not in _all_text(caught.value)


@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize(
    "headers",
    [
        {"x-custom": "a\x00b"},
        {"x-custom": "caf\u00e9"},
        {"x-custom": "a\nInjected: 1"},
        {"x custom": "value"},
        {"x-custom:": "value"},
        {"Authorization": "Bearer " + SECRET + "\r\n"},
    ],
)
def test_a_header_value_no_header_can_carry_is_a_validation_error(
    fake, upstream, use_async, headers
):
    hits = fake.hits
    with pytest.raises(tracking.ValidationError) as caught:
        _call(use_async, extra_headers=headers, **upstream)
    assert caught.value.param == "extra_headers" and caught.value.rule == "format"
    assert fake.hits == hits
    assert "SECRETSECRET" not in _all_text(caught.value)


BAD_BASES = [
    (5, "expected a URL string"),
    (b"http://127.0.0.1/v1", "expected a URL string"),
    ("", "empty"),
    ("   ", "empty"),
    ("http://[::1", "not a valid URL"),
    ("http://127.0.0.1:99999/v1", "not a valid URL"),
    ("ftp://127.0.0.1/v1", r"not an http\(s\) URL"),
    ("unix://127.0.0.1/v1", r"not an http\(s\) URL"),
    ("127.0.0.1:8000/v1", r"not an http\(s\) URL"),
    ("http:///v1", "no host"),
    ("http://127.0.0.1/v1\n", "whitespace or control"),
    ("http://user:hunter2pass@127.0.0.1/v1", "user name or password"),
]


@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize(("api_base", "says"), BAD_BASES)
def test_an_unusable_api_base_is_a_configuration_error_before_sending(
    monkeypatch, use_async, api_base, says
):
    recorder = record_events(monkeypatch)
    with pytest.raises(tracking.ConfigurationError, match=says) as caught:
        _call(use_async, api_base=api_base, api_key=API_KEY)
    assert caught.value.param == "api_base"
    assert "hunter2pass" not in _all_text(caught.value)
    assert recorder.last.attempts == 0  # refused before any attempt: never retried


@pytest.mark.parametrize("use_async", [False, True])
def test_an_unusable_base_from_the_environment_is_refused_alike(monkeypatch, use_async):
    monkeypatch.setenv("OPENAI_BASE_URL", "ftp://127.0.0.1/v1")
    with pytest.raises(tracking.ConfigurationError, match="not an http") as caught:
        _call(use_async, api_key=API_KEY)
    assert caught.value.param == "api_base"


@pytest.mark.parametrize(
    "key",
    [
        SECRET + "\n",
        SECRET + "\x00",
        SECRET + "\u00e9",
        SECRET + "\u20ac",
        SECRET + "'\"\\",
        " " + SECRET + " ",
    ],
)
def test_mask_secrets_masks_the_escaped_forms_of_a_key(key):
    quoted = [
        key,
        repr(key),
        repr(key.encode("utf-8")),
        repr(("Bearer " + key).encode("utf-8")),
        repr(key.encode("latin-1", "backslashreplace")),
        key.strip(),
        f"[{key!r}]",
    ]
    for text in quoted:
        masked = mask_secrets(f"Illegal header value {text}", [key])
        assert "SECRETSECRET" not in masked, (text, masked)


@pytest.mark.parametrize("key", [SECRET + "+a/b=", "a/b+" + SECRET + "==", SECRET + " x&y"])
def test_mask_secrets_masks_a_keys_url_encoded_and_slash_escaped_forms(key):
    quoted = [
        urllib.parse.quote(key, safe=""),  # a query string: ?key=...
        urllib.parse.quote_plus(key),  # a form body
        urllib.parse.quote(key),  # a URL path
        urllib.parse.urlencode({"api_key": key}),
        json.dumps({"key": key}).replace("/", "\\/"),  # a JSON encoder escaping "/"
    ]
    for text in quoted:
        masked = mask_secrets(f"upstream said: {text}", [key])
        assert "SECRETSECRET" not in masked, (text, masked)


def test_mask_secrets_never_fails_on_a_key_without_utf8_bytes():
    key = SECRET + "\udc80/"
    assert "SECRETSECRET" not in mask_secrets(f"bad key {key}", [key])


def test_mask_secrets_skips_what_is_not_a_string():
    assert mask_secrets("Bearer 5", [5, None, b"abcd", ["x"]]) == "Bearer 5"


@pytest.mark.parametrize("use_async", [False, True])
def test_an_extra_header_replaces_the_providers_own_whatever_its_case(fake, use_async):
    """``extra_headers={"authorization": ...}`` replaces the ``Authorization`` the provider
    writes; it was sent beside it, two keys, of which the upstream read the provider's."""
    before = len(fake.requests)
    answer = _call(
        use_async,
        api_base=fake.url,
        api_key="sk-not-the-one-the-upstream-takes-0000",
        extra_headers={"authorization": f"Bearer {API_KEY}"},
    )
    assert answer.data
    (sent,) = fake.requests[before:]
    named = [value for name, value in sent.headers.items() if name.lower() == "authorization"]
    assert named == [f"Bearer {API_KEY}"]
