"""With the budget store (PostgreSQL) away, naming a ``user`` costs nothing extra (issue 18,
finding 8): a user without a budget or block is served like a call without one; a user with a
budget gets what ``general_settings.budget_store_unavailable`` says (``deny``: 503, the default;
``allow``: served unchecked). The outage is a TCP relay the test cuts, never the real server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tracking.testing import FakeOpenAI

from .conftest import API_KEY, make_png
from .proxy_support import MASTER_KEY, ProxyProcess
from .relay import TcpRelay
from .test_reliability_faults import proxy_config

AUTH = {"authorization": f"Bearer {MASTER_KEY}"}


@pytest.fixture
def relay(postgres_url: str) -> Iterator[TcpRelay]:
    relay = TcpRelay(postgres_url)
    try:
        yield relay
    finally:
        relay.close()


def _edit(proxy: ProxyProcess, user: str | None) -> httpx.Response:
    data = {"model": "gpt-image-1", "prompt": "a hat", "quality": "low"}
    if user is not None:
        data["user"] = user
    return httpx.post(
        f"{proxy.url}/v1/images/edits",
        headers=AUTH,
        data=data,
        files={"image": ("a.png", make_png(16, 16), "image/png")},
        timeout=30,
    )


@pytest.mark.parametrize("setting", [None, "allow"])
def test_users_without_a_budget_are_served_through_a_database_outage(
    tmp_path: Path, monkeypatch, relay: TcpRelay, setting: str | None
) -> None:
    monkeypatch.chdir(tmp_path)
    general: dict[str, object] = {"database_url": relay.url, "auto_migrate": True}
    if setting is not None:
        general["budget_store_unavailable"] = setting
    env = {"TRACKING_KEY_CACHE_SECONDS": "0"}  # every call asks the store: the outage shows
    with FakeOpenAI(api_keys=[API_KEY]) as upstream:
        config = proxy_config(tmp_path, upstream.url, general=general)
        with ProxyProcess(config, env=env) as proxy:
            created = httpx.post(
                f"{proxy.url}/customer/new",
                headers=AUTH,
                json={"user_id": "budgeted-bob", "max_budget": 5},
                timeout=10,
            )
            assert created.status_code == 200, created.text
            for user in (None, "carol", "budgeted-bob"):
                assert _edit(proxy, user).status_code == 200
            relay.cut()
            try:
                answers = {user: _edit(proxy, user) for user in (None, "carol", "new-erin")}
                budgeted = _edit(proxy, "budgeted-bob")
            finally:
                relay.restore()
            after = _edit(proxy, "budgeted-bob")
            metrics = httpx.get(f"{proxy.url}/metrics", headers=AUTH, timeout=10).text
    assert {u: a.status_code for u, a in answers.items()} == {
        None: 200,
        "carol": 200,
        "new-erin": 200,
    }
    if setting == "allow":
        assert budgeted.status_code == 200, budgeted.text
    else:
        assert budgeted.status_code == 503, budgeted.text
        error = budgeted.json()["error"]
        assert error["code"] == "budget_store_unavailable"
        assert "budget_store_unavailable" in error["message"]
        assert budgeted.headers["x-should-retry"] == "true"
        # counted among the proxy's own refusals, as every other one is (it was in none)
        assert 'image_edit_proxy_rejections_total{reason="store_unavailable"} 1.0' in metrics
    assert after.status_code == 200, after.text
