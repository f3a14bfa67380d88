"""Two workers with PostgreSQL and Redis: ``python benchmarks/proxy/run.py --two-workers``.

``tracking serve --workers 2`` in front of the canned fake upstream, its ledger in a PostgreSQL
database of its own (created on 127.0.0.1:5432 as user ``postgres`` and dropped at the end),
rate limits and budget counters in Redis (127.0.0.1:6379) under a key prefix of its own
(``TRACKING_REDIS_PREFIX``, its keys deleted at the end), Prometheus' multiprocess folder
shared by the workers. Two phases:

* throughput: wrk at concurrency 16 and 64 with the master key, in interleaved rounds with the
  fake upstream itself for reference; requests/s, p50/p99 and the CPU of the whole process tree
  (the two workers and uvicorn's supervisor) per request. No ratio target: on a 2-core machine
  the workers share the cores with wrk, the fake, PostgreSQL and Redis.
* budget: a virtual key whose ``max_budget`` is 200.5 times one call's cost, then wrk at
  concurrency 64 with that key until well past the budget (runs of the given duration, up to
  five, until one is refused). Budgets reserve a call's maximum
  expected cost in Redis before it is forwarded and settle to the real cost after, so under any
  load the key's spend (its ledger rows, read once the outbox has shipped them) must not exceed
  the budget; the check allows one call's cost over it, and reports the figure. It also checks
  that every answered call has its row (rows >= successes wrk counted; wrk does not count the
  calls still in flight when it stops, whose rows are written all the same).
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx

PG = "host=127.0.0.1 port=5432 user=postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"
BUDGET_CALLS = Decimal("200.5")
#: wrk runs at most, one after the other, until the budget refuses a request
_MAX_BUDGET_RUNS = 5


def _reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _ledger(database: str, key_hash: str) -> tuple[int, Decimal]:
    import psycopg

    with psycopg.connect(f"{PG} dbname={database}") as conn:
        count, spend = conn.execute(
            "SELECT count(*), coalesce(sum(cost_usd), 0) FROM spend_logs "
            "WHERE api_key_hash = %s AND status = 'success'",
            (key_hash,),
        ).fetchone() or (0, 0)
    return int(count), Decimal(spend)


def _settled(database: str, key_hash: str, within: float = 60.0) -> tuple[int, Decimal]:
    """The key's rows once they stop changing (the outbox ships rows to PostgreSQL)."""
    deadline = time.monotonic() + within
    last, steady = _ledger(database, key_hash), 0
    while steady < 3 and time.monotonic() < deadline:
        time.sleep(0.5)
        now = _ledger(database, key_hash)
        steady = steady + 1 if now == last else 0
        last = now
    return last


