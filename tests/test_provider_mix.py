"""One proxy config mixing every provider: OpenAI, Gemini, FLUX (Black Forest Labs), Stability AI,
Recraft and xAI, each behind its own fake upstream, with a fallback from xAI to FLUX.

Each call through the official ``openai`` client is priced (the figures the provider tests compute
by hand), has its ledger row, is counted on ``/metrics`` under its provider, and counts against
the end user's budget like any other; once the budget is spent, a call to any provider is refused
before its upstream sees it.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.accounts_support import bearer
from tests.conftest import API_KEY, make_half_mask, make_png
from tests.proxy_support import MASTER_KEY, ProxyProcess, write_config
from tracking.testing import FakeOpenAI
from tracking.testing.fake_bfl import FakeBFL
from tracking.testing.fake_gemini import FakeGemini
from tracking.testing.fake_recraft import FakeRecraft
from tracking.testing.fake_stability import FakeStability
from tracking.testing.fake_xai import FakeXAI

PNG = make_png(64, 64)
USER = "mixed-provider-user"
KEYS = {
    "gemini": "AIzaFakeGeminiKeyMix0123456789abcd",
    "bfl": "bfl-mix-key-0123456789abcdef",
    "stability": "sk-stability-mix-0123456789",
    "recraft": "recraft-mix-token-0123456789",
    "xai": "xai-mix-key-0123456789",
}


class Upstreams:
    def __init__(self) -> None:
        self.gemini = FakeGemini(api_keys=[KEYS["gemini"]])
        self.bfl = FakeBFL(api_keys=[KEYS["bfl"]], polls=1)
        self.stability = FakeStability(api_keys=[KEYS["stability"]])
        self.recraft = FakeRecraft(api_keys=[KEYS["recraft"]])
        self.xai = FakeXAI(api_keys=[KEYS["xai"]])

    def all(self) -> tuple[Any, ...]:
        return (self.gemini, self.bfl, self.stability, self.recraft, self.xai)


@pytest.fixture(scope="module")
def upstreams() -> Iterator[Upstreams]:
    servers = Upstreams()
    for server in servers.all():
        server.__enter__()
    try:
        yield servers
    finally:
        for server in servers.all():
            server.__exit__(None, None, None)


def _deployment(name: str, model: str, key: str, base: str) -> dict[str, Any]:
    params = {"model": model, "api_key": key, "api_base": base, "max_retries": 0}
    return {"model_name": name, "litellm_params": params}


@pytest.fixture(scope="module")
def proxy(
    fake: FakeOpenAI, upstreams: Upstreams, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    folder = tmp_path_factory.mktemp("mixed-providers")
    url = f"sqlite:///{folder / 'ledger.db'}"
    config = write_config(
        folder / "config.yaml",
        {
            "model_list": [
                _deployment("gpt", "gpt-image-2", API_KEY, fake.url),
                _deployment(
                    "banana", "gemini/gemini-3.1-flash-image", KEYS["gemini"], upstreams.gemini.url
                ),
                _deployment(
                    "flux", "black_forest_labs/flux-kontext-pro", KEYS["bfl"], upstreams.bfl.url
                ),
                _deployment(
                    "inpaint", "stability/inpaint", KEYS["stability"], upstreams.stability.url
                ),
                _deployment("recraft", "recraft/recraftv3", KEYS["recraft"], upstreams.recraft.url),
                _deployment("grok", "xai/grok-imagine-image", KEYS["xai"], upstreams.xai.url),
                # Nothing listens on port 9: every call to this group falls back to FLUX.
                _deployment(
                    "grok-down", "xai/grok-imagine-image", KEYS["xai"], "http://127.0.0.1:9"
                ),
            ],
            "router_settings": {"num_retries": 0, "fallbacks": [{"grok-down": ["flux"]}]},
            "litellm_settings": {"success_callback": ["sql"], "failure_callback": ["sql"]},
            "general_settings": {"master_key": MASTER_KEY, "database_url": url},
        },
    )
    with ProxyProcess(config, env={"TRACKING_DATABASE_URL": url}) as process:
        yield process


def _edit(client: openai.OpenAI, folder: Path, model: str, **extra: Any) -> Any:
    (folder / "in.png").write_bytes(PNG)
    with contextlib.ExitStack() as files:
        if "mask" in extra:
            (folder / "mask.png").write_bytes(extra.pop("mask"))
            extra["mask"] = files.enter_context((folder / "mask.png").open("rb"))
        image = files.enter_context((folder / "in.png").open("rb"))
        return client.images.with_raw_response.edit(
            model=model, image=image, prompt="a red hat", user=USER, **extra
        )


def _metric(text: str, name: str, **labels: str) -> Decimal:
    """The sum of a metric's samples whose labels include ``labels``."""
    total = Decimal(0)
    for line in text.splitlines():
        match = re.match(rf"{name}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            total += Decimal(match.group(2))
    return total


def test_one_config_mixes_every_provider_priced_logged_metered_and_budgeted(
    proxy, fake, upstreams, tmp_path
):
    admin = bearer(MASTER_KEY)
    with httpx.Client(base_url=proxy.url, headers=admin, timeout=30) as http:
        made = http.post("/customer/new", json={"user_id": USER, "max_budget": "5"})
        assert made.status_code == 200, made.text
    bfl_jobs = len(upstreams.bfl.jobs)
    with openai.OpenAI(base_url=proxy.url, api_key=MASTER_KEY, max_retries=0) as client:
        calls = {
            "gpt": _edit(client, tmp_path, "gpt", quality="low", size="1024x1024"),
            "banana": _edit(client, tmp_path, "banana", size="1024x1024"),
            "flux": _edit(client, tmp_path, "flux"),
            "inpaint": _edit(client, tmp_path, "inpaint", mask=make_half_mask()),
            "recraft": _edit(client, tmp_path, "recraft"),
            "grok": _edit(client, tmp_path, "grok"),
            "grok-down": _edit(client, tmp_path, "grok-down"),
        }
    for name, raw in calls.items():
        assert raw.parse().data, name
    costs = {name: Decimal(raw.headers["x-tracking-response-cost"]) for name, raw in calls.items()}
    # The providers' own figures (their tests compute each by hand): FLUX Kontext Pro $0.04 an
    # image; Stability's inpaint $0.05 a call; Recraft 40 credits at 1,000 a dollar; xAI's
    # reported ticks (one output at 200,000,000 and one input at 20,000,000, 10^10 a dollar).
    assert costs["flux"] == costs["grok-down"] == Decimal("0.04")
    assert costs["inpaint"] == Decimal("0.05")
    assert costs["recraft"] == Decimal("0.04")
    assert costs["grok"] == Decimal("0.022")
    assert costs["gpt"] > 0 and costs["banana"] > 0
    assert len(upstreams.bfl.jobs) == bfl_jobs + 2  # its own call and the fallback

    with httpx.Client(base_url=proxy.url, headers=admin, timeout=30) as http:
        rows = http.get("/spend/logs", params={"user": USER}).json()
        rows = rows if isinstance(rows, list) else rows["data"]
        by_id = {row["request_id"]: row for row in rows}
        for name, raw in calls.items():
            row = by_id[raw.headers["x-tracking-request-id"]]
            assert Decimal(str(row["cost_usd"])) == costs[name], name
            assert row["model"] == name
        providers = {
            by_id[raw.headers["x-tracking-request-id"]]["provider"] for raw in calls.values()
        }
        assert providers == {"openai", "gemini", "black_forest_labs", "stability", "recraft", "xai"}

        info = http.get("/customer/info", params={"end_user_id": USER}).json()
        spent = sum(costs.values(), Decimal(0))
        assert Decimal(info["total_spend"]) == spent

        metrics = http.get("/metrics").text
        for provider in ("black_forest_labs", "stability", "recraft", "xai", "gemini", "openai"):
            assert _metric(metrics, "image_edit_cost_usd_total", provider=provider) > 0, provider
        metered = _metric(metrics, "image_edit_cost_usd_total")
        assert metered == spent

        # The budget now equals what was spent: the next call, to any provider, is refused
        # before its upstream sees it.
        capped = http.post("/customer/update", json={"user_id": USER, "max_budget": str(spent)})
        assert capped.status_code == 200, capped.text
    stability_calls = len(upstreams.stability.requests)
    with openai.OpenAI(base_url=proxy.url, api_key=MASTER_KEY, max_retries=0) as client:
        for name in ("flux", "inpaint"):
            with pytest.raises(openai.RateLimitError) as refused:
                _edit(
                    client,
                    tmp_path,
                    name,
                    **({"mask": make_half_mask()} if name == "inpaint" else {}),
                )
            assert refused.value.code == "budget_exceeded"
    assert len(upstreams.bfl.jobs) == bfl_jobs + 2
    assert len(upstreams.stability.requests) == stability_calls
