"""Where and how a call is sent, checked before anything is sent: the API key, ``api_base``
and every header value.

An HTTP client handed a key with a trailing newline, a NUL or a non-ASCII character raises its
own exception quoting the whole header (key included), and httpx and aiohttp do not even agree
on which values they refuse; a URL with an out-of-range port, a broken IPv6 host or a ``ftp://``
scheme fails deep inside them with untyped errors, differently on the sync and async paths. So
the call path checks these itself and raises a
:class:`~tracking.errors.ConfigurationError` naming the setting (``api_key``, ``api_base``),
never echoing a key, before a byte is sent: the same error on both paths, and never retried.

Vertex AI's Google Cloud project and location (``vertex_project``, ``vertex_location``) are
written into the request's URL, the location into its host name
(``https://{location}-aiplatform.googleapis.com``, a multi-region's
``https://aiplatform.{location}.rep.googleapis.com``): :func:`check_vertex_place` holds them to
the shapes Google gives them (no ``/``, ``..``, spaces or URLs), for a call's parameters, a
deployment's and the environment's alike.

:func:`check_api_key` and :func:`check_api_base` check what the caller passed
(:func:`tracking.request.parse_call`); :func:`check_prepared` checks the request a provider
built, so keys and URLs read from environment variables are held to the same rules.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from .errors import ConfigurationError

__all__ = [
    "check_api_base",
    "check_api_key",
    "check_base_url",
    "check_prepared",
    "check_vertex_place",
    "check_vertex_setting",
    "header_value_problem",
    "is_header_name",
    "vertex_setting_problem",
]

#: What a key may hold: visible ASCII, as every provider's keys and tokens are. No spaces, no
#: control characters (a newline read from a file), nothing an HTTP header cannot carry.
_KEY = re.compile(r"[\x21-\x7e]+")
#: A header value both HTTP clients send unchanged: printable ASCII, spaces and tabs.
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")
#: A header name: an RFC 9110 token.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: What a URL may hold: printable ASCII without spaces, or any non-ASCII letter (an IDN host or
#: path, which both clients encode); never a control character or whitespace.
_URL_FORBIDDEN = re.compile(r"[\x00-\x20\x7f\s]")
#: A Google Cloud project: its ID (6 to 30 lowercase ASCII letters, digits or hyphens, a letter
#: first and no hyphen last: Google's ``gcloud projects create`` reference, read 2026-12-07),
#: optionally domain-scoped (``example.com:my-project``, labels of a host name), or its number.
_DNS_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_VERTEX_PROJECT = re.compile(
    rf"(?:{_DNS_LABEL}(?:\.{_DNS_LABEL})+:)?[a-z][a-z0-9-]{{4,28}}[a-z0-9]|[0-9]{{1,20}}"
)
#: A Google Cloud location: ``global``, or a region such as ``us-central1`` (lowercase letters,
#: digits and hyphens, a letter first; it becomes a label of the host name).
_VERTEX_LOCATION = re.compile(r"[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?")
_VERTEX_SHAPES = {
    "vertex_project": (
        _VERTEX_PROJECT,
        "a Google Cloud project ID (6 to 30 lowercase letters, digits and hyphens, a letter "
        "first: my-project-123) or project number",
    ),
    "vertex_location": (
        _VERTEX_LOCATION,
        "a Google Cloud location (lowercase letters, digits and hyphens: us-central1, "
        "europe-west4, global)",
    ),
}


def check_api_key(value: object) -> str | None:
    """The caller's ``api_key``: None (read from the environment), else a usable key."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigurationError(
            f"api_key: expected a string, got {type(value).__name__}", param="api_key"
        )
    problem = _key_problem(value)
    if problem:
        raise ConfigurationError(f"api_key: {problem}", param="api_key")
    return value


def _key_problem(key: str) -> str | None:
    if not key.strip():
        return "empty; pass the key, or leave api_key out to read it from the environment"
    if _KEY.fullmatch(key) is None:
        return (
            "the key holds characters an HTTP header cannot carry (whitespace, a line break, a "
            "control or non-ASCII character; keys are visible ASCII): check for a stray newline "
            "or a copy-paste accident"
        )
    return None


def check_api_base(value: object) -> str | None:
    """The caller's ``api_base``: None (the environment's, else the provider's default), else a
    non-blank string (the full URL is checked once the provider has built it)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigurationError(
            f"api_base: expected a URL string, got {type(value).__name__}", param="api_base"
        )
    if not value.strip():
        raise ConfigurationError(
            "api_base: empty; pass the upstream's URL, or leave api_base out (None) for the "
            "default",
            param="api_base",
        )
    return value


def check_base_url(value: object) -> str | None:
    """``api_base`` as a deployment gives it: :func:`check_api_base`, and the URL itself held
    to the rules every request's URL is (a plain http(s) URL with a host, no credentials)."""
    base = check_api_base(value)
    if base is not None:
        _check_url(base)
    return base


