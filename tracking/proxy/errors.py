"""OpenAI-shaped error answers of the proxy, and how every failure maps to one.

Each refusal is a :class:`ProxyError` carrying its HTTP status and the four fields of OpenAI's
error object (``message``, ``type``, ``param``, ``code``) in OpenAI's vocabulary: ``type`` is
``invalid_request_error`` for the caller's faults, ``requests`` for rate limits,
``insufficient_quota`` for spent budgets and ``server_error`` for ours; ``code`` is OpenAI's
(``invalid_value``, ``missing_required_parameter``, ...) where OpenAI has one. Our own detail
stays in the message.

Every answer says whether the official clients should retry it (``x-should-retry``, which they
obey before looking at the status): ``false`` for every answer about an upstream call (the proxy
has spent the call's retries already, so a client retry would multiply them) and for refusals a
retry cannot fix (validation, auth, budgets, blocks); ``true``, with ``Retry-After``, only where
waiting helps (a key's rpm, its parallel limit, the upload bytes in flight at their cap, no
deployment free, the database briefly away).

:func:`from_exception` maps the SDK's exception tree: a validation fault is the caller's 400;
an upstream 4xx passes through with its status and the upstream's own ``type`` and ``code``
untouched (except 401/403, which mean the proxy's own provider credential was refused and so are
a 502: the caller's key is fine); the router finding no deployment free (every one at its
rpm/tpm limit or cooling down) is a 429 the proxy decides itself (rejection reason ``rate``);
5xx, dropped connections and unreadable answers are 502, and a timeout is 504. Messages never
carry secrets (the SDK masks them) nor the upstream's address.
"""

from __future__ import annotations

import json
import logging
import math
import re

from ..errors import (
    APIConnectionError,
    APIError,
    APIResponseError,
    APIStatusError,
    APITimeoutError,
    ConfigurationError,
    StreamInterruptedError,
    ValidationError,
)

__all__ = ["ProxyError", "from_exception"]

log = logging.getLogger("tracking.proxy")

# The SDK prefixes upstream messages with "<status> from <host>: "; the caller gets the message.
_UPSTREAM_PREFIX = re.compile(r"^\d{3} from [^\s:]+(?::\d+)?: ")


_UNREADABLE = "the upstream answered with a body that could not be read"
#: A job the upstream accepted (FLUX) whose result could not be had: not the caller's to retry.
_JOB_RESULT_LOST = (
    "the upstream accepted the job, which is billed, but its result could not be had (it failed "
    "upstream or could not be downloaded); a retry would submit and pay for the job again"
)

#: Seconds a client is told to wait when a retry helps and nothing more exact is known.
DEFAULT_RETRY_AFTER = 1


