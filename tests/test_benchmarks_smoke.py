"""Every benchmark runs with --quick and writes well-formed JSON (no timing is asserted)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from tests.services import (
    PG_HOST,
    PG_PORT,
    REDIS_HOST,
    REDIS_PORT,
    require_service,
    require_tool,
)

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _run(name: str, out: Path, *extra: str, timeout: float = 120) -> dict:
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / f"{name}.py"), "--quick", "--out", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=timeout,
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


def test_sdk_overhead_each_reports_every_integration_on_its_own(tmp_path):
    document = _run("sdk_overhead", tmp_path / "sdk.json", "--each")
    assert document["integrations"]["available"], document["integrations"]["reason"]
    names = document["integrations"]["names"]
    assert sorted(names) == ["otel", "prometheus", "sql", "structlog"]
    for name in names:
        alone = document["variants"][f"tracking, only {name}"]
        assert alone["calls"] == document["rounds"] * document["batch"]
        assert isinstance(alone["added_cpu_ms_per_call"], float)


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


@pytest.mark.timeout(240)
def test_vs_litellm_quick_measures_our_side_and_never_installs_litellm(tmp_path):
    """--quick with no LiteLLM virtualenv: our side is measured, LiteLLM's skipped with a reason."""
    venvs = tmp_path / "venvs"
    out = tmp_path / "vs.json"
    script = BENCHMARKS / "vs_litellm" / "run.py"
    result = subprocess.run(
        [sys.executable, str(script), "--quick", "--out", str(out), "--venvs", str(venvs)],
        capture_output=True,
        text=True,
        timeout=220,
    )
    assert result.returncode == 0, result.stderr
    assert "LiteLLM side skipped" in result.stdout
    assert not venvs.exists()  # nothing was installed
    document = json.loads(out.read_text())
    assert document["benchmark"] == "vs_litellm" and document["quick"] is True
    litellm = document["litellm"]
    assert litellm["available"] is False and "--quick installs nothing" in litellm["reason"]
    assert litellm["version"].count(".") == 2
    sync, asynchronous = document["sync"], document["async"]
    assert sync["variants"]["litellm"] == {"available": False, "reason": litellm["reason"]}
    assert asynchronous["variants"]["litellm"]["available"] is False
    for name in ("raw httpx", "tracking", "tracking, all integrations"):
        figures = sync["variants"][name]
        assert figures["calls"] == sync["rounds"] * sync["batch"]
        assert figures["cpu_ms_per_call"] > 0 and figures["p50_ms"] > 0
    assert sync["variants"]["raw httpx"]["cpu_efficiency_vs_raw"] == 1.0
    assert asynchronous["concurrency"] == 32
    for name in ("raw aiohttp", "tracking", "tracking, all integrations"):
        assert asynchronous["variants"][name]["requests"] > 0
    proxy = document["proxy"]
    if shutil.which("wrk") is None:
        assert proxy == {"available": False, "reason": proxy["reason"]}
        assert "wrk" in proxy["reason"]
    else:
        for connections in (16, 64):
            for name in ("fake upstream", "minimal forwarder", "tracking serve"):
                figures = proxy["targets"][f"{name} c{connections}"]
                assert figures["rps"] > 0 and figures["errors"] == 0
            assert set(proxy["ratios"][f"c{connections}"]) == {
                "tracking serve / minimal forwarder req/s",
                "tracking serve / minimal forwarder p99",
            }


