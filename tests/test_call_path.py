"""The call path's promises: exactly one event per call, even a cancelled one; unique ids."""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import tracking
from tests.conftest import API_KEY, make_png
from tests.forward_proxy import ForwardProxy
from tracking.testing import FakeOpenAI, recording

PNG = make_png(16, 16)


@pytest.fixture
def throttled() -> Iterator[FakeOpenAI]:
    """A fake of this test's own that answers every request 429 with a long Retry-After."""
    with FakeOpenAI(api_keys=[API_KEY], faults=["status=429;retry_after=30;always"]) as server:
        yield server


def _cancelled_once_sent(server: FakeOpenAI, model: str, settle: float = 0.0) -> list[Any]:
    """The events of an async call cancelled once ``server`` has its request (and ``settle``
    seconds more)."""

    async def scenario() -> None:
        call = asyncio.create_task(
            tracking.aimage_edit(
                image=PNG, prompt="p", model=model, api_base=server.url, api_key=API_KEY
            )
        )
        while server.hits < 1:
            await asyncio.sleep(0.01)
        await asyncio.sleep(settle)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call

    with recording() as recorder:
        asyncio.run(scenario())
    return list(recorder.events)


def test_a_call_cancelled_in_its_backoff_yields_exactly_one_failure_event(throttled):
    """The first attempt gets a 429 and the call sleeps 30 s before retrying; cancelling it
    there still delivers one failure event (and only one) before the cancellation propagates.
    An error answer is not billed, and nothing was in flight: it costs 0."""
    events = _cancelled_once_sent(throttled, "gpt-image-1", settle=0.05)
    assert throttled.hits == 1
    assert [(e.status, e.error_type, e.attempts, e.cost_usd) for e in events] == [
        ("failure", "cancelled", 1, 0)
    ]


def test_a_call_cancelled_while_its_request_is_in_flight_is_estimated_not_zero():
    """The upstream has the request (it answers after 5 s) when the caller cancels: it may well
    be carried out and billed, so the one failure event carries an estimate. Before, it was
    recorded as not billed, $0."""
    with FakeOpenAI(api_keys=[API_KEY], faults=["latency=5;always"]) as slow:
        (event,) = _cancelled_once_sent(slow, "gpt-image-2")
    assert (event.status, event.error_type) == ("failure", "cancelled")
    assert event.cost_source == "estimate" and event.cost_usd is not None and event.cost_usd > 0
    assert event.price_ref is not None and event.price_ref.startswith("estimate:outcome-unknown")


