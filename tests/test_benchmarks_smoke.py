"""Every benchmark runs with --quick and writes well-formed JSON (no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _run(name: str, out: Path) -> dict:
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / f"{name}.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "results written to" in result.stdout
    document = json.loads(out.read_text())
    assert document["benchmark"] == name
    assert document["quick"] is True
    assert document["machine"]["nproc"] >= 1
    assert document["machine"]["cpu_model"]
    return document


def test_import_cost_reports_every_variant_against_httpx(tmp_path):
    document = _run("import_cost", tmp_path / "import.json")
    variants = document["variants"]
    assert set(variants) == {
        "import httpx",
        "import tracking",
        "tracking.image_edit ready",
        "first response: httpx.post",
        "first response: tracking.image_edit",
    }
    for variant in variants.values():
        assert variant["samples"] == document["repeats"]
        assert variant["median_ms"] > 0 and variant["modules"] > 0
    assert variants["import httpx"]["ratio_vs_httpx"] == 1.0
    # Integrations load only when registered: a plain call imports none of them.
    assert document["integrations_loaded_without_registration"] == []


def test_sdk_overhead_reports_added_latency_and_cpu(tmp_path):
    document = _run("sdk_overhead", tmp_path / "sdk.json")
    variants = document["variants"]
    assert document["baseline"] in variants
    bare = variants["tracking, no integrations"]
    assert bare["calls"] == document["rounds"] * document["batch"]
    assert bare["p50_ms"] > 0 and bare["cpu_ms_per_call"] > 0
    assert isinstance(bare["added_p50_ms"], float)
    assert isinstance(bare["added_cpu_ms_per_call"], float)
    everything = variants["tracking, all integrations"]
    if document["integrations"]["available"]:
        assert everything["calls"] == bare["calls"]
    else:
        assert everything == {"available": False, "reason": document["integrations"]["reason"]}


@pytest.mark.timeout(180)
def test_async_throughput_compares_the_sdk_with_raw_clients(tmp_path):
    document = _run("async_throughput", tmp_path / "async.json")
    assert set(document["concurrency"]) == {"32", "128"}
    for cell in document["concurrency"].values():
        variants = cell["variants"]
        assert cell["fastest_raw"] in {"httpx.AsyncClient", "httpx + AiohttpTransport", "aiohttp"}
        assert variants[cell["fastest_raw"]]["ratio_vs_fastest_raw"] == 1.0
        assert variants[cell["leanest_raw"]]["cpu_ratio_vs_leanest_raw"] == 1.0
        bare = variants["tracking.aimage_edit, no integrations"]
        assert bare["requests"] > 0 and bare["req_per_s"] > 0
        assert "tracking.aimage_edit, all integrations" in variants