@pytest.mark.timeout(240)
def test_two_workers_keep_a_budget_exact_under_load(tmp_path):
    """Two workers, PostgreSQL ledger, Redis counters: a key's budget exhausted by wrk at
    concurrency 64 is never overspent by more than one call, and every answer has its row."""
    require_tool("wrk", "wrk")
    require_service("PostgreSQL", PG_HOST, PG_PORT)
    require_service("Redis", REDIS_HOST, REDIS_PORT)
    out = tmp_path / "two.json"
    result = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "proxy" / "run.py"),
            "--two-workers",
            *("--rounds", "1", "--duration", "2", "--json", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=220,
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(out.read_text())
    assert document["workers"] == 2
    for name in ("fake upstream", "two workers"):
        for connections in (16, 64):
            figures = document["throughput"][f"{name} c{connections}"]
            assert figures["rps"] > 0 and figures["errors"] == 0
    budget = document["budget"]
    assert budget["refused"] > 0  # the load went past the budget
    assert Decimal(budget["spend_usd"]) <= Decimal(budget["budget_usd"]) + Decimal(
        budget["call_cost_usd"]
    )
    assert budget["within_budget_plus_one_call"] is True
    assert budget["ledger_rows"] >= budget["successes_counted_by_wrk"] > 0
    assert Decimal(budget["spend_usd"]) == budget["ledger_rows"] * Decimal(budget["call_cost_usd"])


@pytest.mark.timeout(240)
def test_proxy_against_a_revision_runs_that_revision_in_the_same_rounds(tmp_path):
    """--against REV: tracking serve from a git revision is a fourth target, measured in the
    same rounds, and this tree's ratios to it are reported."""
    require_tool("wrk", "wrk")
    require_tool("git", "git")
    out = tmp_path / "against.json"
    result = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "proxy" / "run.py"),
            # 2 s: on a loaded machine a 1 s wrk run could end before any request did
            *("--against", "HEAD", "--rounds", "1", "--duration", "2", "--json", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=220,
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(out.read_text())
    for connections in (16, 64):
        for name in ("minimal forwarder", "tracking serve", "tracking serve @HEAD"):
            figures = document[f"{name} c{connections}"]
            assert figures["rps"] > 0 and figures["errors"] == 0
        against = document[f"against c{connections}"]
        assert against["rps_ratio"] > 0 and against["cpu_ratio"] > 0
        # the p99 ratio round by round, and its part beyond the req/s ratio (closed loop)
        ratio = document[f"ratio c{connections}"]
        assert len(ratio["p99_runs"]) == len(ratio["runs"]) == 1
        assert ratio["p99_over_mean_ratio"] == pytest.approx(
            ratio["p99_runs"][0] * ratio["runs"][0]
        )
    assert "this tree / HEAD at c64" in result.stdout


def test_syscalls_counts_each_servers_system_calls_per_request(tmp_path):
    require_tool("wrk", "wrk")
    require_tool("strace", "strace")
    out = tmp_path / "syscalls.json"
    result = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "proxy" / "syscalls.py"),
            *("--duration", "1", "--json", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    document = json.loads(out.read_text())
    servers = {"minimal forwarder", "tracking serve"}
    assert set(document) == servers | {f"{name} threads" for name in servers}
    for name in servers:
        figures = document[name]
        assert figures["requests"] > 0
        # every request is read from and answered on a socket: at least a read and a write each
        assert figures["total"] >= 2
        assert (
            figures["total"]
            >= sum(v for k, v in figures.items() if k not in ("total", "requests")) - 0.01
        )
        # the untraced run's figures per request: the loop's thread ran and was switched
        threads = document[f"{name} threads"]
        assert threads["loop"]["user_us"] + threads["loop"]["system_us"] > 0
        assert threads["loop"]["voluntary"] + threads["loop"]["involuntary"] > 0
        assert all(value >= 0 for value in threads["other threads"].values())
    assert "system calls per request" in result.stdout
    assert "per request, untraced" in result.stdout


def test_proxy_against_an_unknown_revision_says_so_before_starting_anything():
    require_tool("wrk", "wrk")
    require_tool("git", "git")
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "proxy" / "run.py"), "--against", "no-such-revision"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "--against no-such-revision: git archive failed" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.timeout(420)  # Python under valgrind: a minute alone, far more on a busy machine
@pytest.mark.parametrize(
    ("part", "baseline"), [("sdk", "raw httpx (same bytes)"), ("async", "raw aiohttp (same bytes)")]
)
def test_instructions_counts_the_sdk_against_its_raw_client_under_callgrind(
    tmp_path, part, baseline
):
    """The noise-free A/B figure: callgrind's instruction totals per call, the raw client
    posting the same bytes as the baseline of the same run (quick: no integrations; the sync
    part one call at a time, the async part 32 in flight in one loop)."""
    require_tool("valgrind", "valgrind")
    document = _run("instructions", tmp_path / "instructions.json", "--part", part, timeout=400)
    figures = document[part]
    assert list(figures) == [baseline, "tracking, no integrations"]
    raw, ours = figures[baseline], figures["tracking, no integrations"]
    assert raw["ratio_to_baseline"] == 1.0 and raw["over_baseline"] == 0
    # A real count of whole HTTP calls in each interpreter, not a placeholder.
    assert raw["instructions"] > 100_000 and ours["instructions"] > raw["instructions"]
    assert ours["over_baseline"] == ours["instructions"] - raw["instructions"]
    assert set(document) & {"sdk", "async", "proxy"} == {part}


@pytest.mark.timeout(420)  # two servers under valgrind, one streamed call at a time
def test_instructions_counts_a_streamed_call_through_the_proxy_against_the_forwarder(tmp_path):
    """The streamed path's A/B figure: ``tracking serve`` relaying a stream=true edit, and the
    minimal forwarder posting the same form, each server's instructions per call under
    callgrind (quick: 10 calls), the forwarder the baseline; no other part runs."""
    require_tool("valgrind", "valgrind")
    document = _run("instructions", tmp_path / "instructions.json", "--part", "stream", timeout=400)
    figures = document["stream"]
    assert list(figures) == ["minimal forwarder", "tracking serve"]
    forwarder, serve = figures["minimal forwarder"], figures["tracking serve"]
    assert forwarder["ratio_to_baseline"] == 1.0 and forwarder["over_baseline"] == 0
    # whole calls served (a server that refused them would not have come this far)
    assert forwarder["instructions"] > 100_000 and serve["instructions"] > 100_000
    assert serve["over_baseline"] == serve["instructions"] - forwarder["instructions"]
    assert document["stream_requests"] == 10
    assert set(document) & {"sdk", "async", "proxy", "stream"} == {"stream"}


def test_against_extracts_the_whole_revision_and_imports_tracking_from_it(tmp_path):
    """--against REV runs REV's code: the archive holds the package (not only the benchmark's
    folder), and the interpreter it starts imports tracking from it, not from the repository
    root the benchmark is run from."""
    require_tool("git", "git")
    sys.path.insert(0, str(BENCHMARKS / "proxy"))
    try:
        import run as proxy_run
    finally:
        sys.path.remove(str(BENCHMARKS / "proxy"))
    tree = proxy_run.extract_revision("HEAD", tmp_path)
    assert (tree / "tracking" / "__init__.py").is_file()
    assert (tree / "tracking" / "flow.py").read_bytes() == subprocess.run(
        ["git", "-C", str(BENCHMARKS.parent), "show", "HEAD:tracking/flow.py"],
        capture_output=True,
        check=True,
    ).stdout
    command, environment = proxy_run.revision_python(tree)
    probe = subprocess.run(
        [*command, "-c", "import tracking; print(tracking.__file__)"],
        env={**os.environ, **environment},
        cwd=BENCHMARKS.parent,  # the repository root, which holds this tree's own tracking/
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(probe.stdout.strip()).resolve() == (tree / "tracking" / "__init__.py").resolve()