class ProxyError(Exception):
    """A refusal with an HTTP status and an OpenAI-shaped body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        reason: str | None = None,
        retry: bool = False,
        upstream: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or ("server_error" if status >= 500 else "invalid_request_error")
        self.param = param
        self.code = code
        self.headers = dict(headers or {})
        #: The rejection metric's label for refusals the proxy decides itself.
        self.reason = reason
        #: Whether a client retry can help (``x-should-retry``); never for upstream answers.
        self.retry = retry
        #: The answer is about an upstream call (its failure), not a refusal of ours.
        self.upstream = upstream
        self.headers["x-should-retry"] = "true" if retry else "false"
        if retry:
            self.headers.setdefault("retry-after", str(DEFAULT_RETRY_AFTER))

    def body(self) -> bytes:
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return json.dumps({"error": error}).encode()

    def rejection_reason(self) -> str | None:
        """The label this answer is counted under as a refusal, None for upstream failures
        and for our own server errors."""
        if self.reason is not None:
            return self.reason
        if self.upstream or self.status >= 500:
            return None
        return _REASON_BY_STATUS.get(self.status, "invalid_request")


#: Labels (``tracking.integrations.prometheus.PROXY_REJECTION_REASONS``) for refusals raised without
#: a reason of their own.
_REASON_BY_STATUS = {
    400: "validation",
    401: "auth",
    403: "auth",
    404: "not_found",
    405: "method_not_allowed",
    408: "body_timeout",
    413: "size",
    429: "rate",
}


def from_exception(exc: BaseException) -> ProxyError:
    """The answer for a failure raised by the SDK call path."""
    if isinstance(exc, ProxyError):
        return exc
    error = _mapped(exc)
    upstream_id = getattr(exc, "upstream_request_id", None)
    if isinstance(upstream_id, str) and upstream_id:
        error.headers["x-upstream-request-id"] = upstream_id
    return error


def _mapped(exc: BaseException) -> ProxyError:
    if isinstance(exc, ValidationError):
        return ProxyError(400, exc.message, param=exc.param, code=exc.code, reason="validation")
    if isinstance(exc, APITimeoutError):
        return ProxyError(
            504, "the upstream did not answer in time", code="upstream_timeout", upstream=True
        )
    if isinstance(exc, StreamInterruptedError):  # reached, answered 200, then broke off
        return ProxyError(
            502,
            "the upstream's stream broke off before its first event",
            code="stream_interrupted",
            upstream=True,
        )
    if isinstance(exc, APIConnectionError):
        return ProxyError(
            502, "the upstream could not be reached", code="upstream_unreachable", upstream=True
        )
    if isinstance(exc, APIResponseError):
        return ProxyError(
            502,
            _JOB_RESULT_LOST if exc.job_submitted else _UNREADABLE,
            code="upstream_invalid_response",
            upstream=True,
        )
    if isinstance(exc, APIStatusError):
        if exc.error_type == "no_deployment_available":  # the router's rpm/tpm or cooldowns
            return _no_deployment(exc)
        status = exc.status_code or 0
        if exc.job_submitted and exc.answer_status is None and 400 <= status < 500:
            # The job's status page answered 4xx after the job was accepted (and billed): a 429
            # would tell the client to retry, submitting and paying for another job; a 404 or
            # 400 that the client's request was wrong. (A refusal read from a 2xx status page,
            # FLUX's "Content Moderated", keeps its own answer: answer_status says so.)
            until = " until the retries ran out" if status == 429 else ""
            return ProxyError(
                502,
                f"{_JOB_RESULT_LOST} (its status page answered HTTP {status}{until})",
                code="upstream_job_result_unavailable",
                upstream=True,
            )
        return _from_status_error(exc)
    if isinstance(exc, APIError):
        return ProxyError(502, _message(exc), code="upstream_error", upstream=True)
    if isinstance(exc, ConfigurationError):
        log.error("proxy misconfigured: %s", exc.message)
        return ProxyError(500, "the proxy is misconfigured; see its log", code=exc.error_type)
    log.error("unexpected error while serving a request", exc_info=exc)
    return ProxyError(500, "internal error", code="internal_error")


def _from_status_error(exc: APIStatusError) -> ProxyError:
    status = exc.status_code or 502
    message = _message(exc)
    if status in (401, 403):
        return ProxyError(
            502,
            "the upstream refused the proxy's credentials for this model",
            code="upstream_authentication_error",
            upstream=True,
        )
    headers = {}
    if exc.retry_after is not None:  # informative: the proxy has already retried
        headers["retry-after"] = str(max(1, math.ceil(exc.retry_after)))
    if status == 429:
        return ProxyError(
            429,
            message,
            type=exc.upstream_type or "requests",
            param=exc.param,
            code=exc.code or "rate_limit_exceeded",
            headers=headers,
            upstream=True,
        )
    if 400 <= status < 500:
        return ProxyError(
            status,
            message,
            type=exc.upstream_type,
            param=exc.param,
            code=exc.code,
            headers=headers,
            upstream=True,
        )
    return ProxyError(
        502,
        message,
        type=exc.upstream_type or "server_error",
        code=exc.code or "upstream_error",
        upstream=True,
    )


def _no_deployment(exc: APIStatusError) -> ProxyError:
    headers = {}
    if exc.retry_after is not None:
        headers["retry-after"] = str(max(1, math.ceil(exc.retry_after)))
    return ProxyError(
        429,
        exc.message,
        type="requests",
        code="rate_limit_exceeded",
        headers=headers,
        reason="rate",
        retry=True,  # decided before any upstream call: a later try may find one free
    )


def _message(exc: APIError) -> str:
    return _UPSTREAM_PREFIX.sub("", exc.message, count=1)
