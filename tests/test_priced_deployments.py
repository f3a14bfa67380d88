"""One answer to "are this deployment's calls priced", the one billing gives.

The proxy says it three times before any call: ``/health``'s ``"priced"`` per deployment, the
warning ``tracking serve`` logs at start for each unpriced deployment, and the unpriced-call
counter ``watch_router`` starts at 0 for each group an unpriced deployment serves. Each used to
look the model up its own way: ``/health`` and the warning by the model's name alone (not the
deployment's ``base_model`` nor its own prices), the counter by the model with and without its
prefix (not the provider-qualified name billing tries first, and a slashed OpenAI-compatible name
cut at its slash, which billing never does). Now all three ask
``Deployment.priced()``, which looks the price up as billing does. Each test starts the proxy
from a config, reads ``/health``, its start log and a real ``/metrics`` scrape, and makes real
calls through it to a fake upstream: what the proxy said before the call is what billing did.

``watch_router`` also started ``image_generation`` series for groups whose providers cannot make
a generation (Stability's edit operations): it now starts those of the deployments that can.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import tracking
from tests.conftest import API_KEY, make_png
from tests.proxy_support import MASTER_KEY, ProxyProcess
from tracking.integrations.prometheus import PrometheusLogger
from tracking.testing import FakeOpenAI

#: Models the price table does not know, served by the fake upstream.
HOUSE = "house-mixed"
TENANT = "tenant-7/gpt-image-1"
LISTED = "house-listed"
TYPO = "gpt-imag-2"
SERVED = [HOUSE, TENANT, LISTED, TYPO, "house-solo", "house-drawn"]

CONFIG = """
model_list:
  # three deployments of one model the price table does not know: two priced each its own way,
  # one not at all (its calls are unpriced: never billed at another deployment's prices)
  - model_name: mixed-based
    litellm_params: {{model: openai/{house}, api_key: "{api_key}", api_base: "{fake}"}}
    model_info: {{id: mixed-based, base_model: gpt-image-1}}
  - model_name: mixed-drawn
    litellm_params: {{model: openai/{house}, api_key: "{api_key}", api_base: "{fake}"}}
    model_info: {{id: mixed-drawn, output_cost_per_image: 0.05}}
  - model_name: mixed-bare
    litellm_params: {{model: openai/{house}, api_key: "{api_key}", api_base: "{fake}"}}
    model_info: {{id: mixed-bare}}
  # one deployment priced by its base model alone
  - model_name: solo-based
    litellm_params: {{model: openai/house-solo, api_key: "{api_key}", api_base: "{fake}"}}
    model_info: {{base_model: gpt-image-1}}
  # priced by its model_info alone
  - model_name: solo-drawn
    litellm_params: {{model: openai/house-drawn, api_key: "{api_key}", api_base: "{fake}"}}
    model_info: {{output_cost_per_image: 0.04}}
  # an OpenAI-compatible server's slashed name: billed as written, never as gpt-image-1
  - model_name: tenant
    litellm_params: {{model: {tenant}, api_key: "{api_key}", api_base: "{fake}"}}
  # a bare name the prices: section prices under its provider's name, as billing looks it up
  - model_name: listed
    litellm_params: {{model: {listed}, api_key: "{api_key}", api_base: "{fake}"}}
  # a misspelt model: unpriced everywhere
  - model_name: typo
    litellm_params: {{model: {typo}, api_key: "{api_key}", api_base: "{fake}"}}
  # edits only (Stability's inpaint), falling back to a group that also generates
  - model_name: inpaint
    litellm_params: {{model: stability/inpaint, api_key: sk-stability-test}}
  - model_name: gpt
    litellm_params: {{model: gpt-image-1, api_key: "{api_key}", api_base: "{fake}"}}
router_settings:
  fallbacks: [{{inpaint: [gpt]}}]
  num_retries: 0
prices:
  openai/{listed}:
    per_image: {{any: {{any: "0.03"}}}}
general_settings:
  master_key: "{master_key}"
