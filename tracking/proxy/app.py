"""The proxy as a raw ASGI application: routes, the edit and generation handler, health,
models, metrics.

Raw ASGI keeps the per-request work to what the call needs (the HTTP client and the multipart
parse dominate the CPU). One edit (or generation) request: authenticate from the headers, refuse
a declared oversized body before reading it, stream the body (an edit's multipart, a
generation's JSON) in under the size limit, turn it into the SDK's parameters, check the model,
and hand the call to the dispatcher (the router over the config's ``model_list``, on the SDK's
own call path), then wait until the call's ledger row is committed. The answer is the upstream's
JSON with ``x-tracking-request-id`` and ``x-tracking-response-cost``; every refusal is an
OpenAI-shaped error, with the failed call's ``x-tracking-request-id`` when it got as far as an
event, and, for an image call, what it cost (:mod:`tracking.proxy.answer_cost`). A
``stream=true`` call is answered as Server-Sent Events once its first event is in
(:mod:`tracking.proxy.stream_relay`).

Every answer carries ``x-request-id``: the id the proxy gives the HTTP request as it arrives,
which an edit's call takes as its own (so it is the ledger row's key, and what the official
clients show as ``request_id``); the upstream's id, when there is one, is in
``x-upstream-request-id``. While the upstream call runs the proxy listens for the client
hanging up: from then on no new attempt starts (:mod:`tracking.call_control`). Paths match with
or without a trailing slash; ``HEAD`` works wherever ``GET`` does (the same status and headers,
no body); a known path with the wrong method is a 405 with ``Allow``; CORS answers browsers
from ``general_settings.cors_allow_origins`` (off when empty).

Start-up (the ASGI lifespan) registers the config's prices, installs the configured callbacks
and the proxy's own sinks (Prometheus, the ledger) and checks them, and lets the router report
cooldowns to Prometheus; shutdown runs after the server has drained in-flight requests, and
flushes every sink.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..call_control import CallControl, controlled, current_control
from ..config import ProxyConfig, export_environment, load_config
from ..errors import ConfigurationError, TrackingError
from ..ids import new_request_id
from ..streaming import AsyncImageEditStream
from .access_log import ACCESS_SCOPE_KEY, AccessEntry
from .accounts import Accounts
from .answer_cost import NOT_BILLED_HEADERS, cost_headers, failure_cost
from .auth import Authenticator, KeyCheck, Principal, request_headers
from .client_metadata import take_tags_header
from .concurrency import ParallelLimit, UploadBytes, UploadHold
from .edit_body import check_references, json_edit_params
from .end_user_headers import take_end_user_headers
from .errors import ProxyError, from_exception
from .form import ClientDisconnected, form_params, read_body, read_multipart, too_large
from .generation_body import read_generation
from .health import HealthReport
from .image_store import (
    STORED_PREFIX,
    build_image_store,
    origin_host,
    parse_store_settings,
    sweep_forever,
)
from .ledger import make_ledger_folder
from .lifecycle import ProxySinks, check_ledger, install_callbacks, shut_down_sinks
from .limits import refuse_encoded_body
from .metrics import MetricsExposition
from .model_info_routes import model_info_routes
from .models import Dispatcher, RoutedModels, build_dispatcher, router_deployments
from .openapi import AZURE_PATHS, MODEL_PATHS, STORED_PATH, docs_page, openapi_document
from .prices import model_list_prices_of, register_config_prices
from .start_faults import STARTUP_FAILURE, StartFault, report
from .stream_relay import relay_stream
from .trace_context import callers_trace
from .url_answers import (
    FALLBACK_HEADER,
    NOTHING_ANSWERED,
    UrlAnswer,
    base64_only_models,
    recorded_as_url,
    serve_stored,
    upstream_answer_format,
)

if TYPE_CHECKING:
    from ..request import ImageEditRequest
    from ..router import Deployment
    from .budgets import Reservation

__all__ = ["CONFIG_ENV", "ProxyApp", "app_from_environment", "check_startable", "create_app"]

log = logging.getLogger("tracking.proxy")

#: The collector's thresholds in a proxy worker (see ``ProxyApp.startup``).
GC_THRESHOLDS = (20_000, 50, 100)

#: Where worker processes find the config file (set by ``tracking serve --workers N``).
CONFIG_ENV = "TRACKING_PROXY_CONFIG"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
#: Reads one call's body into the SDK's parameters (an edit's multipart, a generation's JSON).
ParamsReader = Callable[[Receive, dict[str, str], UploadHold], Awaitable[dict[str, Any]]]

_JSON = (b"content-type", b"application/json")
_EDIT_PATHS = frozenset({"/v1/images/edits", "/images/edits"})
_GENERATION_PATHS = frozenset({"/v1/images/generations", "/images/generations"})
_IMAGE_PATHS = _EDIT_PATHS | _GENERATION_PATHS
#: LiteLLM's Azure-compatible image routes, ``/openai/deployments/{deployment}/images/edits``
#: and ``.../images/generations`` (an ``AzureOpenAI`` client's paths): the deployment names the
#: model, its ``api-version`` query is ignored.
_AZURE_PREFIX = "/openai/deployments/"


class ProxyApp:
    """The ASGI callable; one per process."""

    def __init__(
        self,
        config: ProxyConfig,
        *,
        dispatcher: Dispatcher | None = None,
        key_checks: tuple[KeyCheck, ...] = (),
        metrics_registry: Any = None,
    ) -> None:
        self.config = config
        export_environment(config)  # as LiteLLM: before any provider reads OPENAI_BASE_URL & co
        # before the router, which is given the prices read (the prices file's tiers first);
        # ``tracking serve`` registered them already in its one process (not read again)
        register_config_prices(config)
        self.dispatcher = dispatcher if dispatcher is not None else build_dispatcher(config)
        self.accounts = Accounts(config)
        self.auth = Authenticator(
            config.general_settings.master_key, (*key_checks, *self.accounts.key_checks)
        )
        self._metrics_registry = metrics_registry
        #: Where each image call's start time is read (once per call).
        self.clock: Callable[[], datetime] = _utc_now
        #: Set at start-up (the ASGI lifespan): the Prometheus integration and the ledger.
        self.sinks: ProxySinks | None = None
        self.metrics: MetricsExposition | None = None
        #: Why start-up failed, once it has (``tracking serve`` exits with it).
        self.start_fault: StartFault | None = None
        #: Called once start-up is over, started or failed (``tracking serve``'s one process
        #: releases the watcher of its start: :class:`~tracking.proxy.start_faults.StartWatch`).
        self.after_start: Callable[[], None] | None = None
        self.max_body = config.general_settings.max_request_bytes
        self.body_timeout = config.general_settings.request_read_timeout
        self.parallel = ParallelLimit(config.general_settings.max_parallel_requests_per_key)
        self.uploads = UploadBytes(config.general_settings.max_inflight_upload_bytes)
        self.model_names = frozenset(config.model_names())
        make_ledger_folder(config)  # before the image store, which may live inside it
        general = config.general_settings
        self.image_store = build_image_store(
            parse_store_settings(general.image_store, general.database_url)
        )
        self.url_models = base64_only_models(config) if self.image_store else frozenset()
        self._sweeper: asyncio.Task[None] | None = None
        self._models_body = _model_list(config.model_names())
        self._routes: dict[tuple[str, str], Callable[[Scope, Receive, Send], Awaitable[None]]] = {
            ("GET", "/health/liveliness"): self._liveliness,
            ("GET", "/health/liveness"): self._liveliness,
            ("GET", "/health/readiness"): self._readiness,
            ("GET", "/health"): self._health,
            ("GET", "/v1/models"): self._models,
            ("GET", "/models"): self._models,
            ("GET", "/metrics"): self._metrics,
            ("GET", "/openapi.json"): self._openapi,
            ("GET", "/docs"): self._docs,
        }
        for path in _EDIT_PATHS:
            self._routes["POST", path] = self._edit
        for path in _GENERATION_PATHS:
            self._routes["POST", path] = self._generate
        self._routes.update(self.accounts.routes(self.auth))  # keys, customers, spend
        self._routes.update(model_info_routes(self.auth, self._deployments))
        self._allowed: dict[str, str] = {}  # path -> its methods, for 405's Allow
        for method, path in self._routes:
            known = self._allowed.get(path)
            methods = "GET, HEAD" if method == "GET" else method
            self._allowed[path] = f"{known}, {methods}" if known else methods
        self._cors = _Cors(config.general_settings.cors_allow_origins)
        # the routes found by prefix are described too: the model route, the stored images
        described = [
            *self._routes,
            *(("GET", path) for path in MODEL_PATHS),
            *(("POST", path) for path in AZURE_PATHS),
        ]
        if self.image_store is not None:
            described.append(("GET", STORED_PATH))
        self._openapi_body = json.dumps(
            openapi_document(described, _version()), separators=(",", ":")
        ).encode()
        self._docs_body = docs_page(json.loads(self._openapi_body))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    # -- lifespan ---------------------------------------------------------------------------

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.startup()
                except BaseException as exc:  # sys.exit or KeyboardInterrupt raised by a
                    # callback's code too: one line, never uvicorn's traceback (startup() is
                    # synchronous: no cancellation can be delivered inside it)
                    self.start_fault = StartFault.of(exc)
                    report(self.start_fault)  # to tracking serve --workers N's supervisor
                    self._start_over()
                    await send(
                        {"type": "lifespan.startup.failed", "message": self.start_fault.message}
                    )
                    return
                if self.image_store is not None:
                    self._sweeper = asyncio.create_task(sweep_forever(self.image_store))
                self._start_over()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                # The server has stopped accepting and drained in-flight requests by now.
                if self._sweeper is not None:
                    self._sweeper.cancel()
                await asyncio.to_thread(shut_down_sinks)
                await self.accounts.aclose()
                if isinstance(self.dispatcher, RoutedModels):
                    self.dispatcher.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _start_over(self) -> None:
        if self.after_start is not None:
            self.after_start()

    def startup(self) -> None:
        """Install the callbacks and the proxy's sinks (failing on any that cannot load),
        register the config's prices, and let the router report cooldowns to Prometheus."""
        register_config_prices(self.config)
        self.sinks = install_callbacks(
            self.config, resolve=True, metrics_registry=self._metrics_registry
        )
        self.metrics = MetricsExposition(self.sinks.prometheus)
        if isinstance(self.dispatcher, RoutedModels):
            # its cooldowns reported, and its counters from 0, so each first is a rise (its
            # groups' calls refused before any request included)
            self.sinks.prometheus.watch_router(self.dispatcher.router)
        # What start-up built lives as long as the process: move it out of the collector's
        # generations, so the collections that per-request garbage triggers stay small.
        gc.collect()
        gc.freeze()
        # Per-request garbage is almost all freed by reference counting; at the default gen-0
        # threshold (700) the collector still ran every few requests and took about 7% of the
        # worker's CPU under load. The cycles that remain are collected in larger batches.
        gc.set_threshold(*GC_THRESHOLDS)

    # -- http -------------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = new_request_id()
        entry = AccessEntry.begin(scope)
        headers = request_headers(scope) if self._cors.enabled else None
        origin = headers.get("origin") if headers is not None else None
        method = scope["method"]
        if method == "HEAD":  # GET's answer without its body
            send = _without_body(send)
        send = entry.watch(_stamped(send, request_id, self._cors.answer_headers(origin)))
        path = scope["path"]
        if len(path) > 1 and path.endswith("/"):
            path = path.rstrip("/") or "/"
        route_method = "GET" if method == "HEAD" else method
        handler = self._routes.get((route_method, path))
        if handler is None and route_method == "GET":
            handler = self._model_route(path)
        elif handler is None and route_method == "POST" and path.startswith(_AZURE_PREFIX):
            handler = self._azure_route(path)
        control = CallControl(request_id=request_id)  # an edit's call takes this id
        try:
            if handler is None:
                if self.image_store is not None and scope["path"].startswith(STORED_PREFIX):
                    if route_method != "GET":
                        raise ProxyError(
                            405,
                            f"Method not allowed: {method} (allowed: GET, HEAD)",
                            code="method_not_allowed",
                            headers={"allow": "GET, HEAD"},
                        )
                    gone, watcher = _client_gone(receive)
                    try:
                        await serve_stored(
                            self.image_store,
                            scope["path"],
                            scope.get("query_string", b""),
                            send,
                            head=method == "HEAD",
                            gone=gone,
                        )
                    finally:
                        if watcher is not None:
                            watcher.cancel()
                    return
                if method == "OPTIONS" and headers is not None and self._cors.allows(origin):
                    await self._preflight(path, headers, send)
                    return
                raise self._no_route(method, path)
            if route_method != "GET":  # a body to read: never one in a Content-Encoding
                refuse_encoded_body(scope["headers"])
            with controlled(control):
                await handler(scope, receive, send)
        except ProxyError as error:
            reason = error.rejection_reason()
            if reason is not None and self.metrics is not None:
                self.metrics.count_rejection(reason)
            await _send_error(send, _costed(error, route_method, path, control))
        except ClientDisconnected:
            return
        except Exception as exc:  # a bug of ours still answers OpenAI-shaped JSON (logged)
            answer = _database_away(exc) or from_exception(exc)
            await _send_error(send, _costed(answer, route_method, path, control))
        finally:
            entry.emit()

    def _no_route(self, method: str, path: str) -> ProxyError:
        allowed = self._allowed.get(path)
        if allowed is not None:
            return ProxyError(
                405,
                f"Method not allowed: {method} {path} (allowed: {allowed})",
                code="method_not_allowed",
                headers={"allow": allowed},
            )
        return ProxyError(404, f"Invalid URL ({method} {path})", code="unknown_url")

    async def _preflight(self, path: str, headers: dict[str, str], send: Send) -> None:
        """A browser's CORS preflight for a known path (the origin is allowed)."""
        allowed = self._allowed.get(path)
        if allowed is None:
            raise self._no_route("OPTIONS", path)
        extra = [
            (b"access-control-allow-methods", allowed.encode()),
            (b"access-control-max-age", b"600"),
        ]
        asked = headers.get("access-control-request-headers")
        if asked:
            extra.append((b"access-control-allow-headers", asked.encode("latin-1")))
        await send({"type": "http.response.start", "status": 204, "headers": extra})
        await send({"type": "http.response.body", "body": b""})

    async def _edit(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._image_call(scope, receive, send, self._edit_params, "aimage_edit")

    async def _generate(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._image_call(scope, receive, send, self._generation_params, "aimage_generation")

    async def _edit_params(
        self, receive: Receive, headers: dict[str, str], upload: UploadHold
    ) -> dict[str, Any]:
        content_type = headers.get("content-type", "")
        if content_type.split(";", 1)[0].strip().lower() == "application/json":
            # OpenAI's JSON edit body: data: URLs decoded, URLs and file ids passed on
            body = await read_body(receive, self.max_body, self.body_timeout, upload.grow_to)
            params = json_edit_params(body, upload.grow_to)
            del body  # the decoded images now live only in the params
            model = params.get("model")
            if isinstance(model, str):
                check_references(params, model, self._deployments_of(model))
            return params
        parts = await read_multipart(
            receive, content_type, self.max_body, self.body_timeout, upload.grow_to
        )
        return form_params(parts)  # the parts go: the images now live only in the params

    def _deployments_of(self, model: str) -> list[tuple[str, str]]:
        """``(id, model sent)`` of each deployment serving ``model``."""
        if isinstance(self.dispatcher, RoutedModels):
            deployments = self.dispatcher.router.deployments
            return [(d.id, d.model) for d in deployments if d.model_name == model]
        return [
            (str(d.model_info.get("id", d.model)), d.model) for d in self.config.deployments(model)
        ]

    async def _generation_params(
        self, receive: Receive, headers: dict[str, str], upload: UploadHold
    ) -> dict[str, Any]:
        return await read_generation(
            receive,
            headers.get("content-type", ""),
            self.max_body,
            self.body_timeout,
            upload.grow_to,
        )

    async def _image_call(
        self, scope: Scope, receive: Receive, send: Send, read: ParamsReader, dispatch: str
    ) -> None:
        headers = request_headers(scope)
        principal = await self.auth.authenticate(headers)
        entry: AccessEntry = scope[ACCESS_SCOPE_KEY]
        entry.caller, entry.key_alias = principal.kind, principal.key_alias
        # Before the body: a key cannot hold every buffer, nor all keys together every byte.
        # A caller's traceparent parents the call's span (the "otel" integration's).
        with callers_trace(headers), self.parallel.hold(principal), self.uploads.hold() as upload:
            await self._call_for(
                principal,
                headers,
                receive,
                send,
                upload,
                entry,
                read,
                dispatch,
                scope.get("scheme", "http"),
            )

    async def _call_for(
        self,
        principal: Principal,
        headers: dict[str, str],
        receive: Receive,
        send: Send,
        upload: UploadHold,
        entry: AccessEntry,
        read: ParamsReader,
        dispatch: str,
        scheme: str = "http",
    ) -> None:
        """One edit or generation: its body read by ``read``, handed to the dispatcher's
        ``dispatch`` method (``aimage_edit`` or ``aimage_generation``)."""
        declared = headers.get("content-length")
        if declared is not None and declared.isascii() and declared.isdigit():
            if int(declared) > self.max_body:
                raise too_large(self.max_body)  # refused before a byte of the body is read
            upload.grow_to(int(declared))
        params = await read(receive, headers, upload)
        # LiteLLM's x-litellm-customer-id & co, then the config's user_header_mappings
        take_end_user_headers(headers, params, self.config.general_settings.end_user_headers)
        take_tags_header(headers, params)  # LiteLLM's x-litellm-tags
        model = params.get("model")
        entry.model = model if isinstance(model, str) else None
        if not model:
            raise ProxyError(
                400, "model: required", param="model", code="missing_required_parameter"
            )
        if model not in self.model_names:
            raise ProxyError(
                404,
                f"The model {model!r} does not exist on this proxy; "
                f"see GET /v1/models for the models it serves",
                param="model",
                code="model_not_found",
                reason="unknown_model",
            )
        as_urls = self._url_answer(params, model)
        control = current_control()
        url_answer: UrlAnswer | None = None
        if as_urls and control is not None and self.image_store is not None:
            # its images are stored before the call's ledger row is written, so the row says
            # whether the answer went out as URLs, or as base64 and why
            url_answer = UrlAnswer(self.image_store, self._url_base(headers, scheme))
            control.finish = url_answer.finish
            control.finish_cancelled = NOTHING_ANSWERED
        elif control is not None and self._url_passed_on(params):
            # the upstream answers URLs itself (xAI, an OpenAI-compatible server): the row says
            # how its answer went out, as a URL answer's row does
            control.finish = upstream_answer_format
            control.finish_cancelled = NOTHING_ANSWERED
        # The call's one start instant: its budgets' periods (a UTC day, a month) and its
        # ledger row's start_time, so a call at midnight is one day's on both.
        started = self.clock()
        if control is not None:
            control.start_time = started
        # Key's model list, rpm, end user's block and budgets; holds the call's maximum cost.
        reservation = await self.accounts.admit(
            principal, params, model, started, control.request_id if control is not None else None
        )
        if (
            control is not None
            and principal.models is not None
            and self.config.general_settings.enforce_fallback_model_access
        ):  # the fallbacks the key may not call are skipped
            control.may_serve = principal.may_call
        if control is not None and reservation.held:  # retries and fallbacks grow the hold
            control.cover = functools.partial(self._cover, reservation)
        watcher = _watch_caller(receive, control)
        try:  # with a durable ledger the bus returns only once the call's row is acknowledged
            response = await getattr(self.dispatcher, dispatch)(**params)
        except BaseException as exc:
            if watcher is not None:
                watcher.cancel()
            # a failed call the upstream may have billed (an estimate, a reported charge) is
            # counted on the budgets as the ledger records it; one not billed costs 0
            await _settle_ended(reservation, control, exc)
            if not isinstance(exc, Exception):
                raise
            # Not bound to a name here: this frame holding its own exception would be a cycle
            # keeping the call's upload alive until a full collection (tracking.flow).
            raise _answer_for(exc) from None
        if watcher is not None:
            watcher.cancel()
        if isinstance(response, AsyncImageEditStream):  # stream=true: its first event is in
            try:
                await relay_stream(response, receive, send, self.body_timeout)
            finally:  # however the relay ended (even cancelled as it closed the stream)
                await _settle_ended(reservation, control)
                ended = response.event  # its cost, in the access line (its headers had none)
                if ended is not None:
                    costs = cost_headers(ended.cost_usd, ended.cost_source)
                    entry.cost = costs["x-tracking-response-cost"]
            return
        await reservation.settle(response.cost_usd)
        answer_headers = _answer_headers(response, entry)
        if url_answer is None or url_answer.body is None:
            body = response.json_bytes()
        else:
            body = url_answer.body
            if url_answer.fallback is not None:  # asked as URLs, answered as base64: why
                answer_headers.append((FALLBACK_HEADER.encode(), url_answer.fallback.encode()))
        await _send_json(send, 200, body, answer_headers)

    def _url_base(self, headers: dict[str, str], scheme: str) -> str:
        """Where the URLs of an answer start: ``external_base_url``, else the request's own
        origin (a load balancer's x-forwarded-proto, if it is one: never "javascript:...";
        of a chain of them, "https, http", the first's, which the client reached)."""
        assert self.image_store is not None
        if self.image_store.settings.external_base_url:
            return self.image_store.settings.external_base_url
        proto = headers.get("x-forwarded-proto", scheme).split(",", 1)[0].strip().lower()
        host = headers.get("host", "localhost")
        if not origin_host(host):
            # refused before the upstream is called: a URL made with it could not be opened
            # (or would lead elsewhere), and the images behind it would be paid for all the same
            shown = host if len(host) <= 100 else f"{host[:100]}..."
            raise ProxyError(
                400,
                f"response_format=url: the request's Host header {shown!r} is not a host and "
                "port, so no image URL can be made with it; send the proxy's address as Host, "
                "or set general_settings.image_store.external_base_url",
                param="response_format",
                code="invalid_host",
            )
        return f"{proto if proto in ('http', 'https') else scheme}://{host}"

    async def _cover(
        self, reservation: Reservation, lost: Sequence[ImageEditRequest], upcoming: ImageEditRequest
    ) -> None:
        """The call's budgets cover its next attempt, or it is withheld (and counted)."""
        try:
            await self.accounts.budgets.cover(reservation, lost, upcoming)
        except ProxyError:
            if self.metrics is not None:
                self.metrics.count_withheld_attempt()
            raise

    def _url_answer(self, params: dict[str, Any], model: str) -> bool:
        """Whether the proxy serves this call's images as URLs; if so the upstream is asked
        without ``response_format`` and the call's metadata records how it was answered."""
        if params.get("response_format") != "url" or model not in self.url_models:
            return False
        if params.get("stream"):
            raise ProxyError(
                400,
                "response_format=url cannot be streamed: streamed events carry each image as "
                "b64_json; ask without stream=true for URLs, or stream without response_format",
                param="response_format",
                code="unsupported_parameter",
            )
        assert self.image_store is not None
        if self.image_store.full():
            raise ProxyError(
                507,
                "the proxy's image store is full, so it cannot answer with URLs now; ask for "
                "b64_json, or try again after expired images are swept",
                type="server_error",
                param="response_format",
                code="image_store_full",
            )
        params.pop("response_format")
        recorded_as_url(params)
        return True

    @staticmethod
    def _url_passed_on(params: dict[str, Any]) -> bool:
        """Whether this call asks for URLs from an upstream that makes them itself (a model
        that takes ``response_format``: xAI's, an OpenAI-compatible server's); if so its
        metadata records ``response_format`` as a URL answer's does."""
        if params.get("response_format") != "url" or params.get("stream"):
            return False
        recorded_as_url(params)
        return True

    async def _liveliness(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _send_json(send, 200, b'{"status":"alive"}')

    async def _readiness(self, scope: Scope, receive: Receive, send: Send) -> None:
        database = (
            "not started"
            if self.sinks is None
            else await check_ledger(
                self.sinks.ledger, self.config.general_settings.ledger_stuck_after
            )
        )
        ready = database == "connected"
        body = {"status": "ready" if ready else "unready", "database": database}
        await _send_json(send, 200 if ready else 503, json.dumps(body).encode())

    async def _models(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The config's model names; a virtual key with ``models`` sees those it may call, as
        LiteLLM's ``/v1/models`` lists a key's own models (until 2026-12-07 it saw all)."""
        principal = await self.auth.authenticate(request_headers(scope))
        if principal.models is None:
            await _send_json(send, 200, self._models_body)
            return
        own = [name for name in self.config.model_names() if principal.may_call(name)]
        await _send_json(send, 200, _model_list(own))

    def _model_route(self, path: str) -> Callable[[Scope, Receive, Send], Awaitable[None]] | None:
        """``GET /v1/models/{id}`` (``client.models.retrieve``); None for other paths."""
        for prefix in ("/v1/models/", "/models/"):
            if path.startswith(prefix) and len(path) > len(prefix):
                name = path[len(prefix) :]
                return lambda scope, receive, send: self._model(name, scope, send)
        return None

    def _azure_route(self, path: str) -> Callable[[Scope, Receive, Send], Awaitable[None]] | None:
        """``POST /openai/deployments/{deployment}/images/edits`` (or ``/images/generations``),
        as LiteLLM serves them: the call's model is the deployment named in the path, whatever
        the body says; None for other paths."""
        name = path[len(_AZURE_PREFIX) :]
        for suffix, read, dispatch in (
            ("/images/edits", self._edit_params, "aimage_edit"),
            ("/images/generations", self._generation_params, "aimage_generation"),
        ):
            if name.endswith(suffix) and len(name) > len(suffix):
                deployment = name[: -len(suffix)]
                named = functools.partial(_as_deployment, read, deployment)
                return lambda scope, receive, send: self._image_call(
                    scope, receive, send, named, dispatch
                )
        return None

    async def _model(self, name: str, scope: Scope, send: Send) -> None:
        principal = await self.auth.authenticate(request_headers(scope))
        if name not in self.model_names or not principal.may_call(name):
            raise ProxyError(
                404,
                f"The model {name[:200]!r} does not exist on this proxy",
                param="model",
                code="model_not_found",
            )
        body = {"id": name, "object": "model", "created": 0, "owned_by": "tracking"}
        await _send_json(send, 200, json.dumps(body).encode())

    def _deployments(self) -> Sequence[Deployment]:
        """The deployments calls are routed to (the router's; the config's without one)."""
        if isinstance(self.dispatcher, RoutedModels):
            return self.dispatcher.router.deployments
        return router_deployments(self.config)

    async def _health(self, scope: Scope, receive: Receive, send: Send) -> None:
        """LiteLLM's ``GET /health``, from the configuration alone: no paid upstream call."""
        await self.auth.authenticate(request_headers(scope))
        report = HealthReport.of(self._deployments())
        await _send_json(send, 200, json.dumps(report.to_dict()).encode())

    async def _metrics(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = request_headers(scope)
        if self.config.general_settings.require_auth_for_metrics:
            await self.auth.authenticate(headers)
        if self.metrics is None:
            raise ProxyError(503, "metrics are not ready yet", code="not_ready", retry=True)
        body, content_type = await asyncio.to_thread(self.metrics.render, headers.get("accept"))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", content_type.encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _openapi(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _send_json(send, 200, self._openapi_body)

    async def _docs(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = self._docs_body
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/html; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _watch_caller(receive: Receive, control: CallControl | None) -> asyncio.Task[None] | None:
    """Let the call know when its client hangs up, so it starts no new attempt after that
    (:func:`_client_gone`, read as the control's ``probe``)."""
    if control is None:
        return None
    control.probe, watcher = _client_gone(receive)
    return watcher


def _client_gone(receive: Receive) -> tuple[Callable[[], bool], asyncio.Task[None] | None]:
    """Whether the client has hung up, as a check that costs nothing, and the task (if any)
    watching for it, to cancel once the answer is sent.

    Uvicorn's request cycle (``receive``'s object) keeps a ``disconnected`` flag that its
    protocol sets when the connection is lost: it is read when it matters (before an attempt,
    during a backoff, before a stored image's next piece), which costs nothing per request.
    Under another ASGI server, a task waits for the disconnect message instead.
    """
    cycle: Any = getattr(receive, "__self__", None)
    if isinstance(getattr(cycle, "disconnected", None), bool):
        return lambda: bool(cycle.disconnected), None
    left = asyncio.Event()
    return left.is_set, asyncio.create_task(_watch_disconnect(receive, left))


async def _watch_disconnect(receive: Receive, left: asyncio.Event) -> None:
    message = await receive()
    if message["type"] == "http.request":  # a body its handler does not read (a GET's)
        message = await receive()
    if message["type"] == "http.disconnect":
        left.set()


class _Cors:
    """``general_settings.cors_allow_origins``: which browser origins may call the proxy."""

    def __init__(self, origins: tuple[str, ...]) -> None:
        self.any = "*" in origins
        self.origins = frozenset(origins)
        self.enabled = bool(origins)

    def allows(self, origin: str | None) -> bool:
        return origin is not None and (self.any or origin in self.origins)

    def answer_headers(self, origin: str | None) -> list[tuple[bytes, bytes]]:
        if not self.allows(origin):
            return []
        assert origin is not None
        return [
            (b"access-control-allow-origin", b"*" if self.any else origin.encode("latin-1")),
            (b"vary", b"origin"),
            (
                b"access-control-expose-headers",
                b"x-request-id, x-upstream-request-id, x-should-retry, retry-after, "
                b"x-tracking-request-id, x-tracking-response-cost, x-tracking-cost-source, "
                b"x-tracking-url-fallback",
            ),
        ]


def _stamped(send: Send, request_id: str, extra: list[tuple[bytes, bytes]]) -> Send:
    """``send`` that adds ``x-request-id`` (unless the answer names its call's own) and the
    CORS headers to the answer's start."""
    stamp = (b"x-request-id", request_id.encode())

    async def stamped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            if not any(name == b"x-request-id" for name, _ in headers):
                headers.append(stamp)
            headers.extend(extra)
            message = {**message, "headers": headers}
        await send(message)

    return stamped


def _without_body(send: Send) -> Send:
    """``send`` for a HEAD request: the answer's start (its ``content-length`` kept, as GET's
    would be) and an empty body."""

    async def headless(message: Message) -> None:
        if message["type"] == "http.response.body":
            if message.get("more_body", False):
                return  # the last body message ends the answer
            message = {"type": "http.response.body", "body": b""}
        await send(message)

    return headless


async def _as_deployment(
    read: ParamsReader,
    deployment: str,
    receive: Receive,
    headers: dict[str, str],
    upload: UploadHold,
) -> dict[str, Any]:
    """An Azure-style route's body read by ``read``, its model the path's ``deployment``."""
    params = await read(receive, headers, upload)
    params["model"] = deployment
    return params


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("image-edit-tracking")
    except PackageNotFoundError:
        return "0"


def _answer_headers(response: Any, entry: AccessEntry) -> list[tuple[bytes, bytes]]:
    """Our headers and LiteLLM's beside them (``x-litellm-response-cost`` only for a priced
    call: clients parse it as a number, and an unpriced call has none)."""
    hidden = response._hidden_params
    headers: list[tuple[bytes, bytes]] = [
        (b"x-request-id", response.request_id.encode()),
        (b"x-tracking-request-id", response.request_id.encode()),
        (b"x-litellm-call-id", response.request_id.encode()),
    ]
    source = hidden.get("cost_source")  # "estimate": the figure is not the whole known bill
    costs = cost_headers(response.cost_usd, source if isinstance(source, str) else None)
    headers.extend((name.encode(), value.encode()) for name, value in costs.items())
    upstream_id = hidden.get("upstream_request_id")
    if isinstance(upstream_id, str) and upstream_id:
        headers.append((b"x-upstream-request-id", upstream_id.encode("latin-1", "replace")))
    deployment = hidden.get("deployment_id")
    if isinstance(deployment, str):
        headers.append((b"x-litellm-model-id", deployment.encode("latin-1", "replace")))
    upstream_ms = hidden.get("upstream_latency_ms")
    total_ms = (time.perf_counter() - entry.started) * 1000
    overhead = max(0.0, total_ms - upstream_ms) if isinstance(upstream_ms, float) else total_ms
    headers.append((b"x-litellm-overhead-duration-ms", f"{overhead:.3f}".encode()))
    return headers


def _model_list(names: Iterable[str]) -> bytes:
    """``GET /v1/models``' answer for ``names``, OpenAI's list shape."""
    data = [{"id": name, "object": "model", "created": 0, "owned_by": "tracking"} for name in names]
    return json.dumps({"object": "list", "data": data}).encode()


async def _send_json(
    send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [_JSON, (b"content-length", str(len(body)).encode())]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _settle_ended(
    reservation: Reservation, control: CallControl | None, exc: BaseException | None = None
) -> None:
    """Settle the hold of a call that failed with ``exc`` (or a streamed call whose relay
    ended), at what its ledger row records.

    Whatever ``exc`` is (a typed failure, a cancellation: a client gone under an ASGI server
    that cancels, a bug of ours), a call whose event was made costs what the event says
    (``control.cost_usd``: an estimate for an attempt whose answer was lost). A call that
    started but has no event to say what it cost (it broke before its event was made) may
    have been billed: its hold, the most it was expected to cost, stays counted. A call that
    never started sent nothing: its hold is released."""
    if control is not None and control.ended:
        await reservation.settle(control.cost_usd)
    elif isinstance(exc, TrackingError) and exc.request_id is not None:
        await reservation.settle(exc.cost_usd)
    elif control is not None and control.claimed:
        if reservation.held and not reservation.done:
            log.warning(
                "a call ended (%s) without an event saying what it cost: its budget hold "
                "stays counted",
                type(exc).__name__ if exc is not None else "its stream's relay",
            )
        await reservation.keep()
    else:
        await reservation.release()


def _answer_for(exc: Exception) -> ProxyError:
    """The answer for a call that failed, naming its request id (its event and row have it)
    and what it cost."""
    error = from_exception(exc)
    request_id = getattr(exc, "request_id", None)
    if request_id:
        error.headers["x-tracking-request-id"] = request_id
        error.headers["x-request-id"] = request_id
    error.headers.update(failure_cost(exc))
    return error


def _costed(error: ProxyError, method: str, path: str, control: CallControl) -> ProxyError:
    """``error`` saying, when it refuses an image call before the call started, that nothing
    was billed (a call that started says what it cost itself: :func:`_answer_for`)."""
    if method == "POST" and path in _IMAGE_PATHS and not control.claimed:
        for name, value in NOT_BILLED_HEADERS.items():
            error.headers.setdefault(name, value)
    return error


def _database_away(exc: Exception) -> ProxyError | None:
    """A database that stopped answering during a management or spend request (the SQL
    driver's connection errors, as SQLAlchemy raises them, or a database unreachable when the
    key store first opens it: ``ledger_unreachable``): a 503 to try again, not a 500 saying
    the proxy is misconfigured (as the latter was until 2026-12-05)."""
    if isinstance(exc, ConfigurationError) and exc.error_type == "ledger_unreachable":
        log.warning("the database is unavailable: %s", exc.message)
    else:
        errors = sys.modules.get("sqlalchemy.exc")
        if errors is None or not isinstance(exc, errors.OperationalError | errors.InterfaceError):
            return None
        log.warning("the database is unavailable: %s", type(exc.orig).__name__ if exc.orig else exc)
    return ProxyError(
        503,
        "the database is unavailable right now; try again shortly",
        type="server_error",
        code="store_unavailable",
        reason="store_unavailable",
        retry=True,
    )


async def _send_error(send: Send, error: ProxyError) -> None:
    extra = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in error.headers.items()]
    await _send_json(send, error.status, error.body(), extra)


def create_app(
    config: ProxyConfig,
    *,
    dispatcher: Dispatcher | None = None,
    key_checks: tuple[KeyCheck, ...] = (),
    metrics_registry: Any = None,
) -> ProxyApp:
    """The proxy's ASGI app for a validated config."""
    return ProxyApp(
        config, dispatcher=dispatcher, key_checks=key_checks, metrics_registry=metrics_registry
    )


def check_startable(config: ProxyConfig) -> tuple[Deployment, ...]:
    """Build, and let go, what each process's app builds from the config beyond the config's
    own checks: the router (a fallback naming no ``model_name``, a deployment without a key or
    one no call could reach), the image store (a folder it cannot use) and the ledger's engine
    (an in-memory SQLite database). ``tracking serve``
    runs it before it binds a port or starts a worker, so such a fault is one line and exit
    status 2, never a traceback in each of ``--workers N`` processes, which uvicorn's
    supervisor would start again and again. Returns the router's deployments (for the
    warning about those whose calls are unpriced)."""
    from tracking.integrations.sql import create_ledger_engine

    from ..router import Router
    from .ledger import ledger_url
    from .models import router_config

    export_environment(config)  # as the app does: a provider reads OPENAI_API_KEY & co
    with Router.from_config(
        router_config(config),
        register_prices=False,
        model_list_prices=model_list_prices_of(config),  # as read once for the process
    ) as router:
        deployments = router.deployments
    make_ledger_folder(config)  # before the image store, which may live inside it
    general = config.general_settings
    build_image_store(parse_store_settings(general.image_store, general.database_url))
    # the ledger's engine, never connected here: an in-memory SQLite URL stopped each worker at
    # its start (under --workers N the supervisor then exited with status 0)
    create_ledger_engine(ledger_url(config)).dispose()
    return deployments


def app_from_environment() -> ProxyApp:
    """The app of a worker process: the config path comes from ``TRACKING_PROXY_CONFIG``."""
    from .server import LOG_LEVEL_ENV, configure_logging, header_deadline_protocol

    configure_logging(os.environ.get(LOG_LEVEL_ENV, "info"))
    try:
        config_log = logging.getLogger("tracking.config")
        config_log.disabled = True  # its warnings were said once, by tracking serve, not by each
        try:
            config = load_config(os.environ[CONFIG_ENV])
        finally:
            config_log.disabled = False
        header_deadline_protocol(config)  # this worker's protocol class gets the deadline
        return create_app(config)
    except Exception as exc:  # one line and a start failure, never a traceback in each worker
        fault = StartFault.of(exc)
        report(fault)
        log.error("%s", fault.message)
        raise SystemExit(STARTUP_FAILURE) from None  # uvicorn's own status
