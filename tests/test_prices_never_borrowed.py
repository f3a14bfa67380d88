"""A call is priced by its own deployment's configuration, or by the price table, never at
prices another deployment or name was given.

- Two deployments of one ``litellm_params.model``, one with prices in its ``model_info`` and
  one with none: the prices were registered under the model's name, so the unpriced one's calls
  were billed at the other's (a negotiated contract's) prices. Now the priced one's are its own
  (``model@id``), and the other is priced as the model's name is without them: by the bundled
  table, or recorded unpriced (and warned of at start).
- A ``base_model`` that names no known price fell through to the model's name. The proxy now
  refuses to start, naming the config's key; an SDK call carrying one is recorded unpriced.
  (The retired-model counter of such calls: ``tests/test_shutdown_date_as_billed.py``.)

Each proxy test starts ``tracking serve`` on a real config with a SQLite ledger, calls it over
loopback against the fake upstream and reads the ledger's row.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

import tracking
from tests.conftest import API_KEY, make_png
from tests.proxy_support import MASTER_KEY, ProxyProcess, ledger_row, serve_once, write_config
from tracking.pricing import reset_prices
from tracking.testing import FakeOpenAI

HOUSE = "house-pair"  # a model the price table does not know


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_keys=[API_KEY], extra_models=[HOUSE]) as served:
        yield served


def _deployment(group: str, model: str, fake: FakeOpenAI, **info: Any) -> dict[str, Any]:
    return {
        "model_name": group,
        "litellm_params": {"model": model, "api_key": API_KEY, "api_base": fake.url},
        "model_info": {"id": group, **info},
    }


def _config(folder: Path, model_list: list[dict[str, Any]], **sections: Any) -> Path:
    return write_config(
        folder / "config.yaml",
        {
            "model_list": model_list,
            "general_settings": {
                "master_key": MASTER_KEY,
                "database_url": f"sqlite:///{folder / 'ledger.db'}",
            },
            **sections,
        },
    )


def _billed(proxy: ProxyProcess, client: httpx.Client, group: str) -> dict[str, Any]:
    """The ledger row of one edit through the proxy to ``group``."""
    answer = client.post(
        f"{proxy.url}/v1/images/edits",
        data={"model": group, "prompt": "a red hat", "size": "1024x1024", "quality": "low"},
        files={"image": ("a.png", make_png(), "image/png")},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
    )
    assert answer.status_code == 200, answer.text
    return ledger_row(proxy, answer.headers["x-tracking-request-id"])


def _sdk_cost(fake: FakeOpenAI, model: str) -> Decimal | None:
    """What the proxy's edit (:func:`_billed`) costs made with the SDK straight to ``model``."""
    response = tracking.image_edit(
        image=make_png(),
        prompt="a red hat",
        model=model,
        size="1024x1024",
        quality="low",
        api_key=API_KEY,
        api_base=fake.url,
    )
    cost: Decimal | None = response.cost_usd
    return cost


def _warned(proxy: ProxyProcess) -> list[str]:
    """The ``model_list[i]`` indexes the start warned of as having no known price."""
    return sorted(
        line.split("model_list[", 1)[1].split("]", 1)[0]
        for line in proxy.log().splitlines()
        if "has no known price" in line
    )


# --- 1. a deployment without prices of its own beside one with them -------------------------


@pytest.mark.parametrize("reverse", [False, True], ids=["priced-first", "bare-first"])
def test_a_deployment_without_prices_is_not_billed_at_its_siblings(
    fake: FakeOpenAI, tmp_path: Path, reverse: bool
) -> None:
    """An unknown model: the deployment with $0.05 an image is billed so, the one without any
    is recorded unpriced and is the one the start warns of (it was billed $0.05, unwarned)."""
    model_list = [
        _deployment("contract", f"openai/{HOUSE}", fake, output_cost_per_image="0.05"),
        _deployment("bare", f"openai/{HOUSE}", fake),
    ]
    if reverse:
        model_list.reverse()
    config = _config(tmp_path, model_list)
    with ProxyProcess(config) as proxy, httpx.Client(timeout=60) as client:
        contract, bare = _billed(proxy, client, "contract"), _billed(proxy, client, "bare")
        assert _warned(proxy) == ["0" if reverse else "1"]  # the bare one, alone
    assert contract["cost_usd"] == Decimal("0.05")
    assert bare["cost_usd"] is None
    assert bare["cost_source"] == "unpriced"


