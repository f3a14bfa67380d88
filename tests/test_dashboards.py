"""The Grafana dashboards and Prometheus rules under dashboards/, checked as code and for real.

Structural checks need nothing but Python: the committed JSON is what the generator produces,
every metric and label a query names is in the metric contract (``dashboards/contract.py``, which
must match the metric reference in docs/observability.md), units and variables are set.
The rest runs a real Prometheus (Debian's ``prometheus`` package; ``.ci/run`` installs it) on a
free loopback port with its own config and data directory, scraping every second:

* every panel query, variable query and rule expression parses and evaluates;
* an SDK process with the real ``prometheus`` integration runs a mixed workload against the fake
  upstream (priced and unpriced calls, failures, and through a ``tracking.Router`` a retry, a
  fallback and a cooldown), a ``tracking serve`` subprocess refuses a wrong key and an oversized
  body, and every panel that workload exercises (``MUST_HAVE_DATA``) returns data;
* every panel and rule returns data against an exposition built from the contract table itself,
  which covers the parts the workload does not reach (ledger gauges, dropped events, callback
  errors, the opt-in per-end-user metric).

Outside CI, a missing Prometheus binary skips those tests with the reason; in CI it fails.
"""

from __future__ import annotations

import json
import math
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from dashboards import build
from dashboards.contract import METRICS, TARGET_LABELS, exposed_names, metric_of_series
from tests.conftest import API_KEY
from tests.services import require_tool

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_DIR = ROOT / "dashboards" / "grafana"
RULES_DIR = ROOT / "dashboards" / "rules"
PROVISIONING_DIR = ROOT / "dashboards" / "provisioning"
RULE_FILES = sorted(RULES_DIR.glob("*.rules.yml"))

#: Panels the end-to-end workload exercises: each must return data. The SDK process
#: (tests/prometheus_workload.py) makes priced and unpriced calls, failures, and routed calls with
#: a retry, a fallback and a cooldown; a ``tracking serve`` subprocess refuses a wrong key and an
#: oversized body.
MUST_HAVE_DATA = (
    "Spend per hour by model",
    "Spend per hour by operation",
    "Spend today by model",
    "Spend today",
    "Images per minute by model, size and quality",
    "Request rate by status",
    "Error ratio by error type",
    "Tokens per minute by type",
    "Latency p50 / p95 / p99 by model",
    "Unpriced requests by model",
    "Retries by model and deployment",
    "Fallbacks by route and outcome",
    "Deployment cooldowns",
    "Proxy rejections by reason",
)
#: Panels the workload does not reach; they are checked against the contract exposition.
NOT_EXERCISED_BY_SDK = (
    "Top end users by spend",  # opt-in metric, off by default
    "Ledger queue and outbox",  # SQL ledger's gauges (the proxy's ledger is not instrumented)
    "Ledger write latency p95 and replays",  # SQL ledger
    "Dropped events by sink",  # only when a queue overflows
    "Callback errors by callback",  # only when a callback fails
    "Integration errors by integration",  # only when an integration fails inside
    "Ledger stuck seconds",  # 0 unless a ledger is stuck: the workload checks the 0
    "End-user series evicted",  # opt-in metric
    "Attempts withheld by budgets",  # the proxy's budgets only
)

# Grafana's built-in variables and the dashboard's own, as the test substitutes them.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "1h", "$__interval": "15s"}
IDENTIFIER = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
OUR_NAMESPACE = re.compile(r"\b(?:image_edit|tracking)_[a-zA-Z0-9_]+")


# --- what the dashboards and rules contain ---------------------------------------------------


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    ref_id: str
    expr: str
    instant: bool


def _dashboards() -> dict[str, dict[str, Any]]:
    return {
        path.name: json.loads(path.read_text(encoding="utf-8"))
        for path in sorted(DASHBOARD_DIR.glob("*.json"))
    }


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # panels inside collapsed rows


def panel_queries() -> list[PanelQuery]:
    out = []
    for name, dashboard in _dashboards().items():
        for panel in _panels(dashboard):
            for target in panel.get("targets", []):
                out.append(
                    PanelQuery(
                        name,
                        panel["title"],
                        target["refId"],
                        target["expr"],
                        bool(target.get("instant")),
                    )
                )
    return out


