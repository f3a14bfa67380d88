"""FLUX (Black Forest Labs) edits against the fake BFL API: submit, poll, download; the mask on
FLUX Fill; transient poll failures, jobs that never finish, moderation; the pool under load; the
proxy with the official client."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import Iterator
from decimal import Decimal

import pytest
from PIL import Image

import tracking
from tests.conftest import make_half_mask, make_png
from tests.loop_ticks import called_on_this_thread
from tests.proxy_support import edit_through_proxy
from tests.recorder import record_events
from tracking.errors import (
    APIResponseError,
    APITimeoutError,
    ContentPolicyError,
    PermissionDeniedError,
    ValidationError,
)
from tracking.testing.fake_bfl import FakeBFL

BFL_KEY = "bfl-test-key-0123456789abcdef"
PNG = make_png(64, 64)
MODEL = "black_forest_labs/flux-kontext-pro"


@pytest.fixture(scope="module")
def bfl() -> Iterator[FakeBFL]:
    with FakeBFL(api_keys=[BFL_KEY], polls=2) as server:
        yield server


@pytest.fixture
def upstream(bfl: FakeBFL) -> dict[str, str]:
    return {"api_base": bfl.url, "api_key": BFL_KEY}


def test_a_kontext_edit_is_submitted_polled_downloaded_and_priced(monkeypatch, bfl, upstream):
    events = record_events(monkeypatch)
    before = len(bfl.jobs)
    response = tracking.image_edit(
        image=PNG, prompt="a red hat", model=MODEL, size="1536x1024", **upstream
    )
    (job,) = list(bfl.jobs.values())[before:]
    assert job.model == "flux-kontext-pro"
    assert base64.b64decode(job.body["input_image"]) == PNG
    assert job.body["aspect_ratio"] == "3:2" and job.body["output_format"] == "png"
    assert job.polls == 3  # Pending, Pending, Ready
    assert base64.b64decode(response.data[0].b64_json or "").startswith(b"\x89PNG")
    assert response.cost_usd == Decimal("0.04")
    event = events.last
    assert (event.provider, event.status, event.cost_usd) == (
        "black_forest_labs",
        "success",
        Decimal("0.04"),
    )


def test_extra_body_adds_members_but_never_replaces_the_calls_own(bfl, upstream):
    """The input image and the aspect ratio a size became are the call's; FLUX's own options
    (a seed) are the caller's to add."""
    before = len(bfl.jobs)
    for extra in ({"input_image": "aGk="}, {"aspect_ratio": "21:9"}):
        with pytest.raises(ValidationError, match="extra_body") as caught:
            tracking.image_edit(
                image=PNG, prompt="p", model=MODEL, size="1536x1024", extra_body=extra, **upstream
            )
        assert (caught.value.param, caught.value.rule) == ("extra_body", "unsupported")
    assert len(bfl.jobs) == before
    tracking.image_edit(image=PNG, prompt="p", model=MODEL, extra_body={"seed": 7}, **upstream)
    (job,) = list(bfl.jobs.values())[before:]
    assert job.body["seed"] == 7 and base64.b64decode(job.body["input_image"]) == PNG


async def test_async_kontext_max_costs_its_own_price(bfl, upstream):
    response = await tracking.aimage_edit(
        image=PNG, prompt="a hat", model="black_forest_labs/flux-kontext-max", **upstream
    )
    assert response.images_returned == 1 and response.cost_usd == Decimal("0.08")


def test_a_mask_runs_on_flux_fill_with_the_mask_converted(bfl, upstream):
    before = len(bfl.jobs)
    response = tracking.image_edit(
        image=PNG, mask=make_half_mask(), prompt="sky", model=MODEL, **upstream
    )
    (job,) = list(bfl.jobs.values())[before:]
    assert job.model == "flux-pro-1.0-fill"
    mask = Image.open(io.BytesIO(base64.b64decode(job.body["mask"])))
    assert mask.mode == "L"
    assert mask.getpixel((5, 5)) == 255 and mask.getpixel((60, 5)) == 0  # white = edit
    assert response.cost_usd == Decimal("0.05")  # priced as Fill, the model that ran


async def test_an_async_call_converts_its_mask_off_the_event_loop(bfl, upstream):
    """Up to 20 Mi pixels are decoded: on the loop's thread, that held every other request
    of a proxy. The conversion is seen only if it runs on this thread; the job's mask shows
    it ran."""
    before = len(bfl.jobs)
    with called_on_this_thread("white_means_edit") as on_the_loop:
        response = await tracking.aimage_edit(
            image=PNG, mask=make_half_mask(), prompt="sky", model=MODEL, **upstream
        )
    (job,) = list(bfl.jobs.values())[before:]
    mask = Image.open(io.BytesIO(base64.b64decode(job.body["mask"])))
    assert mask.mode == "L" and mask.getpixel((5, 5)) == 255  # converted...
    assert on_the_loop == []  # ...but not on the loop's thread
    assert response.cost_usd == Decimal("0.05")


