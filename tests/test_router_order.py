"""LiteLLM's per-deployment ``order`` and ``stream_timeout`` in ``litellm_params``, over real
loopback upstreams; and the litellm_params the router does not use are named at start."""

from __future__ import annotations

import pytest

import tracking
from tests.conftest import API_KEY, make_png
from tests.router_support import StubUpstream, deployment
from tracking.config import parse_config
from tracking.router import Router
from tracking.testing import FakeOpenAI


def edit(router: Router, **params: object) -> object:
    return router.image_edit(image=make_png(), prompt="a red hat", model="images", **params)


def test_the_lowest_order_takes_every_call_while_it_is_free(fake):
    with FakeOpenAI(api_keys=[API_KEY]) as backup:
        router = Router(
            [
                # the backup's weight would win most draws without the order
                deployment("images", backup.url, id="backup", api_key=API_KEY, order=2, weight=9),
                deployment("images", fake.url, id="main", api_key=API_KEY, order=1),
            ]
        )
        before = len(fake.requests)
        for _ in range(12):
            edit(router)
        assert len(fake.requests) - before == 12
        assert backup.requests == []


def test_the_next_order_serves_once_the_first_failed_this_call(fake):
    with StubUpstream(status=500, headers={"Retry-After": "0"}) as broken:
        router = Router(
            [
                deployment("images", broken.url, id="main", api_key=API_KEY, order=1),
                deployment("images", fake.url, id="second", api_key=API_KEY, order=2),
                deployment("images", fake.url, id="unordered", api_key=API_KEY, weight=50),
            ],
            num_retries=1,
            allowed_fails=9,
        )
        response = edit(router)
        assert broken.hits == 1  # the retry went to order 2, not to the unordered one
        assert response._hidden_params["deployment_id"] == "second"  # type: ignore[attr-defined]


def test_deployments_without_an_order_come_after_the_ordered_ones(fake):
    with StubUpstream(status=500, headers={"Retry-After": "0"}) as broken:
        router = Router(
            [
                deployment("images", fake.url, id="unordered", api_key=API_KEY, weight=50),
                deployment("images", broken.url, id="main", api_key=API_KEY, order=3),
            ],
            num_retries=1,
            allowed_fails=9,
        )
        response = edit(router)
        assert broken.hits == 1
        assert response._hidden_params["deployment_id"] == "unordered"  # type: ignore[attr-defined]


@pytest.mark.parametrize("bad", [0, -1, "first", 1.5, True])
def test_an_order_that_is_not_a_positive_integer_is_refused(bad):
    with pytest.raises(tracking.ConfigurationError, match=r"order must be a positive integer"):
        Router([deployment("images", "http://127.0.0.1:9/v1", id="x", order=bad)])


def test_a_streamed_call_takes_the_deployments_stream_timeout():
    with FakeOpenAI(api_keys=[API_KEY], faults=["latency=1.5;times=always"]) as slow:
        router = Router(
            [
                deployment(
                    "images", slow.url, id="d", api_key=API_KEY, timeout=60, stream_timeout=0.3
                )
            ],
            num_retries=0,
        )
        with pytest.raises(tracking.APITimeoutError):  # 0.3 s, not the call's 60 s
            edit(router, stream=True)
        edit(router)  # not streamed: the deployment's timeout, 60 s, lets it through


def test_litellm_params_the_router_does_not_use_are_named_at_start():
    config = parse_config(
        {
            "model_list": [
                {
                    "model_name": "images",
                    "litellm_params": {
                        "model": "gpt-image-2",
                        "max_retries": 3,
                        "organization": "org-1",
                        "order": 1,
                        "stream_timeout": 30,
                    },
                }
            ]
        }
    )
    warned = "\n".join(config.warnings)
    assert "model_list[0].litellm_params.organization: accepted" in warned
    # all three are used (max_retries since 2026-12-07: tests/test_deployment_max_retries.py)
    assert "order" not in warned and "stream_timeout" not in warned
    assert "max_retries" not in warned