def variable_queries() -> dict[str, str]:
    """Each query variable's ``label_values(...)`` as the PromQL Grafana runs for it."""
    out = {}
    for dashboard in _dashboards().values():
        for variable in dashboard["templating"]["list"]:
            if variable["type"] != "query":
                continue
            match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["query"])
            assert match, f"unexpected variable query {variable['query']!r}"
            out[f"{dashboard['uid']}/{variable['name']}"] = f"group by ({match[2]}) ({match[1]})"
    return out


def rules() -> list[dict[str, Any]]:
    out = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            out.extend(group["rules"])
    return out


def substitute(expr: str, model: str = ".*", provider: str = ".*", operation: str = ".*") -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    expr = expr.replace("$model", model).replace("$provider", provider)
    return expr.replace("$operation", operation)


def all_expressions() -> dict[str, str]:
    """Every PromQL expression shipped, keyed by where it lives."""
    exprs = {f"{q.dashboard}/{q.panel}/{q.ref_id}": q.expr for q in panel_queries()}
    exprs.update({f"variable {k}": v for k, v in variable_queries().items()})
    for rule in rules():
        exprs[f"rule {rule.get('record') or rule.get('alert')}"] = rule["expr"]
    return exprs


# --- structure -------------------------------------------------------------------------------


def test_committed_dashboards_are_what_the_generator_builds():
    generated = build.render_all()
    assert {path.name for path in generated} == set(_dashboards())
    for path, text in generated.items():
        assert path.read_text(encoding="utf-8") == text, (
            f"{path.name} is out of date: run python -m dashboards.build"
        )


def test_generator_check_mode_reports_a_stale_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(build, "OUTPUT_DIR", tmp_path)
    assert build.main(["--check"]) == 1  # nothing written yet: every file is stale
    assert "out of date" in capsys.readouterr().err
    assert build.main([]) == 0
    assert build.main(["--check"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        s.filename for s in build.DASHBOARDS
    )


def test_every_issue_panel_exists_with_its_unit():
    units = {}
    for dashboard in _dashboards().values():
        for panel in _panels(dashboard):
            if panel["type"] != "row":
                units[panel["title"]] = panel["fieldConfig"]["defaults"].get("unit")
    expected = {
        "Spend per hour by model": "currencyUSD",
        "Spend per hour by operation": "currencyUSD",
        "Spend today by model": "currencyUSD",
        "Images per minute by model, size and quality": "suffix: img/min",
        "Request rate by status": "reqps",
        "Error ratio by error type": "percentunit",
        "Latency p50 / p95 / p99 by model": "s",
        "Retries by model and deployment": "reqps",
        "Fallbacks by route and outcome": "reqps",
        "Deployment cooldowns": "short",
        "Unpriced requests by model": "short",
        "Ledger queue and outbox": "short",
        "Dropped events by sink": "reqps",
        "Callback errors by callback": "reqps",
        "Integration errors by integration": "reqps",
        "Ledger stuck seconds": "s",
        "Top end users by spend": "currencyUSD",
        "Proxy rejections by reason": "reqps",
    }
    for title, unit in expected.items():
        assert units.get(title) == unit, title
    # Every panel is accounted for by the end-to-end test: exercised, or not reachable.
    assert set(units) == set(MUST_HAVE_DATA) | set(NOT_EXERCISED_BY_SDK)
    assert not set(MUST_HAVE_DATA) & set(NOT_EXERCISED_BY_SDK)


def test_dashboards_have_the_datasource_model_and_provider_variables():
    for name, dashboard in _dashboards().items():
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert set(variables) == {"datasource", "model", "provider", "operation"}, name
        operation = variables["operation"]
        assert operation["type"] == "custom" and operation["query"] == (
            "image_edit,image_generation"
        )
        assert operation["multi"] and operation["includeAll"], name
        assert variables["datasource"]["query"] == "prometheus"
        for var in ("model", "provider"):
            assert variables[var]["multi"] and variables[var]["includeAll"], (name, var)
            assert variables[var]["datasource"]["uid"] == "${datasource}"
        ids = [p["id"] for p in _panels(dashboard)]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        for panel in (p for p in _panels(dashboard) if p["type"] != "row"):
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            for target in panel.get("targets", []):
                assert target["datasource"]["uid"] == "${datasource}"


def test_model_scoped_queries_follow_the_variables():
    for query in panel_queries():
        if any(
            m in query.expr
            for m in ("image_edit_requests_total", "image_edit_cost_usd_total", "_images_total")
        ):
            assert '$model"' in query.expr and '$provider"' in query.expr, query
            assert '$operation"' in query.expr, query


def _selectors(expr: str) -> Iterator[tuple[str, str]]:
    """(series name, matcher text) for every ``name{...}`` or bare ``name[...]`` selector."""
    for match in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\}|\[)", expr):
        yield match[1], match[2] if match[2].startswith("{") else ""


