"""The proxy's refusals, a call refused before any model served it, and a model's images and
tokens: each series is scraped at 0 before its first count.

A counter series that appears already at 1 has no increase: ``rate()`` and ``increase()`` never
see its first count (tests/test_first_seen_series.py covers the router's series and the bus's).
Here: every ``image_edit_proxy_rejections_total{reason}`` from the proxy's start; each model
group's ``image_edit_requests_total`` with no served model (a call refused before any request
was built, ``tracking.errors.UNSERVED_ERROR_TYPES``: 12 series a group); each served model's
``image_edit_images_total`` for the sizes and qualities its family lists, and its
``image_edit_tokens_total`` for the tokens its price is read from. Proved on a real proxy's
``/metrics`` and with a real Prometheus reading the dashboards' panels.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import tracking
from tests.conftest import API_KEY
from tests.proxy_support import MASTER_KEY, ProxyProcess
from tests.test_dashboards import (
    Prometheus,
    _by,
    _small_png,
    panel_queries,
    start_prometheus,  # noqa: F401 - a fixture, used by name
    substitute,
)
from tracking.errors import ERROR_TYPES, UNSERVED_ERROR_TYPES
from tracking.integrations.prometheus import PROXY_REJECTION_REASONS, PrometheusLogger
from tracking.testing import FakeOpenAI, recording

OPERATIONS = ("image_edit", "image_generation")
#: gpt-image-1's family: its sizes and qualities, and the empty value (neither sent nor told)
GPT_IMAGE_SIZES = {"", "auto", "1024x1024", "1024x1536", "1536x1024"}
GPT_IMAGE_QUALITIES = {"", "auto", "low", "medium", "high"}
#: the kinds of token gpt-image-1's price is read from, as the metric labels them
GPT_IMAGE_TOKENS = {"input_text", "input_image", "cached_input", "output_image"}

Key = tuple[str, frozenset[tuple[str, str]]]


def _counters(text: str) -> dict[Key, float]:
    """Every counter sample (``..._total``) of an exposition that is ours, by name and
    labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        if family.type == "counter"
        for sample in family.samples
        if sample.name.endswith("_total") and sample.name.startswith(("image_edit_", "tracking_"))
    }


def _scrape(proxy: ProxyProcess) -> dict[Key, float]:
    return _counters(httpx.get(f"{proxy.url}/metrics", timeout=10).text)


def _series(
    samples: dict[Key, float], name: str, **match: str
) -> dict[frozenset[tuple[str, str]], float]:
    return {
        labels: value
        for (sample, labels), value in samples.items()
        if sample == name and set(match.items()) <= labels
    }


def _labelled(samples: dict[Key, float], name: str, *keys: str, **match: str) -> set[Any]:
    """The values of ``keys`` of the series of ``name`` matching ``match``, each at 0."""
    found = _series(samples, name, **match)
    assert set(found.values()) <= {0}, found
    return {tuple(dict(labels)[key] for key in keys) for labels in found}


def _edit(proxy: ProxyProcess, model: str, key: str | None = MASTER_KEY, **form: str) -> int:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    answer = httpx.post(
        f"{proxy.url}/v1/images/edits",
        data={"model": model, "prompt": "add a red hat", **form},
        files={"image": ("a.png", _small_png(), "image/png")},
        headers=headers,
        timeout=30,
    )
    return answer.status_code


CONFIG = """
model_list:
  - model_name: big
    litellm_params: {{model: gpt-image-1, api_key: "{api_key}", api_base: "{fake}"}}
  - model_name: small
    litellm_params: {{model: gpt-image-1-mini, api_key: "{api_key}", api_base: "{fake}"}}
general_settings:
  master_key: "{master_key}"
"""


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[ProxyProcess]:
    with FakeOpenAI(api_keys=[API_KEY]) as fake:
        config = tmp_path / "config.yaml"
        config.write_text(CONFIG.format(api_key=API_KEY, fake=fake.url, master_key=MASTER_KEY))
        with ProxyProcess(config) as started:
            yield started


# --- a real proxy's /metrics -----------------------------------------------------------------


