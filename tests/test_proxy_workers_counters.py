"""``tracking serve --workers N`` without Redis: a key's rpm window and budget are one for the
machine (the workers share a SQLite counters file), never one per worker; deployment rpm/tpm
limits, which only Redis can share, make it refuse to start with a one-line reason."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from tests.accounts_support import accounts_config, edit, generate, ledger_env, spend_rows, wait_for
from tests.minute_support import in_one_minute
from tests.proxy_support import ProxyProcess


@pytest.fixture(scope="module")
def workers(fake, tmp_path_factory) -> Iterator[ProxyProcess]:
    """One two-worker proxy for the module's tests, each with a key of its own."""
    folder = tmp_path_factory.mktemp("workers-counters")
    url = f"sqlite:///{folder / 'ledger.db'}"
    config = accounts_config(folder, fake.url, url)
    with ProxyProcess(config, env=ledger_env(url), workers=2) as process:
        yield process


def _fresh_edit(base: str, key: str) -> int:
    # A new connection per call, so that both workers take calls.
    with httpx.Client(timeout=30) as client:
        return edit(client, base, key).status_code


def test_a_keys_rpm_is_one_window_for_all_workers(workers):
    with httpx.Client(timeout=30) as client:
        key = generate(client, workers.url, rpm_limit=6)["key"]
    statuses = in_one_minute(lambda: [_fresh_edit(workers.url, key) for _ in range(16)])
    assert statuses.count(200) == 6 and statuses.count(429) == 10, statuses


def test_a_keys_budget_is_one_budget_for_all_workers(workers):
    budget = Decimal("0.05")
    with httpx.Client(timeout=30) as client:
        made = generate(client, workers.url, max_budget=str(budget))
        statuses = [_fresh_edit(workers.url, made["key"]) for _ in range(12)]
        assert statuses[-3:] == [429, 429, 429], statuses
        served = statuses.count(200)
        own = {"api_key_hash": made["key_hash"], "page_size": 100}
        wait_for(lambda: spend_rows(client, workers.url, **own)["total"] >= served)
        rows = spend_rows(client, workers.url, **own)
    spent = sum(Decimal(row["cost_usd"]) for row in rows["data"])
    assert rows["total"] == served and 0 < spent <= budget


def test_a_key_generated_on_one_worker_is_taken_at_once_by_the_others(workers):
    """Each worker keeps the set of known keys' hashes for a second; without a shared count of
    key changes, the worker that did not store a new key refused it with a 401 until its set
    was a second old."""
    made_up = "sk-" + "0" * 43  # the shape of a generated key, stored nowhere
    loaded = [_fresh_edit(workers.url, made_up) for _ in range(6)]  # each worker loads its set
    assert set(loaded) == {401}, loaded
    with httpx.Client(timeout=30) as client:
        key = generate(client, workers.url)["key"]
    statuses = [_fresh_edit(workers.url, key) for _ in range(8)]
    assert 401 not in statuses and set(statuses) == {200}, statuses


def test_deployment_rpm_without_redis_refuses_several_workers(fake, tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    config = accounts_config(tmp_path, fake.url, url)
    document = json.loads(config.read_text())
    document["model_list"][0]["litellm_params"]["rpm"] = 10
    config.write_text(json.dumps(document))
    process = ProxyProcess(config, env=ledger_env(url), workers=2).launch()
    try:
        assert process.wait(30) == 2
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    log = (tmp_path / next(p.name for p in tmp_path.glob("proxy-*.log"))).read_text()
    assert "--workers 2: deployment rpm/tpm limits (gpt-image-1)" in log
    assert "router_settings.redis_url" in log and "Traceback" not in log
