"""The one exception tree of the library.

Every error a caller can see is a :class:`TrackingError`; none of them ever carries a secret
(provider keys are masked out of every message before the exception is built)::

    TrackingError
    ├── ConfigurationError            bad settings, unknown callback names, missing API key
    ├── ValidationError               bad parameters, refused before any network call (400)
    │   └── UnsupportedParamsError    a parameter the target model does not take
    ├── StreamClosed                  a streamed call closed by its caller before it completed
    └── APIError                      the upstream exchange failed
        ├── APIConnectionError        no usable HTTP response (retried)
        │   ├── APITimeoutError       the call's timeout ran out (retried)
        │   └── StreamInterruptedError  a stream that ended before its completed event
        ├── APIResponseError          a 2xx answer we could not read (not retried: it was billed)
        └── APIStatusError            the upstream answered 4xx / 5xx
            ├── BadRequestError       400
            │   └── ContentPolicyError   400 refused by the upstream's safety system
            ├── AuthenticationError   401
            ├── PermissionDeniedError 403
            ├── NotFoundError         404
            ├── RequestTimeoutError   408 (retried)
            ├── ConflictError         409 (retried)
            ├── RequestTooLargeError  413
            ├── UnprocessableEntityError 422
            ├── RateLimitError        429 (retried, honours Retry-After)
            └── InternalServerError   5xx (retried, honours Retry-After)

Each error has a short, fixed ``error_type`` (used as a metric label and in the ledger), the
HTTP ``status_code`` where there is one, the upstream's own words in ``upstream_message`` (masked),
and the ``param`` it is about where known. A :class:`ValidationError` also names the ``rule`` that
was broken and lists every broken rule of the call in ``violations``, so one attempt reports all
of them; its ``code`` is the rule in OpenAI's own error vocabulary (:func:`openai_code`), the
value OpenAI's API would put in ``error.code``. Which errors are retried is the class attribute
``retryable``. :data:`ERROR_TYPES` is the fixed table of every ``error_type`` an event can carry,
this tree's and those of the subclasses other modules define, so a metric label never depends on
what was imported.
"""

from __future__ import annotations

import json
import string
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from decimal import Decimal

    from .events import ImageEditEvent
    from .response import SearchGrounding, Usage

__all__ = [
    "ERROR_TYPES",
    "UNSERVED_ERROR_TYPES",
    "APIConnectionError",
    "APIError",
    "APIResponseError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "ConfigurationError",
    "ConflictError",
    "ContentPolicyError",
    "InternalServerError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestTimeoutError",
    "RequestTooLargeError",
    "StreamClosed",
    "StreamInterruptedError",
    "TrackingError",
    "UnprocessableEntityError",
    "UnsupportedOperationError",
    "UnsupportedParamsError",
    "ValidationError",
    "Violation",
    "mask_secrets",
    "openai_code",
    "range_code",
    "status_error_class",
]


#: Every ``error_type`` an event can carry: the tree below, the subclasses defined elsewhere
#: (the router's ``no_deployment_available``, the ledger's ``ledger_schema_error`` and
#: ``ledger_unreachable``) and what the
#: flow gives a failure that is not a :class:`TrackingError` (``cancelled``, ``internal_error``).
#: Written out, not collected from ``__subclasses__()``: that walk sees only imported modules.
#: A test checks that every class in the tree uses one of these.
ERROR_TYPES: frozenset[str] = frozenset(
    {
        "error",
        "configuration_error",
        "validation_error",
        "unsupported_param",
        "unsupported_operation",
        "api_error",
        "connection_error",
        "timeout",
        "invalid_response",
        "api_status_error",
        "bad_request",
        "content_policy",
        "authentication_error",
        "permission_denied",
        "not_found",
        "request_timeout",
        "conflict",
        "request_too_large",
        "unprocessable_entity",
        "rate_limit",
        "server_error",
        "no_deployment_available",
        "ledger_schema_error",
        "ledger_unreachable",
        "cancelled",
        "internal_error",
        "stream_closed",
        "stream_interrupted",
    }
)
#: The ``error_type`` of a call that ends before a request was built for any model, so that no
#: model served it (its event's ``resolved_model`` and ``provider`` are empty): parameters the
#: model asked for does not take (``validation_error``, ``unsupported_param``), an ``api_key``
#: or ``api_base`` that cannot be sent (``configuration_error``), every deployment busy (the
#: router's ``no_deployment_available``), a cancellation, or a bug of ours (``internal_error``).
#: A call that got as far as a request names that request's model, whatever it ends with (a
#: provider refusing the request it was given, ``unsupported_operation`` included).
UNSERVED_ERROR_TYPES: frozenset[str] = frozenset(
    {
        "validation_error",
        "unsupported_param",
        "configuration_error",
        "no_deployment_available",
        "cancelled",
        "internal_error",
    }
)