def test_calls_after_random_seed_in_two_threads_get_distinct_ids_and_one_row_each(
    upstream, tmp_path
):
    """An application that seeds the global generator before every call (two threads, 500
    calls each) still gets 1,000 distinct request ids, and the ledger keeps 1,000 rows."""
    import sqlalchemy as sa

    from tracking.integrations.sql import SqlLedger, spend_logs

    ledger = SqlLedger(f"sqlite:///{tmp_path / 'ledger.db'}", auto_migrate=True)
    ids: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(2)

    def caller() -> None:
        start.wait()
        for _ in range(500):
            random.seed(1)
            response = tracking.image_edit(image=PNG, prompt="p", model="gpt-image-1", **upstream)
            with lock:
                ids.append(response.request_id)

    tracking.callbacks.append(ledger)
    try:
        threads = [threading.Thread(target=caller) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        tracking.callbacks.remove(ledger)
        assert ledger.flush(30)
    with ledger.engine.connect() as conn:
        rows = conn.execute(sa.select(sa.func.count()).select_from(spend_logs)).scalar_one()
    ledger.shutdown(10)
    assert len(ids) == len(set(ids)) == 1000
    assert rows == 1000


#: Records a failure, then imports the router, then records the router's own error type; or the
#: other way round. Prints the error_type labels the metric ended with.
LABEL_SCRIPT = """\
import sys
from prometheus_client import CollectorRegistry
from tracking.integrations.prometheus import PrometheusLogger
from tests.ledger_support import make_event

logger = PrometheusLogger(CollectorRegistry())
if sys.argv[1] == "router-first":
    import tracking.router
logger.on_end(make_event(status="failure", error_type="server_error"))
import tracking.router
logger.on_end(make_event(status="failure", error_type="no_deployment_available"))
labels = sorted(
    sample.labels["error_type"]
    for metric in logger.registry.collect()
    if metric.name == "image_edit_requests"
    for sample in metric.samples
    if sample.name == "image_edit_requests_total" and sample.value  # the counted ones
)
print(",".join(labels))
"""


@pytest.mark.parametrize("order", ["router-first", "failure-first"])
def test_the_error_type_label_is_the_same_whatever_the_import_order(order, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    script = tmp_path / "labels.py"
    script.write_text(LABEL_SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script), order],
        cwd=root,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "no_deployment_available,server_error"


def test_every_error_class_uses_an_error_type_of_the_fixed_table():
    import tracking.integrations.sql
    import tracking.router  # noqa: F401  (defines no_deployment_available)
    from tracking.errors import ERROR_TYPES, TrackingError

    pending: list[type[TrackingError]] = [TrackingError]
    seen: set[str] = set()
    while pending:
        cls = pending.pop()
        seen.add(cls.error_type)
        pending.extend(cls.__subclasses__())
    assert seen <= ERROR_TYPES


def _sample(exposition: str, line_start: str) -> float:
    for line in exposition.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_an_integration_that_fails_inside_itself_is_counted_on_metrics(upstream):
    """The structlog integration cannot write its line (its stream is closed): the call goes
    on, and the failure shows as ``tracking_integration_errors_total{integration="structlog"}``
    on the ``/metrics`` page of a Prometheus logger."""
    import io

    import httpx
    from prometheus_client import CollectorRegistry

    from tracking.integrations.prometheus import PrometheusLogger, start_metrics_server
    from tracking.integrations.structlog import StructlogLogger

    closed = io.StringIO()
    closed.close()
    logs = StructlogLogger(stream=closed)
    registry = CollectorRegistry()
    # The bus counts failures for the whole process, and the page shows them once a Prometheus
    # logger is made: the count before the call is read from a page that has it.
    metrics = PrometheusLogger(registry)
    server, thread = start_metrics_server(0, registry=registry)
    series = 'tracking_integration_errors_total{integration="structlog"}'
    url = f"http://127.0.0.1:{server.server_port}/metrics"
    try:
        before = _sample(httpx.get(url).text, series)
        tracking.callbacks.extend([logs, metrics])
        try:
            tracking.image_edit(image=PNG, prompt="p", model="gpt-image-1", **upstream)
            assert logs.flush(10)
        finally:
            del tracking.callbacks[-2:]
        after = _sample(httpx.get(url).text, series)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert after == before + 1


@pytest.fixture
def proxy_env(monkeypatch) -> Iterator[ForwardProxy]:
    """A forward proxy on loopback, named by HTTP_PROXY (every other proxy variable unset)."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    with ForwardProxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        yield proxy


def _call_both_ways(fake: FakeOpenAI) -> None:
    params = {"image": PNG, "prompt": "p", "model": "gpt-image-1", "api_base": fake.url,
              "api_key": API_KEY}  # fmt: skip
    tracking.image_edit(**params)
    asyncio.run(tracking.aimage_edit(**params))


def test_sync_and_async_calls_go_through_the_same_proxy_with_the_same_user_agent(proxy_env):
    with FakeOpenAI(api_keys=[API_KEY]) as fake:  # a new upstream: clients made under the env
        _call_both_ways(fake)
        arrived = [request.headers.get("User-Agent") for request in fake.requests]
    target = f"{fake.url}/images/edits"
    agent = f"image-edit-tracking/{tracking.__version__}"
    assert proxy_env.seen == [(target, agent), (target, agent)]
    assert arrived == [agent, agent]


def test_sync_and_async_calls_honour_no_proxy_alike(proxy_env, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "example.com,127.0.0.1")
    with FakeOpenAI(api_keys=[API_KEY]) as fake:
        _call_both_ways(fake)
        assert fake.hits == 2
    assert proxy_env.seen == []


@pytest.fixture
def silent_redis() -> Iterator[tuple[str, threading.Event]]:
    """A "Redis" that accepts connections and never answers (as a paused server does): its URL,
    and an event set once a client has connected."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    connected, over = threading.Event(), threading.Event()
    held: list[socket.socket] = []

    def accept() -> None:
        while not over.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            held.append(conn)
            connected.set()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0", connected
    over.set()
    thread.join(5)
    listener.close()
    for conn in held:
        conn.close()


def test_a_redis_that_stops_answering_never_blocks_the_event_loop(silent_redis, upstream):
    """The router's state waits for Redis without holding the event loop: while the call waits
    for the silent server, other coroutines run (the loop observes the connection while Redis is
    still considered up); once the configured timeout passes, the call routes on local state."""
    from tests.router_support import deployment
    from tracking.router import RedisState, Router

    url, connected = silent_redis
    state = RedisState(url, prefix="tracking:test:silent:", socket_timeout=1.0)
    model_list = [deployment("images", upstream["api_base"], id="only")]

    async def scenario() -> tuple[bool, bool]:
        with Router(model_list, state=state) as router:
            call = asyncio.create_task(
                router.aimage_edit(image=PNG, prompt="p", model="images", max_retries=0)
            )
            while not connected.is_set():  # this coroutine runs while the call waits on Redis
                await asyncio.sleep(0.005)
            waiting_on_redis = not call.done() and not state.degraded
            response = await call
            return waiting_on_redis, response.images_returned == 1

    waiting_on_redis, answered = asyncio.run(scenario())
    assert waiting_on_redis
    assert answered and state.degraded


def test_the_parameters_are_defined_once_for_both_entry_points_and_the_parser():
    import inspect

    from tracking.request import PARAMETERS, image_edit_params, parse_call

    for entry in (tracking.image_edit, tracking.aimage_edit):
        assert (
            inspect.signature(entry).parameters == inspect.signature(image_edit_params).parameters
        )
    # safety_identifier, moderation, markup, vertex_* (4), num_retries included
    assert len(PARAMETERS) == 32
    with pytest.raises(TypeError, match="colour"):
        parse_call(image=PNG, prompt="p", model="gpt-image-1", colour="red")


def test_no_module_imports_a_private_module_of_another_package():
    """``tracking.integrations.sql._schema`` may be imported inside ``tracking.integrations.sql``
    only: other packages go through its public ``__init__``."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    offending: list[str] = []
    for top in ("tracking", "integrations", "dashboards"):
        for path in (root / top).rglob("*.py"):
            package = ".".join(path.relative_to(root).parent.parts)
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom) and node.module:
                    if node.level:  # relative: resolve against this file's package
                        base = package.split(".")[: len(package.split(".")) - node.level + 1]
                        module = ".".join([*base, node.module])
                    else:
                        module = node.module
                    parts = module.split(".")
                    private = [i for i, part in enumerate(parts) if part.startswith("_")]
                    if private and module != "__future__":
                        owner = ".".join(parts[: private[0]])
                        if package != owner:
                            offending.append(f"{path.relative_to(root)}: {module}")
    assert offending == []


class _Held:
    """Something a call's parameters hold, whose release a weak reference sees."""


@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize(
    ("fault", "image"),
    [(None, b"not an image"), ("status=400", PNG), ("drop", PNG), ("break_after=0", PNG)],
)
def test_a_failed_call_releases_its_parameters_without_the_collector(
    upstream, use_async, fault, image
):
    """A failed call's frames held its parameters (the upload) in a reference cycle with the
    exception, freed only by a full collection: unbounded in a proxy that collects rarely."""
    import gc
    import weakref

    held = _Held()
    alive = weakref.ref(held)
    params = {
        "model": "gpt-image-2",
        "image": image,
        "prompt": "a hat",
        "api_base": upstream["api_base"],
        "api_key": API_KEY,
        "max_retries": 0,
        "metadata": {"held": held},
    }
    if fault:
        params["extra_headers"] = {"x-fake-fault": fault}
    stream = fault == "break_after=0"  # a streamed call that broke off before its first event
    if stream:
        params["stream"] = True

    async def in_one_loop() -> bool:
        nonlocal params, held
        with contextlib.suppress(tracking.TrackingError):
            await tracking.aimage_edit(**params)
        del params, held
        return alive() is None

    gc.disable()
    try:
        if use_async:
            released = asyncio.run(in_one_loop())
        else:
            with contextlib.suppress(tracking.TrackingError):
                tracking.image_edit(**params)
            del params, held
            released = alive() is None
    finally:
        gc.enable()
    assert released