def test_a_deployment_without_prices_is_billed_by_the_bundled_table(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    """A model the bundled table prices (gpt-image-2, by its tokens): the deployment under a
    contract at $0.50 an image is billed so, the other as the table bills the call, exactly
    what the same call costs without any deployment's prices."""
    expected = _sdk_cost(fake, "gpt-image-2")
    assert expected is not None and expected != Decimal("0.5")
    config = _config(
        tmp_path,
        [
            _deployment("contract", "openai/gpt-image-2", fake, output_cost_per_image="0.5"),
            _deployment("list-price", "openai/gpt-image-2", fake),
        ],
    )
    with ProxyProcess(config) as proxy, httpx.Client(timeout=60) as client:
        contract = _billed(proxy, client, "contract")
        listed = _billed(proxy, client, "list-price")
        assert _warned(proxy) == []
    assert contract["cost_usd"] == Decimal("0.5")
    assert listed["cost_usd"] == expected
    assert listed["cost_source"] == "usage"


def test_the_sdk_router_bills_a_deployment_without_prices_by_the_table(fake: FakeOpenAI) -> None:
    """The SDK's ``Router`` registers the same way: the bare deployment is unpriced, and so is a
    direct call naming the model (neither deployment's prices are the model's)."""
    router = tracking.Router(
        [
            _deployment("contract", f"openai/{HOUSE}", fake, output_cost_per_image="0.05"),
            _deployment("bare", f"openai/{HOUSE}", fake),
        ]
    )
    try:
        contract = router.image_edit(model="contract", image=make_png(), prompt="a hat")
        bare = router.image_edit(model="bare", image=make_png(), prompt="a hat")
        assert {d.id: d.priced() for d in router.deployments} == {"contract": True, "bare": False}
    finally:
        router.close()
    assert contract.cost_usd == Decimal("0.05")
    assert bare.cost_usd is None


# --- 2. a base_model that names no known price ----------------------------------------------


@pytest.mark.parametrize(
    ("sections", "where"),
    [
        (
            {"model_info": {"base_model": "gpt-imag-2"}},
            "model_list[0].model_info.base_model: 'gpt-imag-2' names no known price",
        ),
        (
            {"prices": {"openai/gpt-image-2": {"base_model": "gpt-imag-2"}}},
            "prices.openai/gpt-image-2.base_model: 'gpt-imag-2' names no known price",
        ),
    ],
    ids=["model_info", "prices"],
)
def test_the_proxy_refuses_a_base_model_that_names_no_price(
    fake: FakeOpenAI, tmp_path: Path, sections: dict[str, Any], where: str
) -> None:
    """Its calls were billed as the model's own name (gpt-image-2): the proxy now refuses to
    start, saying which key of the config names the unknown model."""
    deployment = _deployment("typo", "openai/gpt-image-2", fake, **sections.get("model_info", {}))
    config = _config(tmp_path, [deployment], **{k: v for k, v in sections.items() if k == "prices"})
    refused = serve_once(config, tmp_path)
    assert refused.returncode == 2, refused.stderr
    assert where in refused.stderr


def test_a_provider_qualified_base_model_prices_the_proxys_calls(
    fake: FakeOpenAI, tmp_path: Path
) -> None:
    """``openai/gpt-image-2`` names the bundled ``gpt-image-2`` as a call to it would: the
    deployment of an unknown model is billed as it (it was unpriced: the exact name alone was
    looked up, then the deployment's own model)."""
    tracking.register_prices(f"openai/{HOUSE}", base_model="gpt-image-2")
    expected = _sdk_cost(fake, f"openai/{HOUSE}")
    reset_prices()
    assert expected is not None
    config = _config(
        tmp_path,
        [_deployment("based", f"openai/{HOUSE}", fake, base_model="openai/gpt-image-2")],
    )
    with ProxyProcess(config) as proxy, httpx.Client(timeout=60) as client:
        row = _billed(proxy, client, "based")
        assert _warned(proxy) == []
    assert row["cost_usd"] == expected


def test_an_sdk_routers_call_with_an_unknown_base_model_is_unpriced(
    fake: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    """Billed as ``gpt-image-2`` (the model it was sent as) before: now recorded unpriced, the
    warning naming the base model, and the deployment said unpriced."""
    router = tracking.Router([_deployment("typo", "gpt-image-2", fake, base_model="gpt-imag-2")])
    try:
        response = router.image_edit(model="typo", image=make_png(), prompt="a hat")
        assert [d.priced() for d in router.deployments] == [False]
    finally:
        router.close()
    assert response.images_returned == 1
    assert response.cost_usd is None
    assert "its base_model 'gpt-imag-2' names no known price" in caplog.text


def test_a_router_registering_nothing_prices_own_price_deployments_as_their_model(
    fake: FakeOpenAI,
) -> None:
    """``register_prices=False``: the deployments' own prices are not registered, so their calls
    are priced as their model is (the bundled gpt-image-2), not left unpriced by the name their
    own prices would have had."""
    expected = _sdk_cost(fake, "gpt-image-2")
    router = tracking.Router(
        [
            _deployment("contract", "openai/gpt-image-2", fake, output_cost_per_image="0.5"),
            _deployment("list-price", "openai/gpt-image-2", fake),
        ],
        register_prices=False,
    )
    try:
        costs = {
            group: router.image_edit(
                model=group, image=make_png(), prompt="a red hat", size="1024x1024", quality="low"
            ).cost_usd
            for group in ("contract", "list-price")
        }
    finally:
        router.close()
    assert costs == {"contract": expected, "list-price": expected}
