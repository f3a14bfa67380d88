"""The one exception tree of the library.

Every error a caller can see is a :class:`TrackingError`; none of them ever carries a secret
(provider keys are masked out of every message before the exception is built)::

    TrackingError
    ├── ConfigurationError            bad settings, unknown callback names, missing API key
    ├── ValidationError               bad parameters, refused before any network call (400)
    │   └── UnsupportedParamsError    a parameter the target model does not take
    └── APIError                      the upstream exchange failed
        ├── APIConnectionError        no usable HTTP response (retryable)
        │   └── APITimeoutError       the call's timeout ran out (retryable)
        ├── APIResponseError          a 2xx answer we could not read (malformed JSON)
        └── APIStatusError            the upstream answered 4xx / 5xx
            ├── BadRequestError       400
            ├── AuthenticationError   401
            ├── PermissionDeniedError 403
            ├── NotFoundError         404
            ├── RequestTooLargeError  413
            ├── UnprocessableEntityError 422
            ├── RateLimitError        429 (retryable, honours Retry-After)
            └── InternalServerError   5xx (retryable)

Each error has a short, fixed ``error_type`` (used as a metric label and in the ledger), the
HTTP ``status_code`` where there is one, the upstream's ``message``, and the ``param`` it is
about where known.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIResponseError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConfigurationError",
    "InternalServerError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestTooLargeError",
    "TrackingError",
    "UnprocessableEntityError",
    "UnsupportedParamsError",
    "ValidationError",
    "mask_secrets",
    "status_error_class",
]


def mask_secrets(text: str, secrets: Iterable[str | None]) -> str:
    """Replace every occurrence of each secret (and of its Bearer form) with a masked stand-in."""
    for secret in secrets:
        if secret and len(secret) >= 4 and secret in text:
            text = text.replace(secret, _masked(secret))
    return text


def _masked(secret: str) -> str:
    return f"{secret[:3]}***" if len(secret) > 12 else "***"


class TrackingError(Exception):
    """Base of every error raised by the library."""

    error_type: str = "error"
    status_code: int | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigurationError(TrackingError):
    """The library or proxy is configured wrongly (unknown names, missing keys, bad files)."""

    error_type = "configuration_error"


class ValidationError(TrackingError, ValueError):
    """A parameter breaks a rule; raised before anything is sent upstream."""

    error_type = "validation_error"
    status_code = 400

    def __init__(self, message: str, *, param: str | None = None, rule: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.rule = rule


class UnsupportedParamsError(ValidationError):
    """A parameter the target model does not accept (``drop_params=True`` drops it instead)."""

    error_type = "unsupported_param"


class APIError(TrackingError):
    """The exchange with the upstream failed."""

    error_type = "api_error"
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        param: str | None = None,
        code: str | None = None,
        upstream_request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        if status_code is not None:
            self.status_code = status_code
        self.param = param
        self.code = code
        self.upstream_request_id = upstream_request_id
        self.retry_after = retry_after


class APIConnectionError(APIError):
    """No usable HTTP response: refused, reset or dropped connections."""

    error_type = "connection_error"
    retryable = True


class APITimeoutError(APIConnectionError):
    """The call's timeout ran out before the upstream answered."""

    error_type = "timeout"


class APIResponseError(APIError):
    """The upstream answered with a success status but a body we cannot read."""

    error_type = "invalid_response"
    retryable = True


class APIStatusError(APIError):
    """The upstream answered with a 4xx or 5xx status."""

    error_type = "api_status_error"


class BadRequestError(APIStatusError):
    error_type = "bad_request"
    status_code = 400


class AuthenticationError(APIStatusError):
    error_type = "authentication_error"
    status_code = 401


class PermissionDeniedError(APIStatusError):
    error_type = "permission_denied"
    status_code = 403


class NotFoundError(APIStatusError):
    error_type = "not_found"
    status_code = 404


class RequestTooLargeError(APIStatusError):
    error_type = "request_too_large"
    status_code = 413


class UnprocessableEntityError(APIStatusError):
    error_type = "unprocessable_entity"
    status_code = 422


class RateLimitError(APIStatusError):
    error_type = "rate_limit"
    status_code = 429
    retryable = True


class InternalServerError(APIStatusError):
    error_type = "server_error"
    status_code = 500
    retryable = True


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    413: RequestTooLargeError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def status_error_class(status: int) -> type[APIStatusError]:
    """The error class for an upstream HTTP status (5xx share one class; 408/409 retry)."""
    if status >= 500:
        return InternalServerError
    return _BY_STATUS.get(status, APIStatusError)