"""

#: group -> whether its calls are priced, as billing prices them
PRICED = {
    "mixed-based": True,
    "mixed-drawn": True,
    "mixed-bare": False,
    "solo-based": True,
    "solo-drawn": True,
    "tenant": False,
    "listed": True,
    "typo": False,
    "inpaint": True,
    "gpt": True,
}


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_keys=[API_KEY], extra_models=SERVED) as fake:
        yield fake


@pytest.fixture(scope="module")
def proxy(upstream: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    config = _written(tmp_path_factory.mktemp("priced"), CONFIG, upstream)
    with ProxyProcess(config) as running:
        yield running


def _written(folder: Path, template: str, upstream: FakeOpenAI) -> Path:
    """``template`` filled in with the fake upstream, the models and the keys, as a config."""
    config = folder / "config.yaml"
    names = {"house": HOUSE, "tenant": TENANT, "listed": LISTED, "typo": TYPO}
    config.write_text(
        template.format(api_key=API_KEY, fake=upstream.url, master_key=MASTER_KEY, **names)
    )
    return config


def _health(proxy: ProxyProcess) -> dict[str, Any]:
    answer = httpx.get(
        f"{proxy.url}/health", headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _scrape(proxy: ProxyProcess) -> list[tuple[str, dict[str, str], float]]:
    text = httpx.get(f"{proxy.url}/metrics", timeout=30).text
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def _unpriced_counters(samples: list[tuple[str, dict[str, str], float]]) -> dict[str, float]:
    return {
        labels["model"]: value
        for name, labels, value in samples
        if name == "image_edit_unpriced_requests_total"
    }


def _edit(proxy: ProxyProcess, model: str) -> httpx.Response:
    return httpx.post(
        f"{proxy.url}/v1/images/edits",
        data={"model": model, "prompt": "add a red hat", "size": "1024x1024", "quality": "low"},
        files={"image": ("a.png", make_png(), "image/png")},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        timeout=60,
    )


def test_health_says_priced_as_billing_prices_each_deployment(proxy: ProxyProcess) -> None:
    """``"priced"`` per deployment: a deployment priced by its own base model or its own
    ``model_info`` is priced even where its model's name is registered with another
    deployment's (unpriced) prices; a slashed OpenAI-compatible name is not priced as the
    name after its slash; a bare name the ``prices:`` section prices under ``openai/`` is."""
    report = _health(proxy)
    assert report["unhealthy_endpoints"] == [], report
    said = {entry["model_name"]: entry["priced"] for entry in report["healthy_endpoints"]}
    assert said == PRICED


def test_the_start_warns_of_exactly_the_deployments_billing_leaves_unpriced(
    proxy: ProxyProcess,
) -> None:
    """One warning per deployment whose calls are recorded unpriced, none for a deployment
    priced by its own base model or ``model_info`` beside an unpriced one of its model."""
    warned = sorted(
        line.split("model_list[", 1)[1].split("]", 1)[0]
        for line in proxy.log().splitlines()
        if "has no known price" in line
    )
    # model_list order: mixed-bare is [2], tenant [5], typo [7]
    assert warned == ["2", "5", "7"], proxy.log()
    assert f"model_list[5] (tenant): {TENANT} has no known price" in proxy.log()


def test_the_unpriced_counters_start_for_exactly_the_groups_billing_leaves_unpriced(
    proxy: ProxyProcess,
) -> None:
    """Scraped before any call: an unpriced-call counter at 0 for each group with an unpriced
    deployment (the slashed name included), none for a group every deployment of which is
    priced (the ``prices:`` section's bare name included)."""
    started = _unpriced_counters(_scrape(proxy))
    unpriced = {group for group, priced in PRICED.items() if not priced}
    assert set(started) == unpriced, started


def test_generation_series_start_only_for_deployments_that_can_generate(
    proxy: ProxyProcess,
) -> None:
    """``inpaint`` (Stability's edit operation, falling back to ``gpt``) starts its edit
    series with both models and its generation series with gpt-image-1 alone: a generation
    asking it is passed over to its fallback; Stability never serves one. (The calls no model
    served, ``('', '')``, start for both operations: ``watch_unserved``.)"""
    served: dict[str, set[tuple[str, str]]] = {"image_edit": set(), "image_generation": set()}
    for name, labels, _ in _scrape(proxy):
        if name == "image_edit_requests_total" and labels["model"] == "inpaint":
            served[labels["operation"]].add((labels["served_model"], labels["provider"]))
    assert served == {
        "image_edit": {("inpaint", "stability"), ("gpt-image-1", "openai"), ("", "")},
        "image_generation": {("gpt-image-1", "openai"), ("", "")},
    }


def test_real_calls_are_billed_as_health_said(proxy: ProxyProcess) -> None:
    """A call to each group the fake upstream serves: priced where ``/health`` said priced,
    recorded unpriced (and counted by the counter that started at 0) where it said not."""
    said = {e["model_name"]: e["priced"] for e in _health(proxy)["healthy_endpoints"]}
    costs = {}
    for group in (
        "mixed-based",
        "mixed-drawn",
        "mixed-bare",
        "solo-based",
        "solo-drawn",
        "tenant",
        "listed",
        "typo",
    ):
        answer = _edit(proxy, group)
        assert answer.status_code == 200, answer.text
        costs[group] = answer.headers["x-tracking-response-cost"]
        assert (costs[group] != "unpriced") is said[group], (group, costs[group])
    assert costs["mixed-drawn"] == "0.05"  # its own model_info, not the model's other prices
    assert costs["solo-drawn"] == "0.04"
    assert costs["listed"] == "0.03"
    counted = _unpriced_counters(_scrape(proxy))
    assert all(counted[group] >= 1 for group in ("mixed-bare", "tenant", "typo")), counted


# --- an SDK router: what it registers decides what its calls are billed at -------------------


def _house_router(upstream: FakeOpenAI, *, register_prices: bool) -> tracking.Router:
    return tracking.Router(
        [
            {
                "model_name": "house",
                "litellm_params": {
                    "model": "openai/house-sdk",
                    "api_key": API_KEY,
                    "api_base": upstream.url,
                },
                "model_info": {"output_cost_per_image": 0.05},
            }
        ],
        register_prices=register_prices,
    )


@pytest.mark.parametrize("register_prices", [True, False])
def test_a_router_starts_the_unpriced_counter_only_where_its_calls_are_unpriced(
    register_prices: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Router(register_prices=False)`` registers no price: a deployment priced by its
    ``model_info`` alone is then billed unpriced, so its group's counter starts at 0 and its
    first call counts there; registered, the call costs its price and no counter starts."""
    registry = CollectorRegistry()
    logger = PrometheusLogger(registry)
    monkeypatch.setattr(tracking, "callbacks", [logger])
    with FakeOpenAI(api_keys=[API_KEY], extra_models=["house-sdk"]) as upstream:
        router = _house_router(upstream, register_prices=register_prices)
        try:
            logger.watch_router(router)
            before = _registry_unpriced(registry)
            response = router.image_edit(
                image=make_png(), prompt="add a red hat", model="house", size="1024x1024"
            )
        finally:
            router.close()
    after = _registry_unpriced(registry)
    if register_prices:
        assert before == {} and after == {}
        assert response.cost_usd is not None and str(response.cost_usd) == "0.05"
    else:
        assert before == {"house": 0}
        assert response.cost_usd is None and after == {"house": 1}


def _registry_unpriced(registry: CollectorRegistry) -> dict[str, float]:
    text = generate_latest(registry).decode()
    return {
        sample.labels["model"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "image_edit_unpriced_requests_total"
    }


def test_is_priced_answers_for_a_model_called_without_a_router_as_billing_prices_it() -> None:
    """``tracking.pricing.is_priced`` (what the docs say to ask before ``watch_unpriced``)
    gives billing's answer: a slashed OpenAI-compatible name is unpriced (it said priced, by
    the name after the slash), a bare name registered under ``openai/`` is priced (it said
    unpriced), each shown by a real call."""
    from tracking.pricing import is_priced, register_prices

    register_prices("openai/house-bare", per_image={"any": {"any": "0.02"}})
    with FakeOpenAI(api_keys=[API_KEY], extra_models=[TENANT, "house-bare"]) as upstream:
        costs = {
            model: tracking.image_edit(
                image=make_png(),
                prompt="add a red hat",
                model=model,
                size="1024x1024",
                api_key=API_KEY,
                api_base=upstream.url,
            ).cost_usd
            for model in (TENANT, "house-bare")
        }
    assert not is_priced(TENANT) and costs[TENANT] is None
    assert is_priced("house-bare") and str(costs["house-bare"]) == "0.02"


BUDGET_CONFIG = """
model_list:
  - model_name: tenant
    litellm_params: {{model: {tenant}, api_key: "{api_key}", api_base: "{fake}"}}
  - model_name: listed
    litellm_params: {{model: {listed}, api_key: "{api_key}", api_base: "{fake}"}}
prices:
  openai/{listed}:
    per_image: {{any: {{any: "0.03"}}}}
litellm_settings:
  max_budget: 10
general_settings:
  master_key: "{master_key}"
"""


def test_a_budget_refuses_exactly_the_calls_billing_leaves_unpriced(
    upstream: FakeOpenAI, tmp_path: Path
) -> None:
    """Under a budget, a call whose model has no price is refused (400 ``model_unpriced``): its
    spend could not be counted. The budget's hold looked the model up its own way: a slashed
    OpenAI-compatible name was held at the price of the name after its slash and let through,
    then recorded unpriced and never counted; a bare name priced under ``openai/`` by the
    ``prices:`` section was refused, though billing prices it."""
    with ProxyProcess(_written(tmp_path, BUDGET_CONFIG, upstream)) as proxy:
        refused = _edit(proxy, "tenant")
        priced = _edit(proxy, "listed")
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["code"] == "model_unpriced"
    assert priced.status_code == 200, priced.text
    assert priced.headers["x-tracking-response-cost"] == "0.03"
