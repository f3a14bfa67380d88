"""Prometheus metrics for every image call (edit or generation), ready for one process or many.

:class:`PrometheusLogger` is the ``"prometheus"`` built-in integration. It registers the metrics
of the contract in a registry (``prometheus_client.REGISTRY`` unless one is injected; loggers that
share a registry share one set of metrics) and updates them in ``on_end``, on the caller's
thread, with no I/O: the histograms are observed there, and the counters' increments are summed
under one lock and handed to the counters when they are collected (a scrape), or written at once
in multiprocess mode. The router's cooldowns and the proxy's
rejections are fed through small public methods; the ledger's figures (``tracking_ledger_*``)
are read from the live ledgers at scrape time (:mod:`tracking.ledger_stats`), as are the bus's
counters. Label values are bounded: ``operation`` is ``image_edit`` or ``image_generation``,
``size`` is a standard size or ``custom``,
``error_type`` one of the library's fixed error types or ``other``, ``model`` / ``served_model``
take the models the price table knows and at most :data:`MAX_UNPRICED_MODELS` other names (then
``other``: a caller naming models at random cannot grow the series), and end users appear only
on the opt-in per-end-user metric, whose series are capped (least recently used evicted,
evictions counted). :func:`start_metrics_server`, :func:`metrics_asgi_app` and
:func:`generate_metrics` expose the metrics; with ``PROMETHEUS_MULTIPROC_DIR`` set they read
every worker's files (prometheus_client's multiprocess mode), and the ledger's figures and the
bus's counters that every worker shares in the same folder (:mod:`tracking.bus_sharing`).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import logging
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import date
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from tracking import bus, bus_sharing, ledger_stats
from tracking.errors import ERROR_TYPES, UNSERVED_ERROR_TYPES, ConfigurationError
from tracking.pricing import search_uses

if TYPE_CHECKING:
    from tracking.events import ImageEditEvent
    from tracking.families import Family
    from tracking.integration import CallStart
    from tracking.pricing import PriceEntry
    from tracking.router import Router

__all__ = [
    "DURATION_BUCKETS",
    "MAX_UNPRICED_MODELS",
    "PROXY_REJECTION_REASONS",
    "STANDARD_SIZES",
    "PrometheusLogger",
    "generate_metrics",
    "metrics_asgi_app",
    "metrics_registry",
    "start_metrics_server",
]


#: Seconds: image edits take from a fraction of a second to minutes (gpt-image at high quality).
DURATION_BUCKETS: tuple[float, ...] = (
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    45.0,
    60.0,
    90.0,
    120.0,
    180.0,
)
STANDARD_SIZES = frozenset(
    {"auto", "256x256", "512x512", "1024x1024", "1024x1536", "1536x1024", "1792x1024", "1024x1792"}
)
_OPERATIONS = ("image_edit", "image_generation")  # the operation label's values
STANDARD_QUALITIES = frozenset({"auto", "low", "medium", "high", "standard", "hd"})
#: The ``token_type`` label of each kind of token a price entry prices (the usage's four counts).
_TOKEN_TYPE_OF_PRICE = {
    "input_text": "input_text",
    "input_image": "input_image",
    "cached_input_text": "cached_input",
    "cached_input_image": "cached_input",
    "output_image": "output_image",
}
#: Why the proxy refused a request (a closed set: the label's series are bounded).
PROXY_REJECTION_REASONS = frozenset(
    {
        "auth",  # no key, a wrong or expired one, a management call without the master key
        "model_not_allowed",  # the key's models do not include the one asked for
        "unknown_model",  # a model the config does not list
        "blocked",  # the end user is blocked
        "budget",  # the key's or the end user's budget
        "rate",  # the key's rpm or parallel limit, or no deployment free
        "size",  # the body is too large
        "validation",  # a parameter breaks a rule, a malformed body
        "body_timeout",  # the body did not arrive in time
        "not_found",  # an unknown path or record
        "method_not_allowed",
        "store_unavailable",  # the database could not be read to decide
        "invalid_request",  # any other refusal
    }
)
log = logging.getLogger(__name__)
_MAX_LABEL_CHARS = 100  # a pathological model name must not make a huge series
_MAX_CACHED_SERIES = 10_000  # (model, served, provider) triples whose children are kept
#: Distinct model names the price table does not know (a refused call's made-up name, a model
#: group, a model we have no price for) given their own ``model`` / ``served_model`` label; later
#: ones are counted as ``other``. A model the price table knows always keeps its name.
MAX_UNPRICED_MODELS = 100
OTHER_MODEL = "other"
DEFAULT_END_USER_SERIES = 1000


class PrometheusLogger:
    """The ``"prometheus"`` integration: the contract's metrics, updated once per call.

    ``registry`` defaults to prometheus_client's global one. ``end_user_metric=True`` turns on
    ``image_edit_end_user_cost_usd_total{end_user}``, keeping at most ``end_user_max_series``
    series (the least recently charged end user is evicted and
    ``tracking_end_user_series_evicted_total`` counts it).
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        end_user_metric: bool = False,
        end_user_max_series: int = DEFAULT_END_USER_SERIES,
    ) -> None:
        if end_user_max_series < 1:
            raise ConfigurationError("end_user_max_series: must be at least 1")
        if end_user_metric and _multiprocess_dir():
            # prometheus_client cannot remove a series from the shared files, so no bound holds.
            raise ConfigurationError(
                "end_user_metric: not available with PROMETHEUS_MULTIPROC_DIR (series cannot be "
                "evicted in multiprocess mode); query spend per end user from the ledger instead"
            )
        self.registry = registry if registry is not None else REGISTRY
        self.metrics = _metrics_for(self.registry)
        self.end_user_metric = end_user_metric
        self.end_user_max_series = end_user_max_series

    @property
    def same_records_as(self) -> tuple[str, int]:
        """Loggers on one registry share its metrics: the bus keeps one of them per call, or
        each call would be counted once per logger (``tracking.integration``)."""
        return ("prometheus", id(self.metrics))

    # -- the integration protocol --------------------------------------------------------

    def on_start(self, call: CallStart) -> None:
        """Nothing to do before the exchange: every metric is recorded at the end."""

    def on_end(self, event: ImageEditEvent) -> None:
        try:
            self._record(event)
        except Exception as exc:
            bus.report_failure("prometheus", "recording a call's metrics failed", exc)

    def flush(self, timeout: float | None = None) -> bool:
        return True  # nothing is queued: metrics are updated in the call

    def shutdown(self, timeout: float | None = None) -> None:
        directory = _multiprocess_dir()
        if directory:  # the process's end: its last callbacks' counts outlive it
            bus_sharing.share(directory)

    # -- what events cannot carry: fed by the router and the proxy -----------------------------

    def watch_deployments(self, deployments: Iterable[tuple[str, str]]) -> None:
        """Start the retry and cooldown counters of each ``(model group, deployment id)`` a
        router serves at 0 (the proxy calls it at start), so the first retry or cooldown of a
        deployment is an increase that ``rate()`` and ``increase()`` see, not a series that
        appears already at 1."""
        m = self.metrics
        for model, deployment in deployments:
            m.retries.labels(m.model_label(model), _bounded(deployment))
            m.cooldowns.labels(_bounded(model), _bounded(deployment))

    def watch_router(self, router: Router) -> None:
        """Count what ``router`` does from 0, so each first is a rise ``rate()`` and
        ``increase()`` see (the proxy calls it at start; an SDK process calls it once per
        router it builds): the logger joins the router's ``cooldown_observers`` (once), and
        these series start at 0: each deployment's retries and cooldowns
        (:meth:`watch_deployments`), both outcomes of each fallback hop a call can take, and
        each model group's requests (every way a call can end) and spend, for each operation,
        with each model its own deployments and its fallbacks' serve it with (``served_model``,
        ``provider``; a deployment whose provider cannot make generations starts no
        ``image_generation`` series), and the unpriced-call counter of each group a deployment
        whose calls are recorded unpriced can serve (:meth:`watch_unpriced`; priced as billing
        prices them, :meth:`tracking.router.Deployment.priced`), and each group's calls that end
        before any deployment is tried (a refused request, no deployment free:
        :meth:`watch_unserved`), and the retired-model counter of each deployment whose price
        entry (:meth:`tracking.router.Deployment.price_entry`) gives a shutdown date, by
        which its calls are counted from then on (its base model's, not its served model's).
        """
        from tracking.request import split_provider

        if self.record_cooldown not in router.cooldown_observers:
            router.cooldown_observers.append(self.record_cooldown)
        self.watch_deployments((d.model_name, d.id) for d in router.deployments)
        m = self.metrics
        for deployment in router.deployments:  # retired as billed: its own prices, base model
            retired = _retired_as(deployment.price_entry())
            m.deployment_shutdowns[deployment.id] = retired
            if retired is not None:
                m.retired.labels(m.model_label(retired[1]))
        for group, targets in router.fallbacks.items():
            # a call asking for group tries it, then each target in turn (CallRoute.chain)
            for source, target in itertools.pairwise((group, *targets)):
                for outcome in ("success", "failure"):
                    m.fallbacks.labels(_bounded(source), _bounded(target), outcome)
        unpriced = []
        for group in router.groups:
            chain = (group, *router.fallbacks.get(group, ()))
            deployments = [d for name in chain for d in router.groups[name]]
            for operation in _OPERATIONS:  # each served by the deployments that can make it
                served = {
                    (*split_provider(d.model), d.priced_as or "")
                    for d in deployments
                    if d.serves(operation)
                }
                for provider, model, base_model in sorted(served):
                    m.series_for(group, model, provider, operation, base_model or None)
            if not all(d.priced() for d in deployments):
                unpriced.append(group)
        self.watch_unpriced(unpriced)
        self.watch_unserved(router.groups)

    def watch_unpriced(self, models: Iterable[str]) -> None:
        """Start ``image_edit_unpriced_requests_total`` of each of these models (named as calls
        name them) at 0, so a model's first call with no known price is a rise ``rate()`` and
        ``increase()`` see. :meth:`watch_router` does it for each model group that a deployment
        without a price can serve (its own, or a fallback's); an SDK process calling models
        without a router names its own."""
        m = self.metrics
        for model in models:
            m.unpriced.labels(m.model_label(model))

    def watch_unserved(self, models: Iterable[str]) -> None:
        """Start the requests counter of each of these models' calls that end before a request
        was built for any model (``served_model`` and ``provider`` empty) at 0, for both
        operations and each error type such a call can end with
        (:data:`tracking.errors.UNSERVED_ERROR_TYPES`: parameters the model does not take,
        every deployment busy...), so a group's first refused call is a rise ``rate()`` and
        ``increase()`` see. :meth:`watch_router` does it for a router's model groups; an SDK
        process calling models without a router names its own. Bounded: 12 series a model.
        """
        m = self.metrics
        for model in models:
            for operation in _OPERATIONS:
                m.series_for(model, "", "", operation)

    def record_cooldown(self, model: str, deployment: str) -> None:
        """Count one deployment put in cooldown by the router."""
        self.metrics.cooldowns.labels(_bounded(model), _bounded(deployment)).inc()

    def record_proxy_rejection(self, reason: str) -> None:
        """One request refused by the proxy, under one of :data:`PROXY_REJECTION_REASONS`."""
        if reason not in PROXY_REJECTION_REASONS:
            known = ", ".join(sorted(PROXY_REJECTION_REASONS))
            raise ValueError(f"reason: one of {known}, got {reason!r}")
        self.metrics.proxy_rejections.labels(reason).inc()

    def record_withheld_attempt(self) -> None:
        """One retry or fallback the proxy withheld (a budget could not cover it)."""
        self.metrics.proxy_withheld_attempts.inc()

    # -- recording ------------------------------------------------------------------------------

    def _record(self, event: ImageEditEvent) -> None:
        counts: list[tuple[Any, float]] = []  # the counters' increments, handed over together
        try:
            self._update(event, counts)
        finally:  # a fault midway keeps the counts before it, as separate increments would
            self.metrics.count(counts)

    def _update(self, event: ImageEditEvent, counts: list[tuple[Any, float]]) -> None:
        """Observe ``event``'s histograms; its counters' increments are appended to ``counts``."""
        m = self.metrics
        model = event.model
        served = event.resolved_model or ""
        provider = event.provider or ""
        # as the caller asked (model), even when a fallback answered (served)
        series = m.series_for(model, served, provider, event.operation, event.base_model)
        status = event.status
        error_type = _error_type_label(event.error_type) if status == "failure" else ""
        counts.append((series.requests(status, error_type), 1))
        series.duration(status).observe(event.latency_ms / 1000)
        if event.time_to_first_image_ms is not None:  # a streamed call's first image arrived
            m.time_to_first_image.labels(series.model, series.provider, series.operation).observe(
                event.time_to_first_image_ms / 1000
            )
        if event.images_returned > 0:
            images = series.images(_size_label(event.size), _quality_label(event.quality))
            counts.append((images, event.images_returned))
        if event.cost_usd is not None:
            cost = float(event.cost_usd)  # metrics are floats; the ledger keeps Decimal
            if cost < 0:  # refused as inc refuses it (the only amount not tested above 0 here)
                raise ValueError("Counters can only be incremented by non-negative amounts.")
            counts.append((series.cost, cost))
            if self.end_user_metric and event.end_user:
                self._charge_end_user(event.end_user, cost)
        elif status == "success" and event.cost_source == "unpriced":
            counts.append((m.unpriced.labels(series.model), 1))
        searched = search_uses(event.price_ref)
        if searched is not None and searched[0] > 0:
            counts.append((series.search_grounding(searched[1]), searched[0]))
        retired = series.retired
        if event.deployment_id is not None:  # a watched router's: as its calls are billed
            retired = m.deployment_shutdowns.get(event.deployment_id, retired)
        if retired is not None and event.start_time.date() >= retired[0]:
            counts.append((m.retired.labels(m.model_label(retired[1])), 1))
        usage = event.usage
        if usage is not None:
            for token_type, count in (
                ("input_text", usage.input_text_tokens),
                ("input_image", usage.input_image_tokens),
                ("cached_input", usage.cached_input_tokens),
                ("output_image", usage.output_tokens),
            ):
                if count > 0:
                    counts.append((series.tokens(token_type), count))
        if event.retries > 0:
            deployment = _bounded(event.deployment_id or "")
            counts.append((m.retries.labels(series.model, deployment), event.retries))
        if event.fallback_from:
            chain = event.fallback_chain
            last_hop = len(chain) - 2
            for hop, (source, target) in enumerate(itertools.pairwise(chain)):
                # Every hop but the last led to another failure, or there would be no next hop.
                outcome = event.status if hop == last_hop else "failure"
                counts.append((m.fallbacks.labels(_bounded(source), _bounded(target), outcome), 1))

    def _charge_end_user(self, end_user: str, cost: float) -> None:
        m = self.metrics
        user = _end_user_label(end_user)
        with m.end_user_lock:
            m.end_users[user] = None
            m.end_users.move_to_end(user)
            while len(m.end_users) > self.end_user_max_series:
                evicted, _ = m.end_users.popitem(last=False)
                with contextlib.suppress(KeyError):
                    m.end_user_cost.remove(evicted)
                m.end_user_evicted.inc()
            m.end_user_cost.labels(user).inc(cost)