def test_every_metric_and_label_named_is_in_the_contract():
    recorded = {r["record"] for r in rules() if "record" in r}
    functions_and_keywords = {
        "sum", "rate", "increase", "histogram_quantile", "topk", "max", "deriv", "group",
    }  # fmt: skip
    for where, expr in all_expressions().items():
        names = set(OUR_NAMESPACE.findall(expr))
        for series, matchers in _selectors(expr):
            if series in functions_and_keywords:
                continue
            names.add(series)
            metric = metric_of_series(series)
            assert metric is not None, f"{where}: {series} is not a contract metric"
            for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers):
                allowed = {*METRICS[metric].labels, *TARGET_LABELS}
                if series.endswith("_bucket"):
                    allowed.add("le")
                assert label in allowed, f"{where}: {series} has no label {label!r}"
        for name in names:
            assert metric_of_series(name) or name in recorded, f"{where}: unknown metric {name}"
        # Aggregation labels exist on some metric of the expression.
        metrics = {m for n in names if (m := metric_of_series(n))}
        available = {"le", *TARGET_LABELS} | {lab for m in metrics for lab in METRICS[m].labels}
        for group in re.findall(r"\b(?:by|ignoring)\s*\(([^)]*)\)", expr):
            for label in filter(None, (g.strip() for g in group.split(","))):
                assert label in available, f"{where}: grouping by unknown label {label!r}"


def test_contract_table_matches_the_documented_metric_reference():
    """The metric table users read (docs/observability.md) names exactly the contract's metrics,
    each with exactly its labels and type."""
    text = (ROOT / "docs" / "observability.md").read_text(encoding="utf-8")
    # The metric table alone: from its header to the first line that is no table row (the page
    # has other tables, such as the report figures beside the metrics).
    start = text.index("| metric | type | labels |")
    end = text.find("\n\n", start)
    text = text[start : end if end >= 0 else len(text)]
    assert text.count("\n") > 10, "the metric table was not found whole"
    table: dict[str, tuple[str, tuple[str, ...]]] = {}
    for name, kind, labels in re.findall(r"^\| `(\w+)` \| ([^|]*) \|([^|]*)\|", text, re.M):
        # Label names are the backticked words outside parentheses (which list their values).
        table[name] = (
            kind.split()[0].rstrip(","),
            tuple(re.findall(r"`(\w+)`", re.sub(r"\(.*?\)", "", labels))),
        )
    assert set(table) == set(METRICS)
    for name, (kind, labels) in table.items():
        assert kind == METRICS[name].type, name
        assert set(labels) == set(METRICS[name].labels), name


def test_provisioning_files_point_grafana_at_the_dashboards():
    (datasource,) = yaml.safe_load(
        (PROVISIONING_DIR / "datasources" / "prometheus.yaml").read_text()
    )["datasources"]
    assert datasource["type"] == "prometheus" and datasource["url"].startswith("http")
    (provider,) = yaml.safe_load((PROVISIONING_DIR / "dashboards" / "image-edit.yaml").read_text())[
        "providers"
    ]
    assert provider["type"] == "file" and provider["options"]["path"]


def test_rules_cover_the_issue_alerts():
    alerts = {r["alert"]: r for r in rules() if "alert" in r}
    assert set(alerts) == {
        "ImageEditSpendBurnRateHigh",
        "ImageEditErrorRatioHigh",
        "ImageEditUnpricedModelSeen",
        "ImageEditLedgerOutboxGrowing",
        "ImageEditLedgerRowsQuarantined",
        "ImageEditLedgerStuck",
        "ImageEditInstanceDown",
        "ImageEditCallbacksFailing",
        "ImageEditIntegrationFailing",
        "ImageEditEventsDropped",
    }
    for name, rule in alerts.items():
        assert rule["annotations"]["summary"] and rule["labels"]["severity"], name
        assert rule["annotations"]["description"], name


def _panel(title: str) -> dict[str, Any]:
    (panel,) = [p for d in _dashboards().values() for p in _panels(d) if p["title"] == title]
    return panel


