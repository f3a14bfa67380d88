"""Shared fixtures: a real fake upstream on loopback and real PNG files."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from aiohttp import web
from hypothesis import HealthCheck, settings
from PIL import Image

import tracking
from tests.gemini_support import GEMINI_KEY
from tests.recorder import record_events
from tracking.testing import EventRecorder, FakeOpenAI
from tracking.testing.app_thread import AppThread

# Property-based tests: "ci" (the default) keeps every run small and bounded; run with
# HYPOTHESIS_PROFILE=thorough to search harder locally. No example database is written.
settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile("thorough", max_examples=500, deadline=None, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

API_KEY = "sk-test-0123456789abcdefSECRET"
#: Models the session fake serves that no price entry covers: calls to them are unpriced.
UNPRICED_MODELS = ("some-new-model", "acme-image-edit-1")


@pytest.fixture(scope="session", autouse=True)
def _ledger_outboxes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Ledger outboxes (PostgreSQL targets) go to a session folder, not the user's state folder."""
    mp = pytest.MonkeyPatch()
    mp.setenv("TRACKING_OUTBOX_DIR", str(tmp_path_factory.mktemp("outboxes")))
    yield
    mp.undo()


@pytest.fixture(scope="session")
def fake() -> Iterator[FakeOpenAI]:
    """One fake upstream for the session; it accepts only ``API_KEY``."""
    with FakeOpenAI(api_keys=[API_KEY], extra_models=UNPRICED_MODELS) as server:
        yield server


@pytest.fixture
def upstream(fake: FakeOpenAI) -> dict[str, str]:
    """The keyword arguments that point a call at the fake."""
    return {"api_base": fake.url, "api_key": API_KEY}


@pytest.fixture
def clean_callbacks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The three callback lists empty for the test; what it queued is delivered at its end."""
    for name in ("success_callback", "failure_callback", "callbacks"):
        monkeypatch.setattr(tracking, name, [])
    yield
    assert tracking.flush(30)


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> EventRecorder:
    """Every finished call's event, in order (a module may define its own ``recorder``)."""
    return record_events(monkeypatch)


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    """An HTTP client of its own for each test (a module may define its own ``client``)."""
    with httpx.Client(timeout=30) as http:
        yield http


def edit_either(use_async: bool, **params: Any) -> Any:
    """``tracking.image_edit(**params)``, or with ``use_async`` ``tracking.aimage_edit`` run in
    a fresh event loop: the two entry points share one implementation and every test of both."""
    if use_async:
        return asyncio.run(tracking.aimage_edit(**params))
    return tracking.image_edit(**params)


def edit_with_fault(fake: FakeOpenAI, fault: str, *, use_async: bool, **params: Any) -> Any:
    """One image edit against ``fake`` with ``fault`` asked for in its header, sync or async."""
    params = {
        "api_base": fake.url,
        "api_key": API_KEY,
        "extra_headers": {"x-fake-fault": fault},
        **params,
    }
    return edit_either(use_async, **params)


def in_forked_child(make: Callable[[], str]) -> str:
    """What ``make()`` returns in a forked child of this process (which leaves at once)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave, running nothing else of the parent's
        os.write(write, make().encode())
        os._exit(0)
    os.close(write)
    made = os.read(read, 4096).decode()
    os.close(read)
    os.waitpid(pid, 0)
    return made


def make_png(width: int = 64, height: int = 64, *, alpha: bool = True) -> bytes:
    mode = "RGBA" if alpha else "RGB"
    out = io.BytesIO()
    Image.new(mode, (width, height), (200, 30, 30, 255) if alpha else (200, 30, 30)).save(
        out, format="PNG"
    )
    return out.getvalue()


def make_half_mask(size: int = 64) -> bytes:
    """OpenAI's mask convention: the left half fully transparent (to edit), the rest opaque."""
    image = Image.new("RGBA", (size, size), (0, 0, 0, 255))
    image.paste((0, 0, 0, 0), (0, 0, size // 2, size))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def png() -> Callable[..., bytes]:
    return make_png


pytest_plugins = ["tests.services", "tests.ledger_support"]


@contextlib.contextmanager
def edits_upstream(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    name: str = "test-upstream",
    *,
    generations: bool = False,
) -> Iterator[str]:
    """Serve ``handler`` as ``POST /v1/images/edits`` (and ``/v1/images/generations`` with
    ``generations``) on loopback (an upstream that misbehaves in one particular way); yields its
    ``api_base``."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/images/edits", handler)
    if generations:
        app.router.add_post("/v1/images/generations", handler)
    server = AppThread(app, name=name, shutdown_timeout=0.1)
    port = server.start()
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.stop()


#: Credentials boto3 needs to sign requests to the loopback S3 server (never real ones).
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    """An S3-compatible server (moto's) on loopback, for one test module."""
    from moto.server import ThreadedMotoServer

    from tests.proxy_support import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def bucket(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new bucket of the test's own name on the module's S3 server (credentials set)."""
    import boto3

    from tracking.ids import new_request_id

    for key, value in S3_ENV.items():
        monkeypatch.setenv(key, value)
    name = f"images-{new_request_id()[-12:]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=name)
    return name


@pytest.fixture(autouse=True)
def _registered_prices_kept_to_their_test() -> Iterator[None]:
    """Prices a test registers (``register_prices``, a ``Router`` whose deployments price
    their models) are forgotten after it, so they never price a later test's calls."""
    from tracking import pricing

    before = dict(pricing._custom)
    yield
    if pricing._custom != before:
        with pricing._lock:
            pricing._custom.clear()
            pricing._custom.update(before)


@pytest.fixture
def fresh_prices(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The packaged price table alone for the test: no prices file, nothing registered, and no
    warning given yet (:func:`tracking.pricing.reset_prices`), before and after it."""
    from tracking.pricing import reset_prices

    monkeypatch.delenv("TRACKING_PRICES_FILE", raising=False)
    reset_prices()
    yield
    reset_prices()


@pytest.fixture
def vertex(monkeypatch: pytest.MonkeyPatch) -> None:
    """Vertex AI's project, location and access token (the fake Gemini upstream's key, which
    the Gemini tests' fakes accept), as the ``vertex_ai`` provider reads them."""
    monkeypatch.setenv("VERTEXAI_PROJECT", "my-project")
    monkeypatch.setenv("VERTEXAI_LOCATION", "us-central1")
    monkeypatch.setenv("VERTEX_ACCESS_TOKEN", GEMINI_KEY)