def _budget_phase(
    bench: ModuleType, base: str, folder: Path, database: str, pid: int, duration: int
) -> dict[str, Any]:
    master = {"Authorization": f"Bearer {bench.MASTER_KEY}"}
    body = (folder / "body.bin").read_bytes()
    boundary = "benchboundary7f3a"
    answer = httpx.post(
        f"{base}/v1/images/edits",
        content=body,
        headers={**master, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        timeout=30,
    )
    answer.raise_for_status()
    cost = Decimal(answer.headers["x-tracking-response-cost"])
    budget = cost * BUDGET_CALLS
    made = httpx.post(
        f"{base}/key/generate",
        headers=master,
        json={"max_budget": str(budget), "key_alias": "bench-budget"},
        timeout=30,
    )
    made.raise_for_status()
    key, key_hash = made.json()["key"], made.json()["key_hash"]
    script, _ = bench.make_body(folder, key=key, name="budget")
    requests = errors = 0.0
    for _ in range(_MAX_BUDGET_RUNS):  # a loaded machine may not pass the budget in one run
        figures = bench.wrk(f"{base}/v1/images/edits", script, 64, duration, pid, tree=True)
        requests, errors = requests + figures["requests"], errors + figures["errors"]
        if errors:
            break
    rows, spend = _settled(database, key_hash)
    successes = int(requests - errors)
    over = spend - budget
    return {
        "call_cost_usd": str(cost),
        "budget_usd": str(budget),
        "spend_usd": str(spend),
        "over_budget_usd": str(over),
        "within_budget_plus_one_call": over <= cost,
        "ledger_rows": rows,
        "successes_counted_by_wrk": successes,
        "refused": int(errors),
        "every_answer_has_its_row": rows >= successes,
    }


def run(bench: ModuleType, rounds: int, duration: int) -> dict[str, Any]:
    """Both phases; raises SystemExit when PostgreSQL or Redis is not there."""
    for name, port in (("PostgreSQL", 5432), ("Redis", 6379)):
        if not _reachable(port):
            raise SystemExit(f"{name} is not reachable on 127.0.0.1:{port}")
    import psycopg
    import redis

    token = uuid.uuid4().hex[:10]
    database, prefix = f"tracking_bench_{token}", f"tracking:bench:{token}:"
    with psycopg.connect(f"{PG} dbname=postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    folder = Path(tempfile.mkdtemp(prefix="tracking-bench-"))
    servers: list[Any] = []
    try:
        script, _ = bench.make_body(folder)
        fake_port, port = bench.free_port(), bench.free_port()
        fake, _ = bench.start(
            [*bench.tracking(), "fake-openai", "--canned", "--port", str(fake_port)],
            f"http://127.0.0.1:{fake_port}/health",
        )
        servers.append(fake)
        url = f"postgresql://postgres@127.0.0.1:5432/{database}"
        subprocess.run([*bench.tracking(), "migrate", "--database-url", url], check=True)
        config = bench.tracking_config(
            folder, f"http://127.0.0.1:{fake_port}/v1", url, {"redis_url": REDIS_URL}
        )
        proxy, started = bench.start(
            [
                *(*bench.tracking(), "serve", "--config", str(config), "--workers", "2"),
                *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"),
            ],
            f"http://127.0.0.1:{port}/health/liveliness",
            {"TRACKING_REDIS_PREFIX": prefix},
        )
        servers.append(proxy)
        targets = {"fake upstream": (fake.pid, fake_port), "two workers": (proxy.pid, port)}
        for pid, target_port in targets.values():  # warm-up: both workers, pools, the outbox
            bench.wrk(f"http://127.0.0.1:{target_port}/v1/images/edits", script, 16, 2, pid, True)
        runs: dict[str, list[dict[str, float]]] = {}
        for index in range(rounds):
            for connections in (16, 64):
                order = list(targets) if index % 2 == 0 else list(reversed(targets))
                for name in order:
                    pid, target_port = targets[name]
                    url = f"http://127.0.0.1:{target_port}/v1/images/edits"
                    figures = bench.wrk(url, script, connections, duration, pid, True)
                    runs.setdefault(f"{name} c{connections}", []).append(figures)
        throughput = {
            key: {
                field: bench.median([f[field] for f in figures])
                for field in ("rps", "p50_ms", "p99_ms", "cpu_ms_per_request", "errors")
            }
            for key, figures in runs.items()
        }
        budget = _budget_phase(
            bench, f"http://127.0.0.1:{port}", folder, database, proxy.pid, duration
        )
    finally:
        for process in reversed(servers):
            bench.stop(process)
        with psycopg.connect(f"{PG} dbname=postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        client = redis.Redis.from_url(REDIS_URL)
        for stale in client.scan_iter(match=f"{prefix}*"):
            client.delete(stale)
        client.close()
    return {
        "workers": 2,
        "ledger": "postgresql (own database, dropped after)",
        "counters": f"redis (prefix {prefix}, deleted after)",
        "start_s": started,
        "rounds": rounds,
        "duration_s": duration,
        "throughput": throughput,
        "budget": budget,
        "load_average_end": os.getloadavg()[0],
    }


def report(result: dict[str, Any]) -> None:
    print(
        f"\ntracking serve --workers 2, PostgreSQL ledger, Redis counters; medians of "
        f"{result['rounds']} interleaved rounds of {result['duration_s']} s; CPU of the whole "
        "process tree"
    )
    print(f"{'target':<22}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'CPU ms/req':>12}{'errors':>8}")
    for name, f in result["throughput"].items():
        print(
            f"{name:<22}{f['rps']:>9.0f}{f['p50_ms']:>9.2f}{f['p99_ms']:>9.2f}"
            f"{f['cpu_ms_per_request']:>12.3f}{f['errors']:>8.0f}"
        )
    b = result["budget"]
    print(
        f"budget under load (c64): budget ${b['budget_usd']} ({BUDGET_CALLS} calls of "
        f"${b['call_cost_usd']}); spend ${b['spend_usd']} in {b['ledger_rows']} rows "
        f"({b['refused']} refused); over the budget by ${b['over_budget_usd']}: "
        f"{'within' if b['within_budget_plus_one_call'] else 'NOT within'} one call's cost; "
        f"every answered call has its row: {b['every_answer_has_its_row']}"
    )
