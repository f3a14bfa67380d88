"""A budget's hold covers what a call is billed even when another model serves it.

A masked edit on a FLUX Kontext deployment runs on FLUX Fill and is billed at Fill's price (by
the deployment's terms: its discount applies to it). Fill costs more than Kontext, so a hold at
Kontext's price let an end user with less left than Fill's price overspend by the difference.
A ``tracking serve`` subprocess (SQLite ledger, counters in the process) in front of the fake
BFL upstream on loopback; Kontext pro is $0.04 an image and Fill $0.05 (the bundled prices).
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.accounts_support import accounts_config, bearer, ledger_env
from tests.conftest import make_half_mask, make_png
from tests.proxy_support import MASTER_KEY, ProxyProcess
from tracking.testing.fake_bfl import FakeBFL

BFL_KEY = "bfl-test-key-0123456789abcdef"


@pytest.fixture(scope="module")
def bfl() -> Iterator[FakeBFL]:
    with FakeBFL(api_keys=[BFL_KEY], polls=1) as server:
        yield server


@pytest.fixture(scope="module")
def proxy(bfl: FakeBFL, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    folder: Path = tmp_path_factory.mktemp("hold-served")
    url = f"sqlite:///{folder / 'ledger.db'}"
    params = {"model": "black_forest_labs/flux-kontext-pro", "api_key": BFL_KEY}
    model_list: list[dict[str, Any]] = [
        {"model_name": "kontext", "litellm_params": {**params, "api_base": bfl.url}},
        {
            "model_name": "kontext-deal",
            "litellm_params": {**params, "api_base": bfl.url},
            "model_info": {"id": "deal", "discount": "0.2"},
        },
    ]
    config = accounts_config(folder, bfl.url, url, model_list=model_list)
    with ProxyProcess(config, env=ledger_env(url)) as process:
        yield process


def _end_user(client: httpx.Client, proxy: ProxyProcess, user: str, budget: str) -> None:
    made = client.post(
        f"{proxy.url}/customer/new",
        headers=bearer(MASTER_KEY),
        json={"user_id": user, "max_budget": budget, "budget_period": "total"},
    )
    assert made.status_code == 200, made.text


def _edit(
    client: httpx.Client, proxy: ProxyProcess, model: str, user: str, *, masked: bool
) -> httpx.Response:
    files = [("image", ("a.png", make_png(64, 64), "image/png"))]
    if masked:
        files.append(("mask", ("m.png", make_half_mask(), "image/png")))
    return client.post(
        f"{proxy.url}/v1/images/edits",
        headers=bearer(MASTER_KEY),
        data={"model": model, "prompt": "a red sky", "user": user},
        files=files,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("model", "budget", "unmasked_cost"),
    [
        ("kontext", "0.045", Decimal("0.04")),  # Fill $0.05 > 0.045 > Kontext $0.04
        ("kontext-deal", "0.035", Decimal("0.032")),  # less 20%: Fill $0.04 > 0.035 > $0.032
    ],
)
def test_a_masked_kontext_call_is_held_at_fills_price(
    proxy: ProxyProcess, bfl: FakeBFL, model: str, budget: str, unmasked_cost: Decimal
) -> None:
    user = f"hold-{model}"
    with httpx.Client() as client:
        _end_user(client, proxy, user, budget)
        jobs = len(bfl.jobs)
        refused = _edit(client, proxy, model, user, masked=True)
        assert refused.status_code == 429, refused.text  # insufficient_quota, as OpenAI
        assert refused.json()["error"]["code"] == "budget_exceeded"
        assert len(bfl.jobs) == jobs  # never sent: it would have been billed past the budget
        served = _edit(client, proxy, model, user, masked=False)
        assert served.status_code == 200, served.text
        assert Decimal(served.headers["x-tracking-response-cost"]) == unmasked_cost


def test_a_masked_kontext_call_within_the_budget_is_billed_at_fills_price(
    proxy: ProxyProcess,
) -> None:
    with httpx.Client() as client:
        _end_user(client, proxy, "hold-fits", "0.05")
        served = _edit(client, proxy, "kontext", "hold-fits", masked=True)
        assert served.status_code == 200, served.text
        assert Decimal(served.headers["x-tracking-response-cost"]) == Decimal("0.05")
