"""``rpm`` / ``tpm`` written beside ``litellm_params`` (LiteLLM accepts both places, and
``tracking.Router.from_config`` reads both) were dropped by the proxy with an "unknown key"
warning: the limit the operator wrote did not apply. They are read, checked and applied."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import API_KEY, make_png
from tests.minute_support import in_one_minute
from tests.proxy_support import ProxyProcess, write_config
from tracking.config import parse_config
from tracking.errors import ConfigurationError
from tracking.proxy.models import build_dispatcher
from tracking.testing import FakeOpenAI


def _entry(**beside: object) -> dict[str, object]:
    return {
        "model_name": "gpt-image-1",
        "litellm_params": {"model": "gpt-image-1", "api_key": API_KEY},
        **beside,
    }


def test_rpm_and_tpm_beside_litellm_params_reach_the_router():
    config = parse_config({"model_list": [_entry(rpm=7, tpm=9000)]}, environ={})
    assert config.warnings == ()
    dispatcher = build_dispatcher(config)
    (deployment,) = dispatcher.router.deployments
    assert (deployment.rpm, deployment.tpm) == (7, 9000)
    dispatcher.close()


@pytest.mark.parametrize("value", [0, -5, "ten", 1.5])
def test_a_bad_rpm_beside_litellm_params_names_its_key(value):
    with pytest.raises(ConfigurationError, match=r"model_list\[0\]\.rpm"):
        parse_config({"model_list": [_entry(rpm=value)]}, environ={})


def test_the_proxy_applies_an_rpm_written_beside_litellm_params(tmp_path):
    with FakeOpenAI(api_keys=[API_KEY]) as fake:
        entry = _entry(rpm=1)
        entry["litellm_params"] = {**entry["litellm_params"], "api_base": fake.url}  # type: ignore[dict-item]
        config = write_config(
            tmp_path / "config.yaml",
            {
                "model_list": [entry],
                "general_settings": {"database_url": f"sqlite:///{tmp_path / 'ledger.db'}"},
            },
        )
        with ProxyProcess(config) as proxy:
            statuses = _two_calls_in_one_minute(proxy.url)
    assert statuses == [200, 429]


def _two_calls_in_one_minute(url: str) -> list[int]:
    """The statuses of two edits sent one after the other within one calendar minute (``rpm``
    counts calendar minutes: two calls on either side of a minute's end are each the first of
    their minute, which a loaded machine made happen)."""

    def two_calls() -> list[int]:
        return [
            httpx.post(
                f"{url}/v1/images/edits",
                files={"image": ("in.png", make_png(), "image/png")},
                data={"model": "gpt-image-1", "prompt": "a hat", "quality": "low"},
                timeout=30,
            ).status_code
            for _ in range(2)
        ]

    return in_one_minute(two_calls)
