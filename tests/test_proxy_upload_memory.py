"""Upload bytes in flight are capped (``general_settings.max_inflight_upload_mb``: 429 while the
cap is full, 413 for a request that could never fit), one key's edits in flight are limited by
default, and the proxy's resident memory returns near its baseline after a burst of concurrent
large uploads (read from /proc; sizes kept small enough for CI)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.conftest import make_png
from tests.proxy_support import (
    MASTER_KEY,
    ProxyProcess,
    TroubleUpstream,
    one_deployment_config,
    rss_bytes,
    write_config,
)
from tracking.config import DEFAULT_MAX_PARALLEL_REQUESTS_PER_KEY, parse_config

MB = 1024 * 1024


def _config(folder: Path, api_base: str, **general: object) -> Path:
    return write_config(
        folder / "config.yaml",
        one_deployment_config(
            api_base, max_retries=0, general_settings={"master_key": MASTER_KEY, **general}
        ),
    )


def _upload(url: str, megabytes: float) -> httpx.Response:
    image = make_png(16, 16) + b"\0" * int(megabytes * MB)  # bytes after IEND: still a PNG
    return httpx.post(
        f"{url}/v1/images/edits",
        data={"model": "gpt-image-1", "prompt": "p", "quality": "low", "size": "1024x1024"},
        files={"image": ("a.png", image, "image/png")},
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        timeout=60,
    )


def test_upload_bytes_in_flight_are_capped(tmp_path):
    with TroubleUpstream() as trouble:
        config = _config(tmp_path, trouble.url("slow/1.5"), max_inflight_upload_mb=20)
        with ProxyProcess(config) as proxy, ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda _: _upload(proxy.url, 8), range(4)))
            statuses = sorted(a.status_code for a in answers)
            assert statuses == [200, 200, 429, 429], [a.text for a in answers]
            refused = [a for a in answers if a.status_code == 429]
            assert {a.json()["error"]["code"] for a in refused} == {"upload_capacity_exceeded"}
            # A refusal that waiting fixes, typed as every other rate limit of the proxy: the
            # official clients obey x-should-retry and would not retry on "false".
            assert {a.json()["error"]["type"] for a in refused} == {"requests"}
            assert all(a.headers["retry-after"] == "1" for a in refused)
            assert all(a.headers["x-should-retry"] == "true" for a in refused)
            assert trouble.hits == 2
            too_big = _upload(proxy.url, 30)  # under max_request_size_mb, over the cap
            assert too_big.status_code == 413
            assert "max_inflight_upload_mb" in too_big.json()["error"]["message"]
            assert _upload(proxy.url, 8).status_code == 200  # the bytes were given back


def test_one_keys_edits_in_flight_are_limited_by_default():
    config = parse_config({"model_list": []})
    assert config.general_settings.max_parallel_requests_per_key == 100
    assert DEFAULT_MAX_PARALLEL_REQUESTS_PER_KEY == 100
    unlimited = parse_config({"general_settings": {"max_parallel_requests_per_key": 0}})
    assert unlimited.general_settings.max_parallel_requests_per_key is None


def test_memory_returns_near_baseline_after_concurrent_large_uploads(tmp_path, fake):
    config = _config(tmp_path, fake.url)
    with ProxyProcess(config) as proxy, ThreadPoolExecutor(8) as pool:
        assert _upload(proxy.url, 0.1).status_code == 200  # warm: imports, pools, caches
        baseline = rss_bytes(proxy.pid)
        peak = baseline
        for _ in range(3):
            answers = list(pool.map(lambda _: _upload(proxy.url, 20), range(8)))
            assert [a.status_code for a in answers] == [200] * 8, [a.text for a in answers]
            peak = max(peak, rss_bytes(proxy.pid))
        # Memory is handed back when the last upload has gone, and again a second later.
        deadline = time.monotonic() + 30  # returns as soon as it is handed back
        while (after := rss_bytes(proxy.pid)) - baseline >= 100 * MB:
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
    print(f"rss MB: baseline {baseline / MB:.0f}, peak {peak / MB:.0f}, after {after / MB:.0f}")
    assert after - baseline < 100 * MB, (baseline / MB, peak / MB, after / MB)


def test_failed_calls_hand_their_uploads_back(tmp_path):
    """A failed call's frames held its upload in a reference cycle that only a full collection
    broke, and the proxy collects rarely: 20 refused 5 MB uploads kept 100 MB for good."""
    with TroubleUpstream() as trouble:
        config = _config(tmp_path, trouble.url("status/400"))
        with ProxyProcess(config) as proxy:
            assert _upload(proxy.url, 0.1).status_code == 400  # warm: imports, pools, caches
            not_an_image = b"\x00" * (5 * MB)
            baseline = rss_bytes(proxy.pid)
            for _ in range(20):
                refused = httpx.post(  # the SDK's validation refuses it
                    f"{proxy.url}/v1/images/edits",
                    data={"model": "gpt-image-1", "prompt": "p"},
                    files={"image": ("a.png", not_an_image, "image/png")},
                    headers={"Authorization": f"Bearer {MASTER_KEY}"},
                    timeout=60,
                )
                assert refused.status_code == 400, refused.text
                assert _upload(proxy.url, 5).status_code == 400  # the upstream refuses it
            after = rss_bytes(proxy.pid)
    print(f"rss MB: baseline {baseline / MB:.0f}, after {after / MB:.0f}")
    assert after - baseline < 60 * MB, (baseline / MB, after / MB)