def test_pipeline_health_shows_a_stuck_ledger_and_failing_integrations():
    """A stuck ledger (spend data piling up unwritten) is critical, and its panel draws the
    alert's threshold; integration failures have a panel by integration beside their alert."""
    alerts = {r["alert"]: r for r in rules() if "alert" in r}
    stuck = alerts["ImageEditLedgerStuck"]
    assert stuck["labels"]["severity"] == "critical" and stuck["for"] == "2m"
    match = re.fullmatch(
        r"max by \(instance\) \(tracking_ledger_stuck_seconds\) > (\d+)", stuck["expr"]
    )
    assert match, stuck["expr"]
    panel = _panel("Ledger stuck seconds")
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [s["value"] for s in steps if s["color"] == "red"] == [int(match[1])]
    assert [t["expr"] for t in panel["targets"]] == [
        "max by (instance) (tracking_ledger_stuck_seconds)"
    ]
    failing = _panel("Integration errors by integration")
    (target,) = failing["targets"]
    assert "tracking_integration_errors_total" in target["expr"]
    assert target["legendFormat"] == "{{integration}}"
    assert "tracking_integration_errors_total" in alerts["ImageEditIntegrationFailing"]["expr"]


# --- a real Prometheus -----------------------------------------------------------------------


def _require_binary(name: str) -> str:
    return require_tool(name, "prometheus")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _promtool(*args: str, timeout: float) -> str:
    """Run ``promtool`` with ``args``; its output, once it has passed."""
    result = subprocess.run(
        [_require_binary("promtool"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_promtool_check_rules_passes():
    out = _promtool("check", "rules", *map(str, RULE_FILES), timeout=30)
    assert f"SUCCESS: {len(rules())} rules found" in out


def test_promtool_unit_tests_of_the_alerts_pass():
    """The alerts fire on a counter's first occurrence: a labelled counter is exported from its
    first increment, already at 1, where ``increase()`` alone sees no rise (a QA pass found
    three alerts that could never fire on a first unpriced call, callback error or drop)."""
    tests = sorted(RULES_DIR.glob("*.rules.test.yml"))
    assert tests, "no promtool rule tests"
    assert "SUCCESS" in _promtool("test", "rules", *map(str, tests), timeout=60)


class Prometheus:
    """A Prometheus server of our own: loopback port, own config and data directory."""

    def __init__(self, workdir: Path, targets: dict[str, int]) -> None:
        self.binary = _require_binary("prometheus")
        self.workdir = workdir
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(path) for path in RULE_FILES],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
                for job, port in targets.items()
            ],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = workdir / "prometheus.log"
        self.client = httpx.Client(base_url=self.url, timeout=10)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.workdir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.wait_until(lambda: self._ready(), "Prometheus to be ready")

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            pytest.fail(f"Prometheus exited: {self.log.read_text()}")
        try:
            return self.client.get("/-/ready").status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        self.client.close()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def wait_until(self, condition: Any, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.2)

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant query's result vector; a parse or evaluation error fails the test."""
        response = self.client.get("/api/v1/query", params={"query": expr})
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", (expr, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        if body["data"]["resultType"] == "scalar":
            return [{"metric": {}, "value": result}]
        return result

    def scraped_once_more(self, job: str) -> None:
        """Wait until the job's target has been scraped after this moment."""
        start = time.time()

        def scraped() -> bool:
            targets = self.client.get("/api/v1/targets").json()["data"]["activeTargets"]
            for target in targets:
                if target["labels"]["job"] == job and target["health"] == "up":
                    last = target["lastScrape"]
                    return _iso_to_epoch(last) > start
            return False

        self.wait_until(scraped, f"a fresh scrape of {job}")


def _iso_to_epoch(stamp: str) -> float:
    from datetime import datetime

    # Prometheus prints nanoseconds; Python parses microseconds at most.
    trimmed = re.sub(r"(\.\d{6})\d+", r"\1", stamp).replace("Z", "+00:00")
    return datetime.fromisoformat(trimmed).timestamp()


@pytest.fixture
def start_prometheus(tmp_path: Path) -> Iterator[Any]:
    started: list[Prometheus] = []

    def start(targets: dict[str, int]) -> Prometheus:
        workdir = tmp_path / f"prometheus-{len(started)}"
        workdir.mkdir()
        server = Prometheus(workdir, targets)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()


def _values(result: Iterable[dict[str, Any]]) -> list[float]:
    return [float(series["value"][1]) for series in result]


def _has_data(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(v) for v in _values(result))


def _assert_rules_loaded_and_healthy(prom: Prometheus) -> None:
    def evaluated() -> bool:
        groups = prom.client.get("/api/v1/rules").json()["data"]["groups"]
        loaded = [r for g in groups for r in g["rules"]]
        return len(loaded) == len(rules()) and all(
            r.get("lastEvaluation", "").startswith("2") and r["health"] != "unknown" for r in loaded
        )

    prom.wait_until(evaluated, "every rule to be evaluated once")
    groups = prom.client.get("/api/v1/rules").json()["data"]["groups"]
    for rule in (r for g in groups for r in g["rules"]):
        assert rule["health"] == "ok", rule


# --- the real workload: an SDK process and the proxy ------------------------------------------


class WorkloadProcess:
    """tests/prometheus_workload.py in a child process, answering one JSON line per round."""

    def __init__(self, fake_url: str, port: int, log: Path) -> None:
        self._log = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.prometheus_workload", fake_url, API_KEY, str(port)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self.log = log

    def read_round(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, f"workload process ended early: {self.log.read_text()}"
        summary: dict[str, Any] = json.loads(line)
        return summary

    def another_round(self) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write("round\n")
        self.process.stdin.flush()
        return self.read_round()

    def close(self) -> None:
        try:
            self.process.communicate("exit\n", timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.communicate()
        finally:
            self._log.close()


#: The proxy's request size limit in the workload; the oversized body is twice as large.
PROXY_LIMIT_MB = 0.05
PROXY_CONFIG = """
model_list:
  - model_name: gpt-image-1
    litellm_params: {{model: gpt-image-1, api_key: "{api_key}", api_base: "{fake}"}}
general_settings:
  master_key: "{master_key}"
  max_request_size_mb: {limit}
"""


class ProxyWorkload:
    """``tracking serve`` in a subprocess, sent one success, a wrong key and an oversized body
    per round; it counts what it sent so the test can compare with Prometheus."""

    def __init__(self, fake_url: str, folder: Path) -> None:
        from tests.proxy_support import MASTER_KEY, ProxyProcess

        folder.mkdir()
        config = folder / "config.yaml"
        config.write_text(
            PROXY_CONFIG.format(
                api_key=API_KEY, fake=fake_url, master_key=MASTER_KEY, limit=PROXY_LIMIT_MB
            )
        )
        self.master_key = MASTER_KEY
        self.proxy = ProxyProcess(config)
        self.sent = {"success": 0, "auth": 0, "size": 0}

    def start(self) -> None:
        self.proxy.start()

    def stop(self) -> None:
        self.proxy.stop()  # SIGTERM; it raises when the proxy ignores it

    def post(self, key: str, image: bytes) -> httpx.Response:
        return httpx.post(
            f"{self.proxy.url}/v1/images/edits",
            data={"model": "gpt-image-1", "prompt": "add a red hat", "size": "1024x1024"},
            files={"image": ("a.png", image, "image/png")},
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )

    def round(self, png: bytes) -> None:
        post = self.post
        assert post(self.master_key, png).status_code == 200, self.proxy.log()
        self.sent["success"] += 1
        assert post("sk-not-a-key-of-this-proxy-000", png).status_code == 401
        self.sent["auth"] += 1
        oversized = png + b"\0" * int(2 * PROXY_LIMIT_MB * 1024 * 1024)
        assert post(self.master_key, oversized).status_code == 413
        self.sent["size"] += 1


def _small_png() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGBA", (64, 64), (200, 30, 30, 255)).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.slow
def test_workload_fills_every_exercised_panel(start_prometheus, fake, tmp_path):
    _require_binary("prometheus")
    sdk_port = _free_port()
    proxy = ProxyWorkload(fake.url, tmp_path / "proxy")
    proxy.start()
    workload: WorkloadProcess | None = None
    try:
        prom = start_prometheus({"sdk": sdk_port, "proxy": proxy.proxy.port})
        workload = WorkloadProcess(fake.url, sdk_port, tmp_path / "workload.log")
        png = _small_png()
        first = workload.read_round()
        proxy.round(png)
        # Every series exists before the second round moves it, so rates see both rounds.
        prom.scraped_once_more("sdk")
        prom.scraped_once_more("proxy")
        second = workload.another_round()
        proxy.round(png)
        prom.scraped_once_more("sdk")
        prom.scraped_once_more("proxy")
        # The processes stay up while querying: a target that goes away marks its series stale.
        _check_sdk_workload(prom, [first, second])
        _check_proxy_workload(prom, proxy)
        _check_panels_and_rules(prom)
    finally:
        if workload is not None:
            workload.close()
        proxy.stop()
    assert workload.process.returncode == 0, workload.log.read_text()


def _by(prom: Prometheus, label: str, expr: str) -> dict[str, float]:
    return {s["metric"].get(label, ""): float(s["value"][1]) for s in prom.query(expr)}


def _check_sdk_workload(prom: Prometheus, rounds: list[dict[str, Any]]) -> None:
    def total(key: str) -> int:
        return sum(r[key] for r in rounds)

    assert rounds[0]["failures"] == 2 and rounds[0]["successes"] >= 6
    assert total("priced") > 0, "pricing exists, yet no workload call was priced"

    # Prometheus saw exactly the calls the workload made, successes and failures alike.
    by_status = _by(prom, "status", 'sum by (status) (image_edit_requests_total{job="sdk"})')
    assert by_status == {"success": total("successes"), "failure": total("failures")}
    assert sum(by_status.values()) == total("calls")
    error_types = {
        s["metric"].get("error_type")
        for s in prom.query('image_edit_requests_total{job="sdk", status="failure"} > 0')
    }
    assert len(error_types) == 2, error_types  # authentication and validation differ

    # The router's work, counted exactly: the retries of the flaky and the pool groups, the
    # fallback of the group that is down, the cooldowns of the revoked deployment.
    retries = _by(prom, "model", 'sum by (model) (image_edit_retries_total{job="sdk"})')
    for group in ("flaky-gpt-image-1", "pool-gpt-image-1"):
        assert retries.get(group) == sum(r["retries"][group] for r in rounds), retries
    # (the router's other label sets are there too, at 0: watch_router)
    (fallback,) = prom.query('image_edit_fallbacks_total{job="sdk"} > 0')
    assert {k: fallback["metric"][k] for k in ("from_model", "to_model", "outcome")} == {
        "from_model": "down-gpt-image-1",
        "to_model": "gpt-image-1",
        "outcome": "success",
    }
    assert float(fallback["value"][1]) == total("fallbacks") == len(rounds)
    cooldowns = _by(prom, "deployment", 'image_edit_deployment_cooldowns_total{job="sdk"} > 0')
    assert cooldowns == {"pool-revoked": total("cooldowns")} and total("cooldowns") == len(rounds)
    spend = _by(prom, "model", 'sum by (model) (image_edit_cost_usd_total{job="sdk"})')
    assert spend.get("gpt-image-1", 0) > 0 and spend.get("down-gpt-image-1", 0) > 0, spend

    # What the code exports is inside the contract, with the contract's labels.
    exported = prom.client.get(
        "/api/v1/series", params={"match[]": '{job="sdk", __name__=~"(image_edit|tracking)_.+"}'}
    ).json()["data"]
    seen = set()
    for series in exported:
        name = series["__name__"]
        metric = metric_of_series(name)
        if metric is None and name.endswith("_created"):  # prometheus_client's creation stamps
            base = name.removesuffix("_created")
            metric = metric_of_series(base + "_total") or metric_of_series(base)
        assert metric is not None, f"exported {name} is not in the contract"
        seen.add(metric)
        labels = set(series) - {"__name__", *TARGET_LABELS, "le"}
        assert labels <= set(METRICS[metric].labels), (name, labels)
        assert not any("sk-" in value for value in series.values()), "a key leaked into labels"
    expected = {n for n, spec in METRICS.items() if spec.source in ("sdk", "router")}
    assert expected <= seen, expected - seen


def _check_proxy_workload(prom: Prometheus, proxy: ProxyWorkload) -> None:
    rejections = _by(
        prom, "reason", 'sum by (reason) (image_edit_proxy_rejections_total{job="proxy"})'
    )
    assert rejections.get("auth") == proxy.sent["auth"], rejections
    assert rejections.get("size") == proxy.sent["size"], rejections
    served = _by(prom, "status", 'sum by (status) (image_edit_requests_total{job="proxy"})')
    assert served.get("success") == proxy.sent["success"], served
    exported = prom.client.get(
        "/api/v1/series", params={"match[]": '{job="proxy", __name__=~"(image_edit|tracking)_.+"}'}
    ).json()["data"]
    for series in exported:
        assert not any("sk-" in value for value in series.values()), "a key leaked into labels"


def _check_panels_and_rules(prom: Prometheus) -> None:
    empty = []
    for query in panel_queries():
        result = prom.query(substitute(query.expr))
        if query.panel in MUST_HAVE_DATA and not _has_data(result):
            empty.append(f"{query.panel} [{query.ref_id}]")
    assert not empty, f"panels without data after the workload: {empty}"
    # Rates over both rounds are above zero, not merely present.
    for title in ("Retries by model and deployment", "Fallbacks by route and outcome",
                  "Proxy rejections by reason", "Spend per hour by model"):  # fmt: skip
        (query,) = [q for q in panel_queries() if q.panel == title]
        assert any(v > 0 for v in _values(prom.query(substitute(query.expr)))), title
    for where, expr in variable_queries().items():
        assert prom.query(substitute(expr)), f"variable {where} lists nothing"

    # The model variable narrows the panels to the chosen model.
    (rate_query,) = [q for q in panel_queries() if q.panel == "Request rate by status"]
    narrowed = prom.query(substitute(rate_query.expr, model="gpt-image-1"))
    assert {s["metric"]["model"] for s in narrowed} == {"gpt-image-1"}
    everything = prom.query(substitute(rate_query.expr))
    assert {s["metric"]["model"] for s in everything} > {"gpt-image-1"}
    assert all(v > 0 for v in _values(narrowed))

    # Edits and generations apart: both operations spend, and the variable keeps one of them.
    (by_operation,) = [q for q in panel_queries() if q.panel == "Spend per hour by operation"]
    spent = {s["metric"]["operation"] for s in prom.query(substitute(by_operation.expr))}
    assert spent == {"image_edit", "image_generation"}
    only = prom.query(substitute(by_operation.expr, operation="image_generation"))
    assert {s["metric"]["operation"] for s in only} == {"image_generation"}

    # Neither process has a stuck ledger: the panel shows 0 for each, and the alert is quiet.
    (stuck,) = [q for q in panel_queries() if q.panel == "Ledger stuck seconds"]
    instances = {s["metric"]["instance"]: float(s["value"][1]) for s in prom.query(stuck.expr)}
    assert len(instances) == 2 and set(instances.values()) == {0.0}, instances
    (stuck_alert,) = [r for r in rules() if r.get("alert") == "ImageEditLedgerStuck"]
    assert prom.query(stuck_alert["expr"]) == []

    for rule in rules():
        prom.query(rule["expr"])  # parses and evaluates against real series
    _assert_rules_loaded_and_healthy(prom)


# --- the contract exposition -----------------------------------------------------------------


class ContractExposition:
    """Every contract metric with every label, counters growing with time (a custom collector).

    It is built from ``dashboards.contract.METRICS``, not from any integration: it proves each
    query is well-formed for the contract (labels, joins, histogram buckets), including the
    metrics of parts that do not exist yet.
    """

    LABEL_VALUES = {
        "model": "gpt-image-1",
        "served_model": "gpt-image-1",
        "provider": "openai",
        "size": "1024x1024",
        "quality": "low",
        "token_type": "output_image",
        "deployment": "openai-east",
        "from_model": "gpt-image-1",
        "to_model": "gpt-image-1-mini",
        "outcome": "success",
        "end_user": "user-7",
        "callback": "my_callback",
        "sink": "callbacks",
        "reason": "budget",
    }

    def __init__(self) -> None:
        self.started = time.monotonic()

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        grow = 1 + time.monotonic() - self.started
        for name, spec in METRICS.items():
            label_sets = [self._labels(spec.labels)]
            if "status" in spec.labels:  # a success and a failure series, for the ratios
                label_sets = [
                    {**label_sets[0], "status": "success", "error_type": ""},
                    {**label_sets[0], "status": "failure", "error_type": "rate_limit_error"},
                ]
                label_sets = [{k: v for k, v in s.items() if k in spec.labels} for s in label_sets]
            names = list(label_sets[0])
            if spec.type == "counter":
                family: Any = CounterMetricFamily(name, "contract", labels=names)
                for labels in label_sets:
                    family.add_metric([labels[n] for n in names], grow)
            elif spec.type == "gauge":
                family = GaugeMetricFamily(name, "contract", labels=names)
                for labels in label_sets:
                    family.add_metric([labels[n] for n in names], 150 + grow)
            else:
                family = HistogramMetricFamily(name, "contract", labels=names)
                for labels in label_sets:
                    buckets = [("0.25", grow), ("1.0", 2 * grow), ("+Inf", 3 * grow)]
                    family.add_metric([labels[n] for n in names], buckets, sum_value=grow)
            yield family

    def _labels(self, names: Iterable[str]) -> dict[str, str]:
        return {n: self.LABEL_VALUES.get(n, "x") for n in names}


@pytest.mark.slow
def test_every_panel_and_rule_returns_data_for_the_contract(start_prometheus):
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    registry.register(ContractExposition())
    port = _free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        prom = start_prometheus({"contract": port})
        prom.scraped_once_more("contract")
        prom.scraped_once_more("contract")
        prom.scraped_once_more("contract")
        for name in METRICS:
            for series in exposed_names(name):
                assert prom.query(series), f"{series} was not scraped"
        empty = [
            f"{q.panel} [{q.ref_id}]"
            for q in panel_queries()
            if not _has_data(prom.query(substitute(q.expr)))
        ]
        assert not empty, f"panels without data for contract-shaped metrics: {empty}"
        for rule in rules():
            result = prom.query(rule["expr"])
            if "record" in rule:
                assert _has_data(result), f"recording rule {rule['record']} is empty"
        # The error ratio is exactly failures / all: 1 of 2 equal series failed.
        (ratio,) = [q for q in panel_queries() if q.panel == "Error ratio by error type"]
        (series,) = prom.query(substitute(ratio.expr))
        assert series["metric"] == {"error_type": "rate_limit_error"}
        assert float(series["value"][1]) == pytest.approx(0.5)
        # The stuck time is the gauge itself, per instance (the contract's is over 150 s).
        (stuck,) = [q for q in panel_queries() if q.panel == "Ledger stuck seconds"]
        (series,) = prom.query(substitute(stuck.expr))
        assert series["metric"] == {"instance": f"127.0.0.1:{port}"}
        assert float(series["value"][1]) > 150
        # Alerts that fire on any occurrence fire here, and the stuck ledger's condition holds
        # (its gauge is past 60 s; the others need real thresholds).
        for alert in (
            "ImageEditUnpricedModelSeen",
            "ImageEditCallbacksFailing",
            "ImageEditIntegrationFailing",
            "ImageEditLedgerRowsQuarantined",
            "ImageEditLedgerStuck",
        ):
            (rule,) = [r for r in rules() if r.get("alert") == alert]
            assert prom.query(rule["expr"]), alert
        _assert_rules_loaded_and_healthy(prom)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.slow
def test_a_models_first_failure_shows_on_the_rate_panels(start_prometheus, tmp_path):
    """A model that has answered calls fails for the first time (a 400, then a 422): each
    failure's series must rise from 0, or ``rate()`` sees nothing (a series that appears at 1
    has no increase) and "Request rate by status" and "Error ratio by error type" show no
    failure at all. The Prometheus integration creates a model's failure series at 0 when it
    first records the model, and the proxy its deployments' retry and cooldown counters at 0
    when it starts, so a real Prometheus scraping a real proxy sees each first failure and the
    first retry."""
    from tracking.testing import FakeOpenAI

    png = _small_png()
    with FakeOpenAI(api_keys=[API_KEY]) as fake:
        workload = ProxyWorkload(fake.url, tmp_path / "proxy")
        with workload.proxy as proxy:
            prom = start_prometheus({"proxy": proxy.port})

            def edit() -> int:
                return workload.post(workload.master_key, png).status_code

            assert edit() == 200
            prom.scraped_once_more("proxy")  # the model's series, as the dashboards see them
            fake.inject(status=400, times=1)
            assert edit() == 400
            prom.scraped_once_more("proxy")
            fake.inject(status=422, times=1)
            assert edit() == 422
            fake.inject(status=500, times=1)
            assert edit() == 200  # after one retry, the deployment's first
            prom.scraped_once_more("proxy")
            (by_status,) = [q for q in panel_queries() if q.panel == "Request rate by status"]
            failing = _by(prom, "status", substitute(by_status.expr))
            assert failing.get("failure", 0) > 0, failing
            (ratio,) = [q for q in panel_queries() if q.panel == "Error ratio by error type"]
            shares = _by(prom, "error_type", substitute(ratio.expr))
            assert shares.get("bad_request", 0) > 0 and shares.get("unprocessable_entity", 0) > 0, (
                shares
            )
            # and the ratio alert's expression sees them too (its threshold aside)
            failed = _by(
                prom,
                "model",
                'sum by (model) (rate(image_edit_requests_total{status="failure"}[1m]))',
            )
            assert failed.get("gpt-image-1", 0) > 0, failed
            # a deployment's retry counter starts at 0 with the proxy: its first retry shows
            (retries,) = [
                q for q in panel_queries() if q.panel == "Retries by model and deployment"
            ]
            retried = _by(prom, "model", substitute(retries.expr))
            assert retried.get("gpt-image-1", 0) > 0, retried
