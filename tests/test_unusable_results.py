"""An upstream that answers something unusable where the image should be: a FLUX result URL that
serves an HTML page, has expired (404) or keeps refusing the download (429, 503) after the job
ran, a Gemini ``inlineData`` that is not base64 of an image. Each is an ``APIResponseError``
(never an image passed on, never a 404 that says the model is not there, never a 429 that tells
a client to retry and pay for the job again), recorded with its cost since the work was billed,
and the proxy answers 502. Everything runs against the fake upstreams on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

import tracking
from tests.conftest import edit_either, make_png
from tests.proxy_support import ProxyProcess, ledger_row, write_config
from tests.recorder import record_events
from tracking.errors import (
    APIResponseError,
    APIStatusError,
    ContentPolicyError,
    RateLimitError,
)
from tracking.flow import _MAX_POLL_FAILURES
from tracking.proxy.errors import from_exception
from tracking.testing.fake_bfl import FakeBFL
from tracking.testing.fake_gemini import FakeGemini

BFL_KEY = "bfl-test-key-0123456789abcdef"
GEMINI_KEY = "AIzaFakeGeminiKey0123456789abcdef"
FLUX = "black_forest_labs/flux-kontext-pro"
PNG = make_png(64, 64)


@pytest.fixture(scope="module")
def bfl() -> Iterator[FakeBFL]:
    with FakeBFL(api_keys=[BFL_KEY], polls=0) as server:
        yield server


@pytest.mark.parametrize(
    ("fault", "status"),
    [("code=html_result", 200), ("code=expired", 404)],
)
def test_a_flux_result_that_is_no_image_is_unreadable_billed_and_not_submitted_again(
    monkeypatch, bfl, fault, status
):
    events = record_events(monkeypatch)
    before = len(bfl.jobs)
    with pytest.raises(APIResponseError) as caught:
        tracking.image_edit(
            image=PNG,
            prompt="a hat",
            model=FLUX,
            api_base=bfl.url,
            api_key=BFL_KEY,
            max_retries=2,
            extra_headers={"x-fake-fault": fault},
        )
    assert caught.value.status_code == status
    assert len(bfl.jobs) == before + 1  # the job ran and was billed: submitted once
    event = events.last
    assert event.status == "failure" and event.error_type == "invalid_response"
    assert event.images_returned == 0
    assert event.cost_source == "estimate"  # the job's price, flagged as an estimate
    assert event.cost_usd is not None and event.cost_usd > 0


def _flux_edit(bfl: FakeBFL, fault: str, *, use_async: bool = False, **extra: Any) -> Any:
    params: dict[str, Any] = {
        "image": PNG,
        "prompt": "a hat",
        "model": FLUX,
        "api_base": bfl.url,
        "api_key": BFL_KEY,
        "max_retries": 2,
        "extra_headers": {"x-fake-fault": fault},
        **extra,
    }
    return edit_either(use_async, **params)


@pytest.mark.parametrize("use_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("status", [429, 503])
def test_a_result_download_that_keeps_failing_is_unusable_billed_and_not_submitted_again(
    monkeypatch, bfl, status, use_async
):
    """The job ran and was billed; its result URL answers 429 (or 503) to every download. The
    download is retried as a poll is, then the call ends as an unusable result: not the 429,
    which would tell a client to retry the edit, submitting and paying for the job again."""
    events = record_events(monkeypatch)
    before = len(bfl.jobs)
    fault = f"code=result_{status};retry_after=0.01"
    with pytest.raises(APIResponseError, match="billed, but its result could not be downloaded"):
        _flux_edit(bfl, fault, use_async=use_async)
    (job,) = list(bfl.jobs.values())[before:]  # the job ran and was billed: submitted once
    assert job.downloads == 1 + _MAX_POLL_FAILURES  # the download, retried as polls are
    event = events.last
    assert event.status == "failure" and event.error_type == "invalid_response"
    assert event.http_status == status  # what the result URL answered, for the record
    assert event.images_returned == 0
    assert event.cost_source == "estimate"  # the job's price, as for an expired result
    assert event.cost_usd is not None and event.cost_usd > 0


def test_a_result_429_whose_wait_outlasts_the_timeout_is_unusable_not_a_timeout(monkeypatch, bfl):
    """A Retry-After longer than what is left of the call's timeout ends the call at once, as
    the same unusable result: the job was done, only its download was refused."""
    events = record_events(monkeypatch)
    before = len(bfl.jobs)
    with pytest.raises(APIResponseError, match=r"could not be downloaded: not within the call's"):
        _flux_edit(bfl, "code=result_429;retry_after=30", timeout=5)
    (job,) = list(bfl.jobs.values())[before:]
    assert job.downloads == 1
    event = events.last
    assert event.error_type == "invalid_response" and event.http_status == 429
    assert event.cost_source == "estimate"
    assert event.cost_usd is not None and event.cost_usd > 0


def test_a_job_whose_polls_keep_getting_429_is_billed_and_not_submitted_again(monkeypatch, bfl):
    """Accepted, then its status page answers 429 to every poll: the SDK's error is the 429
    (a RateLimitError), not retried, and the job's estimated cost is recorded."""
    events = record_events(monkeypatch)
    before = len(bfl.jobs)
    with pytest.raises(RateLimitError) as caught:
        _flux_edit(bfl, "code=poll_429;retry_after=0.01")
    assert caught.value.retryable is False and caught.value.job_submitted is True
    (job,) = list(bfl.jobs.values())[before:]  # submitted once
    assert job.polls == 1 + _MAX_POLL_FAILURES
    event = events.last
    assert event.status == "failure" and event.http_status == 429
    assert event.cost_source == "estimate"
    assert event.cost_usd is not None and event.cost_usd > 0