def mask_secrets(text: str, secrets: Iterable[object]) -> str:
    """Replace every occurrence of each secret with a masked stand-in: the secret as it is, and
    the escaped forms an exception message may quote it in (``repr`` of the string or of its
    bytes, JSON with or without ``\\/``, URL-encoded), and the secret without surrounding
    whitespace. Anything that is not a string
    of at least 4 characters is skipped (never an error: this runs while reporting one)."""
    for secret in secrets:
        if not isinstance(secret, str) or len(secret) < 4:
            continue
        for form in _forms(secret):
            if form in text:
                text = text.replace(form, _masked(secret))
    return text


#: Characters every escaped form (repr, JSON, URL encoding) leaves as they are.
_PLAIN = frozenset(string.ascii_letters + string.digits + "-_.~")


def _forms(secret: str) -> tuple[str, ...]:
    """``secret`` and its escaped forms, longest first (so none is left half-masked)."""
    if _PLAIN.issuperset(secret):  # every escaped form is the key itself
        return (secret,)
    forms = {
        secret,
        secret.strip(),
        repr(secret)[1:-1],
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        repr(secret.encode("utf-8", "surrogatepass"))[2:-1],
        repr(secret.encode("latin-1", "backslashreplace"))[2:-1],
        json.dumps(secret).replace("/", "\\/")[1:-1],  # JSON encoders that escape "/"
        *_url_forms(secret),
    }
    return tuple(sorted((f for f in forms if len(f) >= 4), key=len, reverse=True))


def _url_forms(secret: str) -> tuple[str, ...]:
    """URL-encoded, as in a query string or form body (``quote_plus``, ``quote``), or a path."""
    try:
        return (
            urllib.parse.quote(secret, safe=""),
            urllib.parse.quote_plus(secret),
            urllib.parse.quote(secret),
        )
    except UnicodeEncodeError:  # a lone surrogate has no UTF-8 bytes to encode
        return ()


def _masked(secret: str) -> str:
    return f"{secret[:3]}***" if len(secret) > 12 else "***"


class TrackingError(Exception):
    """Base of every error raised by the library."""

    error_type: str = "error"
    status_code: int | None = None
    #: The ``request_id`` of the call's event (and ledger row), set when a call ends with it.
    request_id: str | None = None
    #: The cost the call's event records, set with ``request_id``: 0 when nothing was billed,
    #: the estimate or the charge reported when the upstream may have billed the failed call.
    cost_usd: Decimal | None = None
    #: How the event worked ``cost_usd`` out (its ``cost_source``), set with ``request_id``.
    cost_source: str | None = None
    #: The event's ``price_ref`` (``failed-call:not-billed`` for a failure that billed nothing).
    price_ref: str | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def ended(self, event: ImageEditEvent) -> None:
        """Record the call's event that ended with this error: its id and what it cost."""
        self.request_id, self.cost_usd = event.request_id, event.cost_usd
        self.cost_source, self.price_ref = event.cost_source, event.price_ref


class ConfigurationError(TrackingError):
    """The library or proxy is configured wrongly (unknown names, missing keys, bad files).

    ``param`` names the call's setting at fault when there is one (``api_key``, ``api_base``).
    """

    error_type = "configuration_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


