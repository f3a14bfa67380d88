"""Each fault the fake injects becomes the right typed error after the right number of attempts.

Faults arrive per request (the ``x-fake-fault`` header, sent with ``extra_headers``) or per
server (``fake.inject(...)``). Backoff is shrunk for the module and Retry-After is 0, so retries
cost milliseconds; what Retry-After does to the pause is proved on the flow's ``Sleep`` effects.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

import tracking
from tests.accounts_support import wait_for
from tests.conftest import API_KEY, make_png
from tests.recorder import record_events
from tracking import flow
from tracking.testing import FakeOpenAI, Fault, parse_fault

PNG = make_png(16, 16)


@pytest.fixture(scope="module")
def faulty() -> Iterator[FakeOpenAI]:
    """A fake of this module's own, so queued faults can never reach another module's calls."""
    with FakeOpenAI(api_keys=[API_KEY]) as server:
        yield server


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch, faulty):
    monkeypatch.setattr(flow, "_INITIAL_BACKOFF", 0.001)
    yield
    faulty.clear_faults()


def call(fake: FakeOpenAI, *, use_async: bool = False, **kwargs):
    params = {
        "image": PNG,
        "prompt": "p",
        "model": "gpt-image-1",
        "api_base": fake.url,
        "api_key": API_KEY,
        **kwargs,
    }
    if use_async:
        return asyncio.run(tracking.aimage_edit(**params))
    return tracking.image_edit(**params)


FAULTS = [
    # (fault, error class, attempts with max_retries=2, extra call arguments)
    ("status=500", tracking.InternalServerError, 3, {}),
    ("status=502", tracking.InternalServerError, 3, {}),
    ("status=503;retry_after=0", tracking.InternalServerError, 3, {}),
    ("status=429;retry_after=0", tracking.RateLimitError, 3, {}),
    ("status=408", tracking.RequestTimeoutError, 3, {}),
    ("status=409", tracking.ConflictError, 3, {}),
    ("status=400", tracking.BadRequestError, 1, {}),
    ("status=400;code=moderation_blocked", tracking.ContentPolicyError, 1, {}),
    ("status=401", tracking.AuthenticationError, 1, {}),
    ("status=403", tracking.PermissionDeniedError, 1, {}),
    ("status=404", tracking.NotFoundError, 1, {}),
    ("status=413", tracking.RequestTooLargeError, 1, {}),
    ("status=422", tracking.UnprocessableEntityError, 1, {}),
    ("drop", tracking.APIConnectionError, 3, {}),
    ("malformed", tracking.APIResponseError, 1, {}),
    ("latency=0.5", tracking.APITimeoutError, 3, {"timeout": 0.1}),
    ("slow_body=0.5", tracking.APITimeoutError, 3, {"timeout": 0.1}),
]


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize(
    ("fault", "error", "attempts", "extra"), FAULTS, ids=[f[0] for f in FAULTS]
)
def test_each_fault_maps_to_its_error_and_attempts(
    monkeypatch, faulty, use_async, fault, error, attempts, extra
):
    events = record_events(monkeypatch)
    before = faulty.hits
    with pytest.raises(error) as caught:
        call(
            faulty,
            use_async=use_async,
            max_retries=2,
            extra_headers={"x-fake-fault": fault},
            **extra,
        )
    assert type(caught.value) is error  # exactly this class, not a parent or a sibling
    if error is tracking.APITimeoutError:
        # the client gives an attempt up after 0.1 s, which on a loaded machine can be before
        # the fake's thread has read the request it was sent: it reads it later
        with contextlib.suppress(AssertionError):
            wait_for(lambda: faulty.hits - before >= attempts, timeout=30)
    assert faulty.hits - before == attempts
    (event,) = events.events
    assert (event.status, event.error_type) == ("failure", error.error_type)
    assert (event.attempts, event.retries) == (attempts, attempts - 1)


def test_status_errors_carry_status_message_param_and_code(faulty):
    with pytest.raises(tracking.RateLimitError) as caught:
        call(
            faulty,
            max_retries=0,
            extra_headers={"x-fake-fault": "status=429;retry_after=0;message=Slow down;code=rl"},
        )
    error = caught.value
    assert error.status_code == 429
    assert error.upstream_message == "Slow down"
    assert error.code == "rl"
    assert error.retry_after == 0.0
    assert str(error) == f"429 from 127.0.0.1:{faulty.port}: Slow down"


def test_the_upstreams_param_is_kept(fake, upstream):
    """The fake's own validation names the parameter; the SDK error carries it."""
    with pytest.raises(tracking.NotFoundError) as caught:
        tracking.image_edit(image=PNG, prompt="p", model="openai/gpt-image-9", **upstream)
    assert caught.value.param == "model"
    assert caught.value.code == "model_not_found"