def test_a_fresh_proxy_scrapes_its_refusals_and_each_groups_unserved_failures_at_0(proxy):
    """Before any call: each rejection reason the proxy can count, and for each model group
    and operation each error type a call refused before any request can end with, at 0 (and
    no more: bounded, per group). Then the first refusal of each kind is a rise from 0."""
    before = _scrape(proxy)
    assert _labelled(before, "image_edit_proxy_rejections_total", "reason") == {
        (reason,) for reason in PROXY_REJECTION_REASONS
    }
    where = {"served_model": "", "provider": ""}
    keys = ("model", "operation", "status", "error_type")
    unserved = _labelled(before, "image_edit_requests_total", *keys, **where)
    assert unserved == {
        (group, operation, "failure", error_type)
        for group in ("big", "small")
        for operation in OPERATIONS
        for error_type in UNSERVED_ERROR_TYPES
    }

    assert _edit(proxy, "big", key=None) == 401  # refused: no key
    assert _edit(proxy, "big", size="13x13") == 400  # refused: a size gpt-image-1 does not take
    after = _scrape(proxy)

    rejections = _series(after, "image_edit_proxy_rejections_total")
    assert {dict(labels)["reason"]: n for labels, n in rejections.items() if n} == {
        "auth": 1,
        "validation": 1,
    }
    failed = _series(after, "image_edit_requests_total", served_model="", model="big")
    assert {dict(labels)["error_type"]: n for labels, n in failed.items() if n} == {
        "validation_error": 1
    }
    # every counter these refusals moved was there, at 0, before them
    moved = {key for key, value in after.items() if value != before.get(key)}
    assert moved and all(before.get(key) == 0 for key in moved), moved - before.keys()


def test_a_fresh_proxy_scrapes_each_served_models_images_and_tokens_at_0(proxy):
    """Before any call: each group's model has its images counter at 0 for every size and
    quality its family lists (and the empty value), its tokens counter for each kind of token
    its price is read from; the first call's images and tokens are a rise from 0."""
    before = _scrape(proxy)
    for group, served in (("big", "gpt-image-1"), ("small", "gpt-image-1-mini")):
        for operation in OPERATIONS:
            where = {"model": group, "served_model": served, "operation": operation}
            images = _labelled(before, "image_edit_images_total", "size", "quality", **where)
            assert images == {(s, q) for s in GPT_IMAGE_SIZES for q in GPT_IMAGE_QUALITIES}
            tokens = _labelled(before, "image_edit_tokens_total", "token_type", **where)
            assert tokens == {(kind,) for kind in GPT_IMAGE_TOKENS}

    assert _edit(proxy, "big", size="1024x1024", quality="low") == 200
    after = _scrape(proxy)

    moved = {key for key, value in after.items() if value != before.get(key)}
    names = {name for name, _ in moved}
    assert {"image_edit_images_total", "image_edit_tokens_total"} <= names, moved
    assert all(before.get(key) == 0 for key in moved), moved - before.keys()


# --- the SDK's router: which calls have no served model ----------------------------------------


def _deployment(group: str, model: str) -> dict[str, Any]:
    return {
        "model_name": group,
        "litellm_params": {"model": model, "api_base": "http://127.0.0.1:9", "api_key": "sk-k"},
    }


def _count(registry: CollectorRegistry, group: str, error_type: str) -> float | None:
    labels = {
        "model": group,
        "served_model": "",
        "provider": "",
        "operation": "image_edit",
        "status": "failure",
        "error_type": error_type,
    }
    return registry.get_sample_value("image_edit_requests_total", labels)


@pytest.mark.parametrize(
    ("group", "params", "error_type"),
    [
        ("edits", {"size": "13x13"}, "validation_error"),  # the family's rule, before a request
        ("flux", {"quality": "high"}, "unsupported_param"),  # a parameter FLUX has no field for
        ("busy", {}, "no_deployment_available"),  # its one deployment cooling down
    ],
)
def test_a_call_no_model_served_counts_on_a_series_watch_unserved_started(
    group, params, error_type
):
    """Calls through a router that end before any request was built: their event names no
    served model, their ``error_type`` is one of ``UNSERVED_ERROR_TYPES``, and the series they
    count on was at 0 after ``watch_router(router)`` (which calls ``watch_unserved`` with the
    router's groups), so they are a rise."""
    registry = CollectorRegistry()
    logger = PrometheusLogger(registry)
    router = tracking.Router(
        model_list=[
            _deployment("edits", "gpt-image-1"),
            _deployment("flux", "black_forest_labs/flux-kontext-pro"),
            _deployment("busy", "gpt-image-1-mini"),
        ]
    )
    try:
        logger.watch_router(router)  # a router's groups' unserved calls included
        assert _count(registry, group, error_type) == 0
        (busy,) = router.groups["busy"]
        router.cool_down(busy, "a test")
        with recording() as events, pytest.raises(tracking.TrackingError):
            router.image_edit(model=group, image=_small_png(), prompt="add a hat", **params)
    finally:
        router.close()
    (event,) = events.events
    assert (event.resolved_model, event.provider, event.error_type) == (None, None, error_type)
    logger.on_end(event)
    assert _count(registry, group, error_type) == 1