#: Our rule names in OpenAI's ``error.code`` vocabulary (codes OpenAI's API answers, read
#: 2026-12-03: ``invalid_value``, ``unknown_parameter``, ``missing_required_parameter``,
#: ``invalid_type``, ``integer_above_max_value`` / ``integer_below_min_value``,
#: ``string_above_max_length``, ``array_above_max_length``, ``invalid_image_format``, ...).
_OPENAI_CODES: dict[str, str] = {
    "required": "missing_required_parameter",
    "type": "invalid_type",
    "enum": "invalid_value",
    "range": "invalid_value",  # the direction, when known, gives integer_above/below_...
    "unsupported": "unsupported_parameter",  # known to the API, not taken by this model
    "stream_single_image": "unsupported_parameter",  # n above 1 with stream=True
    "max_length": "string_above_max_length",
    "max_images": "array_above_max_length",
    "unknown_model": "model_not_found",
    "max_bytes": "image_too_large",
    "empty": "invalid_image",
    "malformed": "invalid_image",
    "square": "invalid_image",
    "alpha": "invalid_image",
    "dimensions": "invalid_image",
}
#: ``format`` of an image file is OpenAI's ``invalid_image_format``; of a value, ``invalid_value``.
_IMAGE_PARAMS = frozenset({"image", "mask", "image[]"})


def openai_code(rule: str | None, param: str | None = None) -> str:
    """The ``error.code`` OpenAI's API gives for a broken rule of ours (``invalid_value`` when
    it has no narrower one)."""
    if rule == "format" and param in _IMAGE_PARAMS:
        return "invalid_image_format"
    return _OPENAI_CODES.get(rule or "", "invalid_value")


def range_code(value: int, low: int) -> str:
    """OpenAI's code for an integer outside its range, by the side it fell off."""
    return "integer_below_min_value" if value < low else "integer_above_max_value"


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule: the parameter, a short rule name, and a sentence saying what to change."""

    param: str
    rule: str
    message: str
    #: the model does not take the parameter at all (``drop_params=True`` would drop it)
    unsupported: bool = False
    #: OpenAI's ``error.code`` when the rule alone does not tell it (a range's direction)
    openai_code: str | None = None

    @property
    def code(self) -> str:
        return self.openai_code or openai_code(self.rule, self.param)


class ValidationError(TrackingError, ValueError):
    """A parameter breaks a rule; raised before anything is sent upstream.

    ``param`` and ``rule`` describe the first broken rule; ``violations`` holds all of them.
    """

    error_type = "validation_error"
    status_code = 400

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        rule: str | None = None,
        violations: Sequence[Violation] = (),
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.param = param
        self.rule = rule
        self.violations: tuple[Violation, ...] = tuple(violations) or (
            (Violation(param, rule or "invalid", message, openai_code=code),) if param else ()
        )
        #: The first broken rule in OpenAI's ``error.code`` vocabulary.
        self.code = code or (
            self.violations[0].code if self.violations else openai_code(rule, param)
        )

    @classmethod
    def from_violations(cls, violations: Sequence[Violation]) -> ValidationError:
        """One error for every broken rule: unsupported-only calls get the narrower type."""
        first = violations[0]
        kind = UnsupportedParamsError if all(v.unsupported for v in violations) else ValidationError
        message = "; ".join(v.message for v in violations)
        return kind(
            message, param=first.param, rule=first.rule, violations=violations, code=first.code
        )


class UnsupportedParamsError(ValidationError):
    """A parameter the target model does not accept (``drop_params=True`` drops it instead)."""

    error_type = "unsupported_param"


class UnsupportedOperationError(ValidationError):
    """The provider cannot do this operation (an image generation on an edit-only provider);
    raised before anything is sent. A router tries the call's fallbacks instead."""

    error_type = "unsupported_operation"

    def __init__(self, message: str, *, operation: str, provider: str) -> None:
        super().__init__(
            message, param="model", rule="unsupported_operation", code="unsupported_operation"
        )
        self.operation = operation
        self.provider = provider


