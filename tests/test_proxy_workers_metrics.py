"""``tracking serve --workers 2``: after N calls through the proxy, ``/metrics`` (whichever
worker answers the scrape) counts exactly N, no fewer (a worker's counts never written to the
shared folder) and no more (one counted twice) — also with no ``PROMETHEUS_MULTIPROC_DIR``
given, where the server makes the folder itself."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import httpx
import pytest

from tests.accounts_support import edit, wait_for
from tests.proxy_support import MASTER_KEY, ProxyProcess, one_deployment_config, write_config

_SUCCESS = (
    'image_edit_requests_total{error_type="",model="gpt-image-1",'
    'operation="image_edit",provider="openai",served_model="gpt-image-1",status="success"}'
)


def _edit(url: str) -> httpx.Response:
    # A new connection per call, so that both workers take calls.
    with httpx.Client(timeout=60) as client:
        return edit(client, url, MASTER_KEY)


def _sample(text: str, prefix: str) -> Decimal:
    """The sum of the samples whose line starts with ``prefix`` (0 when there is none)."""
    values = [line.rpartition(" ")[2] for line in text.splitlines() if line.startswith(prefix)]
    return sum((Decimal(value) for value in values), Decimal(0))


def _scrape(url: str) -> str:
    response = httpx.get(f"{url}/metrics", timeout=60)
    assert response.status_code == 200, response.text
    return response.text


@pytest.mark.slow
@pytest.mark.parametrize("given_folder", [True, False], ids=["multiproc-dir", "server-made"])
def test_two_workers_metrics_count_every_call_through_the_proxy_once(tmp_path, fake, given_folder):
    config = write_config(
        tmp_path / "config.yaml",
        one_deployment_config(fake.url, general_settings={"master_key": MASTER_KEY}, max_retries=0),
    )
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus")} if given_folder else {}
    calls = 24
    with ProxyProcess(config, workers=2, env=env) as proxy:
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: _edit(proxy.url), range(calls)))
        assert [answer.status_code for answer in answers] == [200] * calls
        spent = sum(Decimal(a.headers["x-tracking-response-cost"]) for a in answers)
        assert spent > 0
        # Counted as soon as each call ends; waited for, not slept on, as the suite runs loaded.
        wait_for(lambda: _sample(_scrape(proxy.url), _SUCCESS) == calls, timeout=120)
        for _ in range(8):  # whichever worker answers, the same totals: none counted twice
            text = _scrape(proxy.url)
            assert _sample(text, _SUCCESS) == calls
            # float samples (each worker's sum of floats): equal to the cent's billionth
            assert abs(_sample(text, "image_edit_cost_usd_total{") - spent) < Decimal("1e-9")
