"""The ledger's metrics are read from the live ledgers when they are scraped, in one process and
across worker processes sharing ``PROMETHEUS_MULTIPROC_DIR``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import tracking
from tests.ledger_support import make_event
from tests.relay import TcpRelay
from tests.services import postgres_url  # noqa: F401  (fixture)
from tracking.integrations.prometheus import PrometheusLogger
from tracking.integrations.sql import SqlLedger
from tracking.ledger_stats import LedgerStats

ROOT = Path(__file__).resolve().parent.parent


def _count(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("tracking_ledger_write_seconds_count") or 0.0


def test_a_ledger_the_bus_does_not_know_shows_on_metrics(tmp_path, monkeypatch):
    monkeypatch.setattr(tracking, "callbacks", [])  # no Prometheus logger on the bus at all
    monkeypatch.setattr(tracking, "success_callback", [])
    tracking.register()
    ledger = SqlLedger(f"sqlite:///{tmp_path / 'ledger.db'}", mode="durable", linger=0.0)
    registry = CollectorRegistry()
    PrometheusLogger(registry)  # created after the ledger, never registered on the bus
    try:
        before = _count(registry)
        for _ in range(3):
            ledger.on_end(make_event())  # durable, one at a time: one commit each
        commits = sum(ledger.ledger_stats().write_counts)
        assert commits == 3
        assert _count(registry) - before == commits
        assert registry.get_sample_value("tracking_ledger_queue_depth") == 0
    finally:
        ledger.shutdown(10)
    # shut down, the ledger's counts stay in the process's totals (a counter never goes down)
    assert _count(registry) - before == commits


def test_the_ledger_pushes_nothing_into_the_exporter():
    sources = (ROOT / "integrations" / "sql").glob("*.py")
    text = "\n".join(path.read_text(encoding="utf-8") for path in sources)
    assert "hasattr(" not in text
    assert "loaded_integrations" not in text
    assert "set_ledger_" not in (ROOT / "integrations" / "prometheus.py").read_text()


WORKER = """
import sys
from prometheus_client import CollectorRegistry
from tests.ledger_support import make_event
from tracking.integrations.prometheus import PrometheusLogger, generate_metrics
from tracking.integrations.sql import SqlLedger

url, outbox, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
PrometheusLogger(CollectorRegistry())
ledger = SqlLedger(url, mode="durable", outbox_dir=outbox, retry_max=0.2, linger=0.0)
print("ready", flush=True)
for command in sys.stdin:
    if command.strip() == "write":
        for _ in range(rows):
            ledger.on_end(make_event())  # acknowledged in the outbox; the target is away
        print(ledger.ledger_stats().to_json(), flush=True)
    elif command.strip() == "scrape":
        print(generate_metrics()[0].decode().replace("\\n", "|"), flush=True)
"""


class Worker:
    def __init__(self, url: str, outbox: Path, rows: int, metrics: Path) -> None:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics), "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(
            [sys.executable, "-c", WORKER, url, str(outbox), str(rows)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.ask(None) == "ready"

    def ask(self, command: str | None) -> str:
        assert self.process.stdin is not None and self.process.stdout is not None
        if command is not None:
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def scrape(self) -> dict[str, float]:
        text = self.ask("scrape").replace("|", "\n")
        return {
            sample.name: sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name.startswith("tracking_ledger_") and not sample.labels
        }

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.close()

    def close(self) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        if not self.process.stdin.closed:
            self.process.stdin.close()  # the worker's loop ends: it shuts down and exits
        self.process.wait(30)
        self.process.stdout.close()


def _settled(worker: Worker, expected: dict[str, float]) -> dict[str, float]:
    """Scrapes until the other workers' shared figures (at most a second old) arrive."""
    deadline = time.monotonic() + 60
    while True:
        seen = worker.scrape()
        if all(seen.get(name) == value for name, value in expected.items()):
            return seen
        if time.monotonic() > deadline:
            pytest.fail(f"expected {expected}, the scrape shows {seen}")
        time.sleep(0.2)


def test_any_worker_scrapes_every_workers_ledger_figures(
    postgres_url,  # noqa: F811
    tmp_path,
):
    SqlLedger(postgres_url, auto_migrate=True).shutdown(10)
    relay = TcpRelay(postgres_url)
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    workers: list[Worker] = []
    try:
        workers = [
            Worker(relay.url, tmp_path / f"outbox-{i}", rows, metrics)
            for i, rows in enumerate((3, 5))
        ]
        relay.cut()  # the rows wait in each worker's outbox
        stats = [LedgerStats.from_json(worker.ask("write")) for worker in workers]
        assert [s.outbox_rows for s in stats] == [3, 5]
        commits = sum(sum(s.write_counts) for s in stats)
        assert commits >= 2
        for worker in workers:  # either worker answers the same totals
            _settled(
                worker,
                {
                    "tracking_ledger_outbox_rows": 8.0,
                    "tracking_ledger_write_seconds_count": float(commits),
                },
            )
        workers[1].kill()  # a worker that is gone keeps its counts, not its gauges
        _settled(
            workers[0],
            {
                "tracking_ledger_outbox_rows": 3.0,
                "tracking_ledger_write_seconds_count": float(commits),
            },
        )
    finally:
        for worker in workers:
            worker.close()
        relay.close()