def vertex_setting_problem(name: str, value: object) -> str | None:
    """What makes ``value`` unfit as the Vertex AI setting ``name`` (``vertex_project`` or
    ``vertex_location``), or None: it is written into the request's URL, so only the shape
    Google gives it is taken (never a ``/``, ``..``, a space or a URL)."""
    pattern, shape = _VERTEX_SHAPES[name]
    value = _project_number(name, value)
    if not isinstance(value, str):
        return f"expected {shape}, got {type(value).__name__}"
    if pattern.fullmatch(value) is None:
        shown = value if len(value) <= 80 else value[:77] + "..."
        return f"expected {shape}, got {shown!r} (it is written into the request's URL)"
    return None


def check_vertex_setting(name: str, value: object, source: str = "") -> str | None:
    """The Vertex AI setting ``name``: None (not set), else a value of its shape
    (:func:`vertex_setting_problem`); a :class:`ConfigurationError` naming it (and ``source``,
    the environment variable it was read from) otherwise."""
    if value is None:
        return None
    value = _project_number(name, value)
    problem = vertex_setting_problem(name, value)
    if problem is None and isinstance(value, str):
        return value
    raise ConfigurationError(f"{name}: {problem}{source}", param=name)


def _project_number(name: str, value: object) -> object:
    """A project number YAML read as an integer (``vertex_project: 123456789012``), as text."""
    if name == "vertex_project" and type(value) is int and value >= 0:
        return str(value)
    return value


def check_vertex_place(
    provider: str, project: object, location: object
) -> tuple[str | None, str | None]:
    """A call's or a deployment's ``vertex_project`` and ``vertex_location``: each None or of
    its shape, and given only for a ``vertex_ai/`` model (no other provider is sent to a Google
    Cloud project: a ``gemini/`` model with a project is a mistake to say, not to ignore)."""
    checked = (
        check_vertex_setting("vertex_project", project),
        check_vertex_setting("vertex_location", location),
    )
    if provider != "vertex_ai":
        for name, value in zip(("vertex_project", "vertex_location"), checked, strict=True):
            if value is not None:
                raise ConfigurationError(
                    f"{name}: only a vertex_ai/ model is sent to a Google Cloud project and "
                    f"location; this model's provider is {provider}",
                    param=name,
                )
    return checked


def check_prepared(url: str, headers: Mapping[str, str], secrets: tuple[str, ...]) -> None:
    """Refuse a request no HTTP client can send as built: a URL that is not a plain http(s)
    URL, a header that carries a key no header can hold (from an environment variable), or a
    header value with a character a header cannot carry."""
    _check_url(url)
    for name, value in headers.items():
        if not isinstance(name, str) or not is_header_name(name):
            raise ConfigurationError(f"a header name is not an HTTP token: {name!r}")
        if not isinstance(value, str) or header_value_problem(value) is None:
            continue
        if any(secret and secret in value for secret in secrets):
            raise ConfigurationError(
                "api_key: the key (passed or read from the provider's environment variable) "
                "holds characters an HTTP header cannot carry (whitespace, a line break, a "
                "control or non-ASCII character; keys are visible ASCII)",
                param="api_key",
            )
        raise ConfigurationError(
            f"header {name}: {header_value_problem(value)}", param="extra_headers"
        )


def is_header_name(name: str) -> bool:
    """Whether ``name`` is a valid HTTP header name (an RFC 9110 token)."""
    return _TOKEN.fullmatch(name) is not None


def header_value_problem(value: str) -> str | None:
    """What makes ``value`` unfit for an HTTP header, or None when it is fit."""
    if _HEADER_VALUE.fullmatch(value) is not None:
        return None
    if "\r" in value or "\n" in value:
        return "line breaks are not allowed"
    return "only printable ASCII is allowed (no control or non-ASCII characters)"


@functools.lru_cache(maxsize=256)  # the same few upstream URLs, call after call
def _check_url(url: str) -> None:
    def refuse(problem: str) -> ConfigurationError:
        return ConfigurationError(f"api_base: {problem}", param="api_base")

    if _URL_FORBIDDEN.search(url):
        raise refuse("the URL holds whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port  # reading it checks it: a ValueError when out of range
    except ValueError as exc:
        raise refuse(f"not a valid URL ({exc})") from None
    if parts.scheme.lower() not in ("http", "https"):
        scheme = parts.scheme if parts.scheme.isascii() and parts.scheme.isalnum() else "?"
        raise refuse(f"not an http(s) URL (scheme {scheme!r})")
    if parts.username is not None or parts.password is not None:
        raise refuse(
            "a URL with a user name or password (user:pass@host) is not accepted: pass the key "
            "as api_key"
        )
    if not parts.hostname:
        raise refuse("the URL has no host")
    if port == 0:
        raise refuse("port 0 is not a usable port")