class _Metrics:
    """One registry's metric objects: created once, shared by every logger on that registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        directory = _multiprocess_dir()
        #: label child -> its increments since the last scrape (:meth:`count`); None in
        #: multiprocess mode, where every worker's values live in its files
        self._pending: dict[Any, float] | None = None if directory else {}
        self._pending_lock = threading.Lock()

        def counter(name: str, doc: str, labels: Iterable[str] = ()) -> Counter:
            made = _FlushedCounter(name, doc, list(labels), registry=registry)
            made.before_collect = self.flush
            return made

        # operation: image_edit or image_generation (the event's), on every per-call metric
        model_labels = ("model", "served_model", "provider", "operation")
        self.requests = counter(
            "image_edit_requests",
            "Image calls (edits and generations), by how they ended.",
            (*model_labels, "status", "error_type"),
        )
        self.images = counter(
            "image_edit_images", "Images returned.", (*model_labels, "size", "quality")
        )
        self.cost = counter("image_edit_cost_usd", "Spend in US dollars.", model_labels)
        self.tokens = counter(
            "image_edit_tokens", "Usage tokens reported upstream.", (*model_labels, "token_type")
        )
        self.duration = Histogram(
            "image_edit_request_duration_seconds",
            "Wall time of a call, retries included.",
            ["model", "provider", "operation", "status"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.time_to_first_image = Histogram(
            "image_edit_time_to_first_image_seconds",
            "Streamed calls: time from the call's start to its first image event.",
            ["model", "provider", "operation"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.search_grounding = counter(
            "image_edit_search_grounding_uses",
            "Grounding with Google Search uses calls were billed for: search queries or "
            "grounded prompts, by unit.",
            (*model_labels, "unit"),
        )
        self.retries = counter("image_edit_retries", "Retried attempts.", ("model", "deployment"))
        self.fallbacks = counter(
            "image_edit_fallbacks",
            "Fallbacks from one model group to the next.",
            ("from_model", "to_model", "outcome"),
        )
        self.cooldowns = counter(
            "image_edit_deployment_cooldowns",
            "Deployments put in cooldown.",
            ("model", "deployment"),
        )
        self.unpriced = counter(
            "image_edit_unpriced_requests", "Successful calls with no known price.", ("model",)
        )
        self.retired = counter(
            "image_edit_retired_model_requests",
            "Calls to a model past its provider's shutdown date.",
            ("model",),
        )
        self.end_user_cost = counter(
            "image_edit_end_user_cost_usd",
            "Spend per end user (opt-in; the least recently charged series are evicted).",
            ("end_user",),
        )
        self.end_user_evicted = counter(
            "tracking_end_user_series_evicted", "End-user series evicted to bound memory."
        )
        self.proxy_rejections = counter(
            "image_edit_proxy_rejections", "Requests refused by the proxy.", ("reason",)
        )
        self.proxy_withheld_attempts = counter(
            "image_edit_proxy_withheld_attempts",
            "Retries and fallbacks the proxy did not make: a budget could not cover them.",
        )
        self.end_users: OrderedDict[str, None] = OrderedDict()
        self.end_user_lock = threading.Lock()
        self._series: dict[tuple[str, str, str, str, str | None], _ModelSeries] = {}
        self._model_names: set[str] = set()  # the names given a label of their own
        self._model_names_lock = threading.Lock()
        self._folding_logged = False
        self._unpriced_names = 0  # names given a label by unpriced calls alone
        #: deployment id -> (the shutdown date, the model named) of the entry its calls are
        #: billed from (None: none), for the routers watched
        #: (:meth:`PrometheusLogger.watch_router`): a call carries its deployment's base
        #: model, which its served model's name may not be priced as
        self.deployment_shutdowns: dict[str, tuple[date, str] | None] = {}
        registry.register(BusCountersCollector())
        # what this integration reports, itself and reading the ledgers, counts from 0
        bus.expect("integration_errors", "prometheus", "ledger")
        if directory:  # the scraped worker reads the others' figures from the shared folder
            ledger_stats.start_sharing(directory)
        else:
            registry.register(LedgerCollector())

    def count(self, counts: Iterable[tuple[Any, float]]) -> None:
        """Add each amount to its counter child. In one process they are summed here, under one
        lock, and handed to the children when a counter is collected (:meth:`flush`): a
        child's ``inc`` runs several of the client's calls and takes a lock of its own each
        time. In multiprocess mode each is added at once (another worker's scrape reads them
        from this one's files)."""
        if self._pending is None:
            for child, amount in counts:
                child.inc(amount)
            return
        with self._pending_lock:
            pending = self._pending
            for child, amount in counts:
                pending[child] = pending.get(child, 0) + amount

    def flush(self) -> None:
        """Hand the sums :meth:`count` kept to their counter children (before a scrape)."""
        with self._pending_lock:
            if self._pending:
                for child, amount in self._pending.items():
                    child.inc(amount)
                self._pending.clear()

    def series_for(
        self,
        model: str,
        served: str,
        provider: str,
        operation: str = "image_edit",
        base_model: str | None = None,
    ) -> _ModelSeries:
        """The children of one (model, served model, provider, operation), found once and
        reused; ``base_model`` is the model the calls are priced as, when they name one.

        ``labels()`` formats and looks its values up under a lock on every call; the same few
        label values repeat call after call, so their children are kept here. The cache holds
        no more series than the metrics themselves already do (it is reset past a bound all the
        same, so a stream of distinct model names cannot grow it without limit). Model names
        are labelled by :meth:`model_label`.
        """
        key = (model, served, provider, operation, base_model)
        series = self._series.get(key)
        if series is None:
            if len(self._series) >= _MAX_CACHED_SERIES:
                self._series = {}
            model_label = self.model_label(model)
            served_label = self.model_label(served) if served else ""
            series = _ModelSeries(
                self, model_label, served_label, _bounded(provider), operation, base_model
            )
            self._series[key] = series
        return series

    def model_label(self, name: str) -> str:
        """``name`` (bounded) if the price table knows it by that name or it is among the first
        :data:`MAX_UNPRICED_MODELS` names it does not; else ``other``."""
        label = _bounded(name)
        with self._model_names_lock:
            if label in self._model_names:
                return label
            if not _priced_by_name(name):
                if self._unpriced_names >= MAX_UNPRICED_MODELS:
                    if not self._folding_logged:
                        self._folding_logged = True
                        log.warning(
                            "prometheus: more than %d model names without a price; calls "
                            "naming others are counted under model=%r",
                            MAX_UNPRICED_MODELS,
                            OTHER_MODEL,
                        )
                    return OTHER_MODEL
                self._unpriced_names += 1
            self._model_names.add(label)
            return label


def _retired_as(entry: PriceEntry | None) -> tuple[date, str] | None:
    """(shutdown date, the model it names) of the entry a call is billed from, when it gives a
    date: the retired-model counter names the model the call is billed as (a base model's, not
    the name of the deployment's model), as the table files it (``gpt-image-1``, never an alias
    or a registered alias's own name)."""
    if entry is None or entry.shutdown is None:
        return None
    return entry.shutdown, entry.key.rsplit("->", 1)[-1]


def _priced_by_name(name: str) -> bool:
    """The price table knows ``name`` as it is written: a bare name, or one behind a registered
    provider's prefix. A name behind any other prefix (``tenant-7/gpt-image-2``, sent to an
    OpenAI-compatible server whole) is priced as the name after it, but each prefix would be a
    series of its own: such names count toward :data:`MAX_UNPRICED_MODELS`."""
    from tracking.pricing import is_priced
    from tracking.request import split_provider

    prefix, sep, _ = name.partition("/")
    if sep and split_provider(name)[0] != prefix:
        return False
    return is_priced(name)


class _FlushedCounter(Counter):
    """A counter that runs ``before_collect`` (its metrics' :meth:`_Metrics.flush`) first
    whenever it is collected, so a scrape reads every count :meth:`_Metrics.count` kept."""

    before_collect: Callable[[], None] | None = None

    def collect(self) -> Iterable[Metric]:
        if self.before_collect is not None:
            self.before_collect()
        return super().collect()


class _ModelSeries:
    """The label children of one (model, served model, provider, operation), created as they
    are used."""

    __slots__ = (
        "_children",
        "_metrics",
        "cost",
        "model",
        "operation",
        "provider",
        "retired",
        "served",
    )

    def __init__(
        self,
        metrics: _Metrics,
        model: str,
        served: str,
        provider: str,
        operation: str,
        base_model: str | None = None,
    ) -> None:
        from tracking.families import family_for
        from tracking.pricing import billing_entry

        self._metrics = metrics
        self.model, self.served, self.provider = model, served, provider
        self.operation = operation
        self.cost = metrics.cost.labels(model, served, provider, operation)
        self._children: dict[tuple[str, ...], Any] = {}
        # the entry billing prices the served model (else the asked one) from: a served name
        # is its provider's own, which billing reads under the provider's prefix; a call
        # carrying a base model is billed as it
        entry = billing_entry(
            f"{provider}/{served}" if served and provider else served or model, base_model
        )
        #: (shutdown date, model named) of the entry its calls are billed from, when the price
        #: table gives that model a shutdown date (:func:`_retired_as`)
        self.retired = _retired_as(entry)
        if self.retired is not None:  # its calls are counted once it is past that day
            metrics.retired.labels(metrics.model_label(self.retired[1]))
        # Every way a call of this series can end, at 0 from its first call on: a series that
        # appears already at 1 has no increase, so rate() and increase() would miss its first
        # failure of each kind (the dashboards' rate panels, the error-ratio alert). The error
        # types are fixed tables, so the label sets are known now.
        if not served:  # no model served it: it ended before any request was built
            for error_type in sorted(UNSERVED_ERROR_TYPES):
                self.requests("failure", error_type)
            return
        self.requests("success", "")
        for error_type in sorted(ERROR_TYPES):
            self.requests("failure", error_type)
        # What the served model can return, at 0 too (the images and tokens rate panels): each
        # size and quality its family lists, and the tokens its price is read from.
        family = family_for(served, operation)
        if family is not None:
            for size, quality in _image_labels(family):
                self.images(size, quality)
        for kind in entry.tokens if entry is not None else ():
            if kind in _TOKEN_TYPE_OF_PRICE:
                self.tokens(_TOKEN_TYPE_OF_PRICE[kind])
        search_fee = entry.tools.get("google_search") if entry is not None else None
        if search_fee is not None:  # a model whose price bills Grounding with Google Search
            self.search_grounding(search_fee.per)

    def _child(self, key: tuple[str, ...]) -> Any:
        """The child of the per-call metric ``key[0]`` (an attribute of the metrics) with this
        series' model labels and ``key[1:]`` after them, found once and kept."""
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = getattr(self._metrics, key[0]).labels(
                self.model, self.served, self.provider, self.operation, *key[1:]
            )
        return child

    def requests(self, status: str, error_type: str) -> Any:
        return self._child(("requests", status, error_type))

    def duration(self, status: str) -> Any:
        key = ("duration", status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._metrics.duration.labels(
                self.model, self.provider, self.operation, status
            )
        return child

    def images(self, size: str, quality: str) -> Any:
        return self._child(("images", size, quality))

    def search_grounding(self, unit: str) -> Any:
        return self._child(("search_grounding", unit))

    def tokens(self, token_type: str) -> Any:
        return self._child(("tokens", token_type))


_REGISTRIES: weakref.WeakKeyDictionary[CollectorRegistry, _Metrics] = weakref.WeakKeyDictionary()
_REGISTRIES_LOCK = threading.Lock()


def _metrics_for(registry: CollectorRegistry) -> _Metrics:
    with _REGISTRIES_LOCK:
        metrics = _REGISTRIES.get(registry)
        if metrics is None:
            metrics = _REGISTRIES[registry] = _Metrics(registry)
        return metrics


class BusCountersCollector(Collector):
    """``tracking_callback_errors_total{callback}``, ``tracking_events_dropped_total{sink}`` and
    ``tracking_integration_errors_total{integration}``.

    The bus keeps these counts itself (``tracking.bus.counters()``); this collector reads them
    at scrape time, so the bus needs no Prometheus dependency.
    """

    def __init__(self, source: Callable[[], Any] | None = None) -> None:
        self._source = source

    def collect(self) -> Iterator[CounterMetricFamily]:
        errors = CounterMetricFamily(
            "tracking_callback_errors",
            "User callbacks that raised or timed out.",
            labels=["callback"],
        )
        dropped = CounterMetricFamily(
            "tracking_events_dropped", "Events dropped because a queue was full.", labels=["sink"]
        )
        failed = CounterMetricFamily(
            "tracking_integration_errors",
            "Failures an integration caught inside itself (a metric, line or span lost).",
            labels=["integration"],
        )
        snapshot = self._snapshot()
        for family, key in (
            (errors, "callback_errors"),
            (dropped, "events_dropped"),
            (failed, "integration_errors"),
        ):
            for name, count in _counts(snapshot, key):
                family.add_metric([name], count)
            yield family

    def _snapshot(self) -> Any:
        try:
            return (self._source or bus.counters)()
        except Exception as exc:
            bus.report_failure("prometheus", "reading the bus counters failed", exc)
            return None


class LedgerCollector(Collector):
    """``tracking_ledger_*``: the live ledgers' figures, read when the metrics are scraped.

    Given the multiprocess folder, every worker's shared figures are summed (a worker that has
    ended keeps its counts, not its gauges); otherwise this process's ledgers are read.
    """

    def __init__(self, directory: str | None = None) -> None:
        self._directory = directory

    def collect(self) -> Iterator[Metric]:
        if self._directory is None:
            stats = ledger_stats.live_stats()
        else:
            stats = ledger_stats.shared_stats(self._directory)
        yield GaugeMetricFamily(
            "tracking_ledger_queue_depth",
            "Events waiting for the ledger writer.",
            value=stats.queue_depth,
        )
        yield GaugeMetricFamily(
            "tracking_ledger_outbox_rows",
            "Rows acknowledged in the local outbox, not yet in the target database.",
            value=stats.outbox_rows,
        )
        yield GaugeMetricFamily(
            "tracking_ledger_stuck_seconds",
            "Seconds rows have waited in the local outbox with none reaching the database "
            "(unreachable, not answering or refusing them); 0 while nothing waits.",
            value=stats.stuck_seconds,
        )
        cumulative = list(itertools.accumulate(stats.write_counts))
        bounds = [*(repr(b) for b in ledger_stats.WRITE_BUCKETS), "+Inf"]
        yield HistogramMetricFamily(
            "tracking_ledger_write_seconds",
            "Time to write one ledger batch.",
            buckets=list(zip(bounds, cumulative, strict=True)),
            sum_value=stats.write_seconds,
        )
        yield CounterMetricFamily(
            "tracking_ledger_replayed",
            "Outbox rows shipped to the target after a delay.",
            value=stats.replayed_rows,
        )
        yield CounterMetricFamily(
            "tracking_ledger_quarantined",
            "Ledger rows the database refused for good, kept in ledger_quarantine.",
            value=stats.quarantined_rows,
        )


def _counts(snapshot: Any, key: str) -> list[tuple[str, float]]:
    if snapshot is None:
        return []
    table = snapshot.get(key) if isinstance(snapshot, Mapping) else getattr(snapshot, key, None)
    if not isinstance(table, Mapping):
        return []
    return [(_bounded(str(name)), float(count)) for name, count in sorted(table.items())]


# -- label bounding ---------------------------------------------------------------------------


def _bounded(value: str) -> str:
    return value if len(value) <= _MAX_LABEL_CHARS else value[:_MAX_LABEL_CHARS]


def _end_user_label(end_user: str) -> str:
    """An end-user id as its label: itself up to the label bound; a longer one its first
    characters, ``~`` and a digest of the whole id, so two ids that share their first 100
    characters are two series, never one summing both users' spend."""
    if len(end_user) <= _MAX_LABEL_CHARS:
        return end_user
    digest = hashlib.sha256(end_user.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{end_user[: _MAX_LABEL_CHARS - 17]}~{digest}"


def _size_label(size: str | None) -> str:
    if not size:
        return ""
    return size if size in STANDARD_SIZES else "custom"


def _quality_label(quality: str | None) -> str:
    if not quality:
        return ""
    return quality if quality in STANDARD_QUALITIES else "other"


def _image_labels(family: Family) -> list[tuple[str, str]]:
    """Every (size, quality) label pair a call of ``family`` can be counted under: each size
    and quality it lists (as labelled: ``custom`` for its free sizes, ``other`` for a quality
    outside the standard ones) and the empty value (neither sent nor reported upstream)."""
    sizes = {"", *map(_size_label, family.sizes)}
    if family.custom_size is not None:
        sizes.add("custom")
    qualities = {"", *map(_quality_label, family.choices.get("quality", ()))}
    return sorted(itertools.product(sizes, qualities))


def _error_type_label(error_type: str | None) -> str:
    # One fixed table (tracking.errors.ERROR_TYPES): the label never depends on import order.
    return error_type if error_type in ERROR_TYPES else "other"


# -- exposure ---------------------------------------------------------------------------------


def metrics_registry(registry: CollectorRegistry | None = None) -> CollectorRegistry:
    """The registry to expose: every worker's files in multiprocess mode, else ``registry``.

    With ``PROMETHEUS_MULTIPROC_DIR`` set, a fresh registry reading that directory is returned
    (prometheus_client's rule: a multiprocess registry must not also hold live metrics).
    """
    directory = _multiprocess_dir()
    if directory:
        collected = CollectorRegistry()
        multiprocess.MultiProcessCollector(collected, path=directory)  # type: ignore[no-untyped-call]
        collected.register(LedgerCollector(directory))
        every_workers = functools.partial(bus_sharing.shared_counters, directory)
        collected.register(BusCountersCollector(every_workers))
        return collected
    return registry if registry is not None else REGISTRY


def _multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def generate_metrics(registry: CollectorRegistry | None = None) -> tuple[bytes, str]:
    """The text exposition and its content type, e.g. for a framework's ``/metrics`` route."""
    return generate_latest(metrics_registry(registry)), CONTENT_TYPE_LATEST


def metrics_asgi_app(registry: CollectorRegistry | None = None) -> Any:
    """An ASGI app serving the metrics (mount it at ``/metrics``)."""
    from prometheus_client import make_asgi_app

    return make_asgi_app(registry=metrics_registry(registry))


def start_metrics_server(
    port: int, addr: str = "127.0.0.1", registry: CollectorRegistry | None = None
) -> tuple[Any, threading.Thread]:
    """Serve ``/metrics`` on a background thread; returns ``(server, thread)``.

    Binds to loopback unless told otherwise; call ``server.shutdown()`` and
    ``server.server_close()`` to stop it.
    """
    server, thread = start_http_server(port, addr=addr, registry=metrics_registry(registry))
    return server, thread