class APIError(TrackingError):
    """The exchange with the upstream failed."""

    error_type = "api_error"
    retryable = False
    #: Raised once the provider had accepted the call's job (FLUX's submit, then polls): the
    #: job is billed whatever followed, so it is never submitted again, on any deployment.
    job_submitted = False
    #: The usage a 2xx answer reported although it carried no usable image (Gemini's
    #: ``usageMetadata`` beside a safety block or a text-only answer): what the upstream billed
    #: for the call, which pricing takes as its cost. None: the answer reported none.
    billed_usage: Usage | None = None
    #: What a 2xx answer without a usable image said the upstream charged, in USD (xAI's
    #: ``cost_in_usd_ticks`` beside a ``block_reason``): the call's cost. None: it said nothing.
    billed_usd: Decimal | None = None
    #: Images a 2xx answer says were made, and so billed, although the call fails (Stability's
    #: ``CONTENT_FILTERED``: a successful generation whose output was blurred): pricing
    #: estimates the call at that many images, never as not billed. 0: none.
    billed_images: int = 0
    #: Grounding with Google Search a 2xx answer without a usable image ran for the call (a
    #: Gemini safety block after its searches): its fee is billed with ``billed_usage``.
    billed_grounding: SearchGrounding | None = None
    #: The HTTP status of the answer this error was read from, when the upstream answered (2xx)
    #: and its body said the call failed (a Gemini safety block): the upstream did the work,
    #: so pricing never takes such a call as not billed. None: no answer was read.
    answer_status: int | None = None
    #: Why the provider's own terms say the call was not charged (FLUX's moderated jobs:
    #: ``"moderated"``): pricing records it as not billed, with this reason in its
    #: ``price_ref`` (``failed-call:not-billed:moderated``). None: no such statement.
    not_billed_reason: str | None = None

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        param: str | None = None,
        code: str | None = None,
        upstream_request_id: str | None = None,
        retry_after: float | None = None,
        upstream_message: str | None = None,
        upstream_type: str | None = None,
    ) -> None:
        super().__init__(message)
        if status_code is not None:
            self.status_code = status_code
        self.upstream_message = upstream_message
        #: The upstream's own ``error.type`` (``image_generation_user_error``, ...), untouched.
        self.upstream_type = upstream_type
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


class StreamInterruptedError(APIConnectionError):
    """A streamed answer broke off (or ended) before its ``image_edit.completed`` event.

    Retried only while no event has been handed to the caller; after that the call ends with it.
    """

    error_type = "stream_interrupted"


class StreamClosed(TrackingError):
    """A streamed call's iterator was closed (or abandoned) by its caller before the completed
    event: the call's event records it, with an estimated cost. (A stream cancelled with its
    task records ``error_type="cancelled"`` and the ``CancelledError`` instead.)"""

    error_type = "stream_closed"


class APIResponseError(APIError):
    """The upstream answered with a success status but a body we cannot read, or a finished
    job whose result cannot be had (a FLUX result URL that answers 404 after it expired, or
    HTML instead of an image).

    Not retried: the upstream said it succeeded, so the edit was most likely made and billed, and
    a retry would pay for it twice.
    """

    error_type = "invalid_response"


class APIStatusError(APIError):
    """The upstream answered with a 4xx or 5xx status."""

    error_type = "api_status_error"


class BadRequestError(APIStatusError):
    error_type = "bad_request"
    status_code = 400


class ContentPolicyError(BadRequestError):
    """The upstream's safety system refused the prompt or an image (400, moderation code)."""

    error_type = "content_policy"


class AuthenticationError(APIStatusError):
    error_type = "authentication_error"
    status_code = 401


class PermissionDeniedError(APIStatusError):
    error_type = "permission_denied"
    status_code = 403


class NotFoundError(APIStatusError):
    error_type = "not_found"
    status_code = 404


class RequestTimeoutError(APIStatusError):
    """408: the upstream gave up waiting for the request; retried as the official client does."""

    error_type = "request_timeout"
    status_code = 408
    retryable = True


class ConflictError(APIStatusError):
    """409: a conflicting request was in progress upstream; retried as the official client does."""

    error_type = "conflict"
    status_code = 409
    retryable = True


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
    408: RequestTimeoutError,
    409: ConflictError,
    413: RequestTooLargeError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


#: ``error.code`` values with which OpenAI and Azure report a refusal by their safety system.
_CONTENT_POLICY_CODES = frozenset(
    {"content_policy_violation", "moderation_blocked", "content_filter", "safety_violation"}
)


def status_error_class(status: int, code: str | None = None) -> type[APIStatusError]:
    """The error class for an upstream HTTP status and error code (5xx share one class)."""
    if status >= 500:
        return InternalServerError
    if status == 400 and code in _CONTENT_POLICY_CODES:
        return ContentPolicyError
    return _BY_STATUS.get(status, APIStatusError)