def test_a_mask_that_cannot_be_decoded_is_refused_on_the_async_path_too(bfl, upstream):
    """The conversion's error comes back from the worker thread as the same ValidationError."""
    before = len(bfl.jobs)
    corrupt = bytearray(make_half_mask(256))  # its header intact, its pixel data scrambled
    for at in range(60, len(corrupt) - 20):
        corrupt[at] ^= 0x5A
    with pytest.raises(ValidationError, match=r"mask: .* could not be decoded"):
        asyncio.run(
            tracking.aimage_edit(
                image=make_png(256, 256), mask=bytes(corrupt), prompt="sky", model=MODEL, **upstream
            )
        )
    assert len(bfl.jobs) == before  # nothing submitted


def test_a_poll_that_fails_transiently_is_polled_again_without_resubmitting(bfl, upstream):
    before = len(bfl.jobs)
    response = tracking.image_edit(
        image=PNG,
        prompt="a hat",
        model=MODEL,
        extra_headers={"x-fake-fault": "code=poll_503"},
        **upstream,
    )
    (job,) = list(bfl.jobs.values())[before:]
    assert job.polls == 4 and response.images_returned == 1


async def test_a_job_that_never_finishes_times_out_once_without_resubmitting(
    monkeypatch, bfl, upstream
):
    events = record_events(monkeypatch)
    before = len(bfl.jobs)
    with pytest.raises(APITimeoutError):
        await tracking.aimage_edit(
            image=PNG,
            prompt="a hat",
            model=MODEL,
            timeout=2,
            max_retries=2,
            extra_headers={"x-fake-fault": "code=never"},
            **upstream,
        )
    assert len(bfl.jobs) == before + 1  # a submitted job is billed: never submitted again
    assert [e.status for e in events.events] == ["failure"]
    assert events.last.error_type == "timeout"
    pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert not [t for t in pending if "flow" in repr(t.get_coro())]


@pytest.mark.parametrize(
    ("fault", "error"),
    [("code=moderated", ContentPolicyError), ("code=error", APIResponseError)],
)
def test_a_job_that_fails_is_one_failure_and_is_not_resubmitted(bfl, upstream, fault, error):
    before = len(bfl.jobs)
    with pytest.raises(error):
        tracking.image_edit(
            image=PNG,
            prompt="a hat",
            model=MODEL,
            max_retries=2,
            extra_headers={"x-fake-fault": fault},
            **upstream,
        )
    assert len(bfl.jobs) == before + 1


def test_a_wrong_key_is_permission_denied(bfl):
    with pytest.raises(PermissionDeniedError, match="Invalid Authentication"):
        tracking.image_edit(
            image=PNG, prompt="a hat", model=MODEL, api_base=bfl.url, api_key="bfl-wrong-000000"
        )


def test_a_polling_url_on_another_host_never_gets_the_key():
    from tracking.providers.black_forest_labs import _Job

    job = _Job("bfl-secret", "api.bfl.ai", "png")
    assert job.poll("https://api.eu.bfl.ai/v1/get_result?id=1", 0.5).request.headers
    with pytest.raises(APIResponseError, match="another host"):
        job.poll("https://collector.example/v1/get_result?id=1", 0.5)


async def test_200_concurrent_jobs_share_the_pool(bfl, upstream):
    bfl.state.peers.clear()
    before = len(bfl.jobs)
    results = await asyncio.gather(
        *(
            tracking.aimage_edit(image=PNG, prompt=f"hat {i}", model=MODEL, **upstream)
            for i in range(200)
        )
    )
    assert all(r.images_returned == 1 for r in results)
    assert len(bfl.jobs) == before + 200
    assert len(bfl.state.peers) <= 200  # every submit, poll and download on the pool


def test_the_official_client_edits_with_flux_through_the_proxy(bfl, tmp_path):
    image = tmp_path / "in.png"
    image.write_bytes(PNG)
    params = {"model": MODEL, "api_key": BFL_KEY, "api_base": bfl.url}
    raw = edit_through_proxy(tmp_path, "flux", params, image=image, prompt="a hat")
    assert raw.parse().data[0].b64_json
    assert Decimal(raw.headers["x-tracking-response-cost"]) == Decimal("0.04")
