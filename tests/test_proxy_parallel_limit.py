"""``general_settings.max_parallel_requests_per_key``: one key's edits in flight are bounded on
each instance; the ones over the limit get 429 before any upstream call, the rest are served."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.conftest import API_KEY, make_png
from tests.proxy_support import MASTER_KEY, ProxyProcess, one_deployment_config, write_config
from tracking.testing import FakeOpenAI


def _post(url: str) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/images/edits",
        data={"model": "gpt-image-1", "prompt": "p"},
        files={"image": ("a.png", make_png(), "image/png")},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        timeout=30,
    )


def test_edits_over_the_per_key_limit_are_refused_with_429(tmp_path):
    with FakeOpenAI(api_keys=[API_KEY], faults=["latency=1.5;always"]) as slow:
        config = write_config(
            tmp_path / "config.yaml",
            one_deployment_config(
                slow.url,
                general_settings={"master_key": MASTER_KEY, "max_parallel_requests_per_key": 2},
            ),
        )
        with ProxyProcess(config) as proxy, ThreadPoolExecutor(5) as pool:
            answers = list(pool.map(_post, [proxy.url] * 5))
            statuses = sorted(a.status_code for a in answers)
            refused = [a.json()["error"] for a in answers if a.status_code == 429]
            assert statuses == [200, 200, 429, 429, 429]
            assert {e["code"] for e in refused} == {"too_many_parallel_requests"}
            assert slow.hits == 2  # the refused ones never reached the upstream
            assert _post(proxy.url).status_code == 200  # the slots are free again
            metrics = httpx.get(f"{proxy.url}/metrics").text
            assert 'image_edit_proxy_rejections_total{reason="rate"} 3.0' in metrics