def test_a_dropped_connection_is_not_reported_as_a_timeout(faulty):
    with pytest.raises(tracking.APIConnectionError) as caught:
        call(faulty, max_retries=0, extra_headers={"x-fake-fault": "drop"})
    assert not isinstance(caught.value, tracking.APITimeoutError)
    assert caught.value.error_type == "connection_error"


@pytest.mark.parametrize("max_retries", [0, 1, 5])
def test_max_retries_bounds_the_attempts(faulty, max_retries):
    before = faulty.hits
    with pytest.raises(tracking.InternalServerError):
        call(faulty, max_retries=max_retries, extra_headers={"x-fake-fault": "status=500"})
    assert faulty.hits - before == max_retries + 1


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
def test_server_faults_then_success(monkeypatch, faulty, use_async):
    events = record_events(monkeypatch)
    faulty.inject("status=503;retry_after=0", times=2)
    before = faulty.hits
    response = call(faulty, use_async=use_async, max_retries=2)
    assert response.images_returned == 1
    assert faulty.hits - before == 3
    (event,) = events.events
    assert (event.status, event.attempts, event.retries) == ("success", 3, 2)


def test_retries_run_out_before_the_server_faults_do(faulty):
    faulty.inject(status=429, retry_after=0, times=3)
    with pytest.raises(tracking.RateLimitError):
        call(faulty, max_retries=2)
    assert call(faulty, max_retries=0).images_returned == 1  # the three were consumed


def test_an_always_fault_lasts_until_cleared(faulty):
    faulty.inject("drop;always")
    for _ in range(2):
        with pytest.raises(tracking.APIConnectionError):
            call(faulty, max_retries=0)
    faulty.clear_faults()
    assert call(faulty, max_retries=0).images_returned == 1


def test_a_request_header_wins_over_the_server_queue(faulty):
    faulty.inject("status=500")
    with pytest.raises(tracking.NotFoundError):
        call(faulty, max_retries=0, extra_headers={"x-fake-fault": "status=404"})
    with pytest.raises(tracking.InternalServerError):  # the server fault is still queued
        call(faulty, max_retries=0)


def test_latency_and_a_slow_body_within_the_timeout_succeed(faulty):
    response = call(
        faulty, timeout=5, extra_headers={"x-fake-fault": "latency=0.05;slow_body=0.05"}
    )
    assert response.images_returned == 1


def test_a_bad_fault_header_is_an_openai_shaped_400(faulty):
    with pytest.raises(tracking.BadRequestError, match="x-fake-fault"):
        call(faulty, extra_headers={"x-fake-fault": "explode"})