def test_a_direct_call_no_model_served_counts_on_a_series_watch_unserved_started():
    """Without a router, an SDK process names the models it calls: a call whose API key
    cannot be sent ends before any request was built (``configuration_error``), on a series
    ``watch_unserved`` started at 0."""
    registry = CollectorRegistry()
    logger = PrometheusLogger(registry)
    logger.watch_unserved(["gpt-image-1"])
    assert _count(registry, "gpt-image-1", "configuration_error") == 0
    with recording() as events, pytest.raises(tracking.ConfigurationError):
        tracking.image_edit(
            model="gpt-image-1",
            image=_small_png(),
            prompt="add a hat",
            api_key="sk-with\na-newline",
            api_base="http://127.0.0.1:9",
        )
    (event,) = events.events
    assert (event.resolved_model, event.error_type) == (None, "configuration_error")
    logger.on_end(event)
    assert _count(registry, "gpt-image-1", "configuration_error") == 1


def test_the_unserved_series_are_few_and_the_served_ones_every_ending():
    """``watch_unserved`` starts 12 series a model (6 error types, 2 operations), no success;
    a served model's series start success and every error type, its family's images and its
    priced tokens; a model without family or token prices starts neither."""
    assert UNSERVED_ERROR_TYPES < ERROR_TYPES
    registry = CollectorRegistry()
    logger = PrometheusLogger(registry)
    logger.watch_unserved(["g"])
    logger.metrics.series_for("g", "dall-e-2", "openai", "image_edit")
    logger.metrics.series_for("g", "house-image-refusals", "openai", "image_edit")
    samples = _counters(generate_latest(registry).decode())
    assert len(_series(samples, "image_edit_requests_total", served_model="")) == 12
    dall_e = {"served_model": "dall-e-2"}
    assert len(_series(samples, "image_edit_requests_total", **dall_e)) == 1 + len(ERROR_TYPES)
    assert _labelled(samples, "image_edit_images_total", "size", "quality", **dall_e) == {
        (size, quality)
        for size in ("", "256x256", "512x512", "1024x1024")
        for quality in ("", "standard")
    }
    assert not _series(samples, "image_edit_tokens_total", **dall_e)  # priced per image
    house = {"served_model": "house-image-refusals"}
    assert not _series(samples, "image_edit_images_total", **house)
    assert not _series(samples, "image_edit_tokens_total", **house)


# --- a real Prometheus reading the dashboards' panels ---------------------------------------


def _panel_by(prom: Prometheus, title: str, label: str, **variables: str) -> dict[str, float]:
    """The panel's values summed by ``label``."""
    (query,) = [q for q in panel_queries() if q.panel == title]
    return _by(prom, label, f"sum by ({label}) ({substitute(query.expr, **variables)})")


@pytest.mark.slow
def test_first_refusals_images_and_tokens_show_on_the_panels(
    start_prometheus,  # noqa: F811
    proxy,
):
    """On a proxy that has served nothing yet: the first request refused without a key, the
    first call of a group refused for its size (no model served it) and the first images and
    tokens of a model each show on their rate panel: each series was scraped at 0 first."""
    prom = start_prometheus({"proxy": proxy.port})
    prom.scraped_once_more("proxy")  # every series as it is before any call
    assert _edit(proxy, "big", key=None) == 401
    assert _edit(proxy, "small", size="13x13") == 400
    assert _edit(proxy, "big", size="1024x1024", quality="low") == 200
    prom.scraped_once_more("proxy")

    refused = _panel_by(prom, "Proxy rejections by reason", "reason")
    assert refused.get("auth", 0) > 0 and refused.get("validation", 0) > 0, refused
    shares = _panel_by(prom, "Error ratio by error type", "error_type", model="small")
    assert shares.get("validation_error", 0) > 0, shares
    images = _panel_by(prom, "Images per minute by model, size and quality", "model")
    assert images.get("big", 0) > 0, images
    tokens = _panel_by(prom, "Tokens per minute by type", "token_type")
    assert tokens.get("output_image", 0) > 0, tokens