@pytest.fixture(scope="module")
def busy_result() -> Iterator[FakeBFL]:
    """A FLUX upstream whose result URL answers 429 to every download of every job."""
    with FakeBFL(
        api_keys=[BFL_KEY], polls=0, faults=["code=result_429;retry_after=0.01;always"]
    ) as server:
        yield server


@pytest.fixture(scope="module")
def broken_upstreams(busy_result: FakeBFL) -> Iterator[dict[str, str]]:
    """Upstreams that answer every call with a broken result, by public model name."""
    with (
        FakeBFL(api_keys=[BFL_KEY], polls=0, faults=["code=expired"]) as expired,
        FakeBFL(api_keys=[BFL_KEY], polls=0, faults=["code=html_result"]) as html,
        FakeGemini(api_keys=[GEMINI_KEY], faults=["code=bad_base64"]) as gemini,
        FakeBFL(
            api_keys=[BFL_KEY], polls=0, faults=["code=poll_429;retry_after=0.01;always"]
        ) as busy_polls,
    ):
        yield {
            "flux-expired": expired.url,
            "flux-html": html.url,
            "flux-429": busy_result.url,
            "gemini-broken": gemini.url,
            "flux-poll-429": busy_polls.url,
        }


@pytest.fixture(scope="module")
def proxy(
    broken_upstreams: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    folder: Path = tmp_path_factory.mktemp("unusable-results")
    models = {
        name: (FLUX, BFL_KEY) for name in ("flux-expired", "flux-html", "flux-429", "flux-poll-429")
    }
    models["gemini-broken"] = ("gemini/gemini-3.1-flash-image", GEMINI_KEY)
    config = write_config(
        folder / "config.yaml",
        {
            "model_list": [
                {
                    "model_name": name,
                    "litellm_params": {
                        "model": model,
                        "api_key": key,
                        "api_base": broken_upstreams[name],
                    },
                }
                for name, (model, key) in models.items()
            ],
            "general_settings": {"database_url": f"sqlite:///{folder / 'ledger.db'}"},
        },
    )
    with ProxyProcess(config) as process:
        yield process


def _edit_through(proxy: ProxyProcess, model: str) -> httpx.Response:
    """An edit posted to the proxy for ``model``, answered 502 as every case here is."""
    response = httpx.post(
        f"{proxy.url}/v1/images/edits",
        data={"model": model, "prompt": "a hat"},
        files={"image": ("in.png", PNG, "image/png")},
        timeout=60,
    )
    assert response.status_code == 502, response.text
    return response


@pytest.mark.parametrize("model", ["flux-expired", "flux-html", "flux-429", "gemini-broken"])
def test_the_proxy_answers_an_unusable_result_with_502_not_the_result_urls_404(proxy, model):
    response = _edit_through(proxy, model)
    error = response.json()["error"]
    assert error["code"] == "upstream_invalid_response"
    assert response.headers["x-should-retry"] == "false"  # billed: a retry would pay again
    assert response.headers["x-tracking-request-id"]


def test_the_proxy_answers_a_result_download_429_with_502_and_the_job_is_billed_once(
    proxy, busy_result
):
    """A client that sees 429 retries the edit (and a new job is submitted and billed): the
    proxy answers 502, says why, and records the job's estimated cost."""
    before = len(busy_result.jobs)
    response = _edit_through(proxy, "flux-429")
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == "upstream_invalid_response" and error["type"] == "server_error"
    assert "billed" in error["message"] and "retry" in error["message"]
    assert response.headers["x-should-retry"] == "false"
    assert len(busy_result.jobs) == before + 1  # submitted once, by the proxy's call
    row = ledger_row(proxy, response.headers["x-tracking-request-id"])
    assert row["status"] == "failure" and row["error_type"] == "invalid_response"
    assert row["cost_source"] == "estimate" and Decimal(row["cost_usd"]) > 0


def test_the_proxy_answers_a_job_whose_polls_keep_getting_429_with_502(proxy):
    """The status page's 429 after the job was accepted is not the client's rate limit: a 429
    would invite a retry that submits and pays for another job."""
    response = _edit_through(proxy, "flux-poll-429")
    error = response.json()["error"]
    assert error["code"] == "upstream_job_result_unavailable" and error["type"] == "server_error"
    assert "billed" in error["message"] and "429" in error["message"]
    assert response.headers["x-should-retry"] == "false"


@pytest.mark.parametrize("status", [400, 402, 404, 422])
def test_a_4xx_from_the_status_page_of_an_accepted_job_is_a_502_not_the_clients_error(status):
    """A 404 or 400 after the job was accepted would tell the client its request was wrong, and
    invite it to fix and send it again: paying for another job."""
    error = APIStatusError("the status page refused", status_code=status)
    error.job_submitted = True
    answer = from_exception(error)
    assert (answer.status, answer.code) == (502, "upstream_job_result_unavailable")
    assert f"HTTP {status}" in answer.message


def test_a_refusal_read_from_an_accepted_jobs_status_keeps_its_400():
    """FLUX's ``Content Moderated`` is read from a 200 status page: the client's content was
    refused, which a 400 says."""
    error = ContentPolicyError("Content Moderated")
    error.job_submitted, error.answer_status = True, 200
    assert from_exception(error).status == 400