def test_the_fake_sends_retry_after_as_openai_does(faulty):
    answer = httpx.post(
        f"{faulty.url}/images/edits",
        headers={"x-fake-fault": "status=429;retry_after=1.5", "Authorization": "Bearer k"},
        content=b"",
    )
    assert answer.status_code == 429
    assert answer.headers["retry-after"] == "2"
    assert answer.headers["retry-after-ms"] == "1500"
    assert answer.json() == {
        "error": {
            "message": "Rate limit reached for requests. Please try again later.",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }


def test_canned_mode_takes_faults_too():
    with FakeOpenAI(canned=True, faults=["status=503;retry_after=0"]) as canned:
        before = canned.hits
        response = call(canned, max_retries=1)
        assert response.images_returned == 1
        assert canned.hits - before == 2


def test_the_cli_takes_faults_for_the_fake():
    from tracking.cli import build_parser

    args = build_parser().parse_args(["fake-openai", "--fault", "status=500", "--fault", "drop"])
    assert [parse_fault(spec) for spec in args.fault] == [Fault(status=500), Fault(drop=True)]


# -- fault specs -------------------------------------------------------------------------------


def test_fault_specs_are_read_as_documented():
    assert parse_fault("status=503; retry_after=0.5, times=2") == Fault(
        status=503, retry_after=0.5, times=2
    )
    assert parse_fault("drop;always") == Fault(drop=True, times=None)
    assert parse_fault("drop;times=always") == Fault(drop=True, times=None)  # as the table reads
    assert parse_fault("latency=1;slow-body=2;malformed") == Fault(
        latency=1.0, slow_body=2.0, malformed=True
    )
    assert parse_fault("status=400;code=moderation_blocked;message=no") == Fault(
        status=400, code="moderation_blocked", message="no"
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("status=abc", "fault status: expected a number, got 'abc'"),
        ("status=99", "status must be an HTTP status (100-599), got 99"),
        ("latency=-1", "latency must not be negative, got -1.0"),
        ("times=0", "times must be at least 1, got 0"),
        ("explode", "fault: cannot read 'explode'"),
    ],
)
def test_bad_fault_specs_say_what_is_wrong(spec, message):
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        parse_fault(spec)


# -- the pause before a retry, read from the flow's Sleep effects ------------------------------


def pauses(status: int, headers: dict[str, str], failures: int = 1) -> list[float]:
    """Drive the real call flow with answers from a failing upstream; return each pause."""
    body = json.dumps({"error": {"message": "busy"}}).encode()
    gen = flow.edit_flow(
        "image_edit",
        {"image": PNG, "prompt": "p", "model": "gpt-image-1", "api_key": "k", "max_retries": 9},
    )
    seen: list[float] = []
    effect = next(gen)
    try:
        for _ in range(failures):
            assert isinstance(effect, flow.Send)
            effect = gen.send(flow.Answer(status, headers, body))
            assert isinstance(effect, flow.Sleep)
            seen.append(effect.seconds)
            effect = gen.send(None)
    finally:
        gen.close()
    return seen


def test_retry_after_ms_is_honoured():
    assert pauses(429, {"retry-after-ms": "1500", "retry-after": "2"}) == [1.5]


def test_retry_after_seconds_are_honoured():
    assert pauses(503, {"retry-after": "3"}) == [3.0]


def test_retry_after_as_an_http_date_is_honoured():
    when = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    (pause,) = pauses(429, {"retry-after": when})
    assert 25 <= pause <= 30


def test_without_retry_after_the_backoff_doubles_with_jitter(monkeypatch):
    monkeypatch.setattr(flow, "_INITIAL_BACKOFF", 0.5)
    seen = pauses(500, {}, failures=6)
    bounds = [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]  # doubling from 0.5 s, capped at 8 s
    for pause, top in zip(seen, bounds, strict=True):
        assert 0.75 * top <= pause <= top


def test_an_unreasonable_retry_after_falls_back_to_the_backoff(monkeypatch):
    monkeypatch.setattr(flow, "_INITIAL_BACKOFF", 0.5)
    (pause,) = pauses(429, {"retry-after": "3600"})
    assert 0.375 <= pause <= 0.5


def test_a_part_header_no_server_accepts_is_a_400_from_the_fake(fake):
    # A NUL in a part's header: aiohttp refuses the line; the fake answered 500, as no real
    # upstream would for a malformed request.
    body = (
        b'--b\r\nContent-Disposition: form-data; name="image"; filename="a\x00.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + make_png() + b"\r\n--b--\r\n"
    )
    response = httpx.post(
        f"{fake.url}/images/edits",
        content=body,
        headers={
            "Authorization": f"Bearer {API_KEY}",
            "content-type": "multipart/form-data; boundary=b",
        },
    )
    assert response.status_code == 400, response.text
    assert "Malformed multipart body" in response.json()["error"]["message"]
