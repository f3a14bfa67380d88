"""OpenAI-shaped error answers of the proxy, and how every failure maps to one.

Each refusal is a :class:`ProxyError` carrying its HTTP status and the four fields of OpenAI's
error object (``message``, ``type``, ``param``, ``code``). :func:`from_exception` maps the SDK's
exception tree: a validation fault is the caller's 400; an upstream 4xx passes through with its
status (except 401/403, which mean the proxy's own provider credential was refused and so are a
502: the caller's key is fine); the router finding no deployment free (every one at its rpm/tpm
limit or cooling down) is a 429 the proxy decides itself (rejection reason ``rate``); 5xx,
dropped connections and unreadable answers are 502, and a
timeout is 504. Messages never carry secrets (the SDK masks them) nor the upstream's address.
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
    UnsupportedParamsError,
    ValidationError,
)

__all__ = ["ProxyError", "from_exception"]

log = logging.getLogger("tracking.proxy")

# The SDK prefixes upstream messages with "<status> from <host>: "; the caller gets the message.
_UPSTREAM_PREFIX = re.compile(r"^\d{3} from [^\s:]+(?::\d+)?: ")


class ProxyError(Exception):
    """A refusal with an HTTP status and an OpenAI-shaped body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}
        #: Set for refusals the proxy decides itself (auth, size, rate): the metric's label.
        self.reason = reason

    def body(self) -> bytes:
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return json.dumps({"error": error}).encode()


def from_exception(exc: BaseException) -> ProxyError:
    """The answer for a failure raised by the SDK call path."""
    if isinstance(exc, ProxyError):
        return exc
    if isinstance(exc, ValidationError):
        code = "unsupported_parameter" if isinstance(exc, UnsupportedParamsError) else exc.rule
        return ProxyError(400, exc.message, param=exc.param, code=code or exc.error_type)
    if isinstance(exc, APITimeoutError):
        return ProxyError(
            504, "the upstream did not answer in time", type="server_error", code="upstream_timeout"
        )
    if isinstance(exc, APIConnectionError):
        return ProxyError(
            502,
            "the upstream could not be reached",
            type="server_error",
            code="upstream_unreachable",
        )
    if isinstance(exc, APIResponseError):
        return ProxyError(
            502,
            "the upstream answered with a body that could not be read",
            type="server_error",
            code="upstream_invalid_response",
        )
    if isinstance(exc, APIStatusError):
        if exc.error_type == "no_deployment_available":  # the router's rpm/tpm or cooldowns
            return _no_deployment(exc)
        return _from_status_error(exc)
    if isinstance(exc, APIError):
        return ProxyError(502, _message(exc), type="server_error", code="upstream_error")
    if isinstance(exc, ConfigurationError):
        log.error("proxy misconfigured: %s", exc.message)
        return ProxyError(
            500, "the proxy is misconfigured; see its log", type="server_error", code=exc.error_type
        )
    log.error("unexpected error while serving a request", exc_info=exc)
    return ProxyError(500, "internal error", type="server_error", code="internal_error")


def _from_status_error(exc: APIStatusError) -> ProxyError:
    status = exc.status_code or 502
    message = _message(exc)
    if status in (401, 403):
        return ProxyError(
            502,
            "the upstream refused the proxy's credentials for this model",
            type="server_error",
            code="upstream_authentication_error",
        )
    if status == 429:
        headers = {}
        if exc.retry_after is not None:
            headers["retry-after"] = str(max(1, round(exc.retry_after)))
        return ProxyError(
            429,
            message,
            type="rate_limit_error",
            param=exc.param,
            code=exc.code or "rate_limit_exceeded",
            headers=headers,
        )
    if 400 <= status < 500:
        return ProxyError(status, message, param=exc.param, code=exc.code)
    return ProxyError(502, message, type="server_error", code=exc.code or "upstream_error")


def _no_deployment(exc: APIStatusError) -> ProxyError:
    headers = {}
    if exc.retry_after is not None:
        headers["retry-after"] = str(max(1, math.ceil(exc.retry_after)))
    return ProxyError(
        429,
        exc.message,
        type="rate_limit_error",
        code="rate_limit_exceeded",
        headers=headers,
        reason="rate",
    )


def _message(exc: APIError) -> str:
    return _UPSTREAM_PREFIX.sub("", exc.message, count=1)
