"""The proxy's OpenAPI 3.1 document (``/openapi.json``) and a self-contained page (``/docs``).

The document is built from the app's own route table, plus the routes it finds by their path's
prefix (:data:`MODEL_PATHS`, :data:`STORED_PATH`), so every route the proxy serves is in it:
each route's description comes from :data:`OPERATIONS` (a test checks none is missing). The
``/docs`` page is plain HTML rendered here from the same document, with no script and nothing
fetched from elsewhere, so it works on a machine without internet access.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping
from typing import Any

from .accounts import CUSTOMER_PREFIX, END_USER_PREFIX
from .image_store import MAX_EXPIRES, STORED_PREFIX
from .limits import MAX_PAGE, MAX_PAGE_SIZE
from .litellm_routes import REPORT_PARAMETERS
from .spend_routes import LOGS_PARAMETERS

__all__ = [
    "AZURE_PATHS",
    "MODEL_PATHS",
    "OPERATIONS",
    "STORED_PATH",
    "docs_page",
    "openapi_document",
]

_ERROR = {"$ref": "#/components/schemas/Error"}
_JSON_OBJECT = {"type": "object", "additionalProperties": True}


def _json(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": dict(schema)}}


def _answers(ok: str, *errors: int, ok_schema: Mapping[str, Any] = _JSON_OBJECT) -> dict[str, Any]:
    answers: dict[str, Any] = {"200": {"description": ok, "content": _json(ok_schema)}}
    for status in errors:
        answers[str(status)] = {"description": _STATUS_TEXT[status], "content": _json(_ERROR)}
    return answers


_STATUS_TEXT = {
    400: "A parameter breaks a rule (`param` names it)",
    401: "Missing or wrong key",
    403: "The key may not do this (or the end user is blocked)",
    404: "Unknown model or record",
    405: "Method not allowed on this path (see `Allow`)",
    408: "The body did not arrive in time",
    413: "The body is too large",
    429: "A rate limit or a budget (see `x-should-retry` and `Retry-After`)",
    502: "The upstream failed (after the proxy's own retries)",
    503: "Not ready, or the database is unavailable",
    504: "The upstream did not answer in time",
}


def _whole(high: int, default: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": 1, "maximum": high, "default": default}


_DATE = {"type": "string", "anyOf": [{"format": "date"}, {"format": "date-time"}]}
#: Each query parameter's type as its route reads it (:func:`~.limits.query_int`'s whole
#: numbers, :func:`~.json_io.optional_date`'s dates, ``return_full_object=true``); a name not
#: here is a string.
_QUERY_SCHEMAS: dict[str, dict[str, Any]] = {
    "page": _whole(MAX_PAGE, 1),
    "page_size": _whole(MAX_PAGE_SIZE, 100),
    "size": _whole(MAX_PAGE_SIZE, 10),
    "limit": _whole(MAX_PAGE_SIZE, 100),
    "start_date": _DATE,
    "end_date": _DATE,
    "return_full_object": {"type": "boolean", "default": False},
    # a stored image's URL: a Unix time as the proxy writes it, and an HMAC-SHA256 in hex
    "expires": {"type": "integer", "minimum": 1, "maximum": MAX_EXPIRES},
    "signature": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
    # a spend filter's key, by its SHA-256 digest (a secret in a URL is refused)
    "api_key": {
        "type": "string",
        "pattern": "^[0-9a-fA-F]{64}$",
        "description": "A virtual key's SHA-256 hex digest (LiteLLM's name; never the key)",
    },
    "api_key_hash": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"},
}


def _query(*names: str) -> list[dict[str, Any]]:
    return [
        {
            "name": name,
            "in": "query",
            "required": False,
            "schema": dict(_QUERY_SCHEMAS.get(name, {"type": "string"})),
        }
        for name in names
    ]


def _path_name(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}


#: The routes whose path holds a name (the app finds them by prefix, not in its route table).
MODEL_PATHS = ("/v1/models/{model}", "/models/{model}")
STORED_PATH = f"{STORED_PREFIX}{{name}}"
#: LiteLLM's Azure-compatible image routes (an ``AzureOpenAI`` client's): the deployment is the
#: model; ``api-version`` is accepted and ignored.
AZURE_PATHS = (
    "/openai/deployments/{deployment}/images/edits",
    "/openai/deployments/{deployment}/images/generations",
)


_EDIT_FIELDS: dict[str, Any] = {
    "image": {
        "description": "One image, or several as repeated `image[]` parts",
        "type": "string",
        "format": "binary",
    },
    "prompt": {"type": "string"},
    "model": {"type": "string", "description": "A model name from GET /v1/models"},
    "mask": {"type": "string", "format": "binary"},
    "markup": {
        "description": "A transparent PNG of the first image's size drawn over it to guide the "
        "edit (GPT Image 2.5 and 2.6; never with mask)",
        "type": "string",
        "format": "binary",
    },
    "n": {"type": "integer"},
    "size": {"type": "string"},
    "quality": {"type": "string"},
    "background": {"type": "string"},
    "output_format": {"type": "string"},
    "output_compression": {"type": "integer"},
    "input_fidelity": {"type": "string"},
    "moderation": {"type": "string", "enum": ["low", "auto"]},
    "response_format": {"type": "string"},
    "safety_identifier": {"type": "string", "description": "The end user (wins over user)"},
    "user": {"type": "string", "description": "The end user (deprecated by OpenAI)"},
}
_EDIT_FORM = {"type": "object", "required": ["image", "prompt"], "properties": _EDIT_FIELDS}
#: OpenAI's ImageRefParam: exactly one of ``image_url`` and ``file_id``.
_IMAGE_REF = {
    "type": "object",
    "description": "An http(s) URL or base64 data: URL (image_url), or an uploaded file's id "
    "(file_id): exactly one. data: URLs are decoded by the proxy and work for every provider; "
    "URLs and file ids are passed on unchanged (never fetched), so only to deployments of "
    "OpenAI, Azure and OpenAI-compatible servers",
    "properties": {"image_url": {"type": "string"}, "file_id": {"type": "string"}},
    "additionalProperties": False,
    "minProperties": 1,
    "maxProperties": 1,
}
#: OpenAI's JSON edit body (EditImageBodyJsonParam): the form's fields as JSON values, the
#: images as references.
_EDIT_JSON = {
    "type": "object",
    "required": ["images", "prompt"],
    "additionalProperties": False,
    "properties": {
        "images": {"type": "array", "items": _IMAGE_REF, "minItems": 1, "maxItems": 16},
        "mask": _IMAGE_REF,
        "markup": _IMAGE_REF,
        **{k: v for k, v in _EDIT_FIELDS.items() if k not in ("image", "mask", "markup")},
        "stream": {"type": "boolean"},
        "partial_images": {"type": "integer"},
        "metadata": {"type": "object", "description": "Recorded with the call, never sent on"},
    },
}
_EDIT = {
    "summary": "Edit images (OpenAI's images.edit), tracked and billed",
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {"schema": _EDIT_FORM},
            "application/json": {"schema": _EDIT_JSON},
        },
    },
    "responses": _answers(
        "The upstream's JSON, byte for byte",
        400,
        401,
        403,
        404,
        408,
        413,
        429,
        502,
        504,
    ),
}
_EDIT_ONLY = frozenset({"image", "mask", "markup", "input_fidelity"})
_GENERATION_BODY = {
    "type": "object",
    "required": ["prompt"],
    "properties": {
        **{k: v for k, v in _EDIT_FIELDS.items() if k not in _EDIT_ONLY},
        "stream": {"type": "boolean"},
        "partial_images": {"type": "integer"},
    },
}
_GENERATION = {
    "summary": "Generate images (OpenAI's images.generate), tracked and billed",
    "requestBody": {"required": True, "content": _json(_GENERATION_BODY)},
    "responses": _EDIT["responses"],
}
_MODELS = {
    "summary": "The model names this proxy serves",
    "responses": _answers("A list of models", 401),
}
_HEALTH = {"summary": "Liveness", "security": [], "responses": _answers("Alive")}
# Any other field is a 400 ``unsupported_field`` (json_io.known_fields): never dropped.
_USER_IDS_BODY = {
    "type": "object",
    "properties": {"user_ids": {"type": "array", "items": {"type": "string"}}},
    "required": ["user_ids"],
    "additionalProperties": False,
}
_KEY_BODY = {
    "type": "object",
    "properties": {
        "models": {"type": "array", "items": {"type": "string"}},
        "key_alias": {"type": "string"},
        "team": {"type": "string"},
        "team_id": {"type": "string"},
        "max_budget": {"type": ["number", "string"]},
        "rpm_limit": {"type": "integer"},
        "duration": {"type": "string"},
        "expires": {"type": "string", "format": "date-time"},
    },
    "additionalProperties": False,
}
_CUSTOMER_BODY = {
    "type": "object",
    "properties": {
        "user_id": {"type": "string"},
        "end_user_id": {"type": "string"},
        "max_budget": {"type": ["number", "string"]},
        "budget_period": {"type": "string", "enum": ["daily", "monthly", "total"]},
        "blocked": {"type": "boolean"},
    },
    "additionalProperties": False,
}


def _json_body(schema: Mapping[str, Any]) -> dict[str, Any]:
    return {"required": False, "content": _json(schema)}


_MODEL = {
    "summary": "One model the config lists (client.models.retrieve)",
    "parameters": [_path_name("model")],
    "responses": _answers("The model", 401, 404),
}

_MODEL_INFO = {
    "summary": "Each deployment's parameters (no secret) and prices (LiteLLM's shape)",
    "parameters": _query("litellm_model_id"),
    "responses": _answers("The deployments", 400, 401),
}

#: Each route's OpenAPI operation, by path (every method of a path shares it).
OPERATIONS: dict[str, dict[str, Any]] = {
    "/v1/images/edits": _EDIT,
    "/images/edits": _EDIT,
    "/v1/images/generations": _GENERATION,
    "/images/generations": _GENERATION,
    "/v1/models": _MODELS,
    "/models": _MODELS,
    MODEL_PATHS[0]: _MODEL,
    MODEL_PATHS[1]: _MODEL,
    AZURE_PATHS[0]: {
        **_EDIT,
        "summary": "Edit images, Azure-style: the deployment is the model (as LiteLLM serves it)",
        "parameters": [_path_name("deployment"), *_query("api-version")],
    },
    AZURE_PATHS[1]: {
        **_GENERATION,
        "summary": "Generate images, Azure-style: the deployment is the model (as LiteLLM)",
        "parameters": [_path_name("deployment"), *_query("api-version")],
    },
    STORED_PATH: {
        "summary": "An image a URL answer named (no key: the URL's signature is its credential)",
        "security": [],
        "parameters": [_path_name("name"), *_query("expires", "signature")],
        "responses": {
            "200": {"description": "The image's bytes", "content": {"image/*": {}}},
            "403": {"description": "A changed or expired URL", "content": _json(_ERROR)},
            "404": {"description": "No such image", "content": _json(_ERROR)},
            "503": {"description": "The image store cannot be read", "content": _json(_ERROR)},
        },
    },
    "/health/liveliness": _HEALTH,
    "/health/liveness": _HEALTH,
    "/health/readiness": {
        "summary": "Readiness: whether the ledger's database answers",
        "security": [],
        "responses": _answers("Ready", 503),
    },
    "/metrics": {
        "summary": "Prometheus metrics",
        "security": [],
        "responses": {
            "200": {"description": "The exposition", "content": {"text/plain": {}}},
            "401": {"description": _STATUS_TEXT[401], "content": _json(_ERROR)},
            "503": {"description": _STATUS_TEXT[503], "content": _json(_ERROR)},
        },
    },
    "/key/generate": {
        "summary": "Create a virtual key (master key only)",
        "requestBody": _json_body(_KEY_BODY),
        "responses": _answers("The new key, shown once", 400, 401, 403, 413),
    },
    "/key/info": {
        "summary": "A key's settings and spend",
        "parameters": _query("key_hash", "key"),
        "responses": _answers("The key's record", 400, 401, 403, 404),
    },
    "/key/delete": {
        "summary": "Delete virtual keys (master key only)",
        "requestBody": _json_body(
            {
                "type": "object",
                "properties": {
                    "keys": {"type": "array", "items": {"type": "string"}},
                    "key_hashes": {"type": "array", "items": {"type": "string"}},
                },
                "additionalProperties": False,
            }
        ),
        "responses": _answers("The keys deleted", 400, 401, 403, 413),
    },
    "/customer/new": {
        "summary": "Create an end user with a budget (master key only)",
        "requestBody": _json_body(_CUSTOMER_BODY),
        "responses": _answers("The end user", 400, 401, 403, 413),
    },
    "/customer/update": {
        "summary": "Change an end user's budget or blocked flag; one known from their calls "
        "alone gets a record (master key only)",
        "requestBody": _json_body(_CUSTOMER_BODY),
        "responses": _answers("The end user", 400, 401, 403, 404, 413),
    },
    "/customer/info": {
        "summary": "An end user's budget and spend (one with a record, or who called since their "
        "last deletion)",
        "parameters": _query("end_user_id"),
        "responses": _answers("The end user", 400, 401, 403, 404),
    },
    "/spend/logs": {
        "summary": "The ledger's rows, newest first",
        "parameters": _query(*LOGS_PARAMETERS),
        "responses": _answers("A page of rows", 400, 401, 503),
    },
    "/spend/keys": {
        "summary": "Spend per key",
        "parameters": _query("page", "page_size"),
        "responses": _answers("Keys with their spend", 400, 401, 503),
    },
    "/health": {
        "summary": "Configuration health: each deployment's request is built, none is sent",
        "responses": _answers("Healthy and unhealthy deployments", 401, 403),
    },
    "/key/list": {
        "summary": "Virtual keys, a page at a time (master key only; LiteLLM's shape)",
        "parameters": _query("page", "size", "key_alias", "team_id", "return_full_object"),
        "responses": _answers("A page of keys", 400, 401, 403),
    },
    "/key/update": {
        "summary": "Change a key's alias, models, budget or limits (master key only)",
        "requestBody": _json_body(_KEY_BODY),
        "responses": _answers("The key's record", 400, 401, 403, 404, 413),
    },
    "/key/regenerate": {
        "summary": "A new secret for a key, its settings kept (master key only)",
        "requestBody": _json_body(_JSON_OBJECT),
        "responses": _answers("The new key, shown once", 400, 401, 403, 404, 413),
    },
    "/customer/list": {
        "summary": "End users with a record, and those who called since their last deletion, a "
        "page at a time by id (master key only)",
        "parameters": _query("page", "size"),
        "responses": _answers("A page of end users", 400, 401, 403),
    },
    "/customer/delete": {
        "summary": "Delete end users, remembered: their calls until then no longer make them "
        "known nor count in their spend or budget, made again or not (master key only)",
        "requestBody": _json_body(_USER_IDS_BODY),
        "responses": _answers("How many were deleted", 400, 401, 403, 413),
    },
    "/customer/block": {
        "summary": "Block end users (master key only)",
        "requestBody": _json_body(_USER_IDS_BODY),
        "responses": _answers("The end users blocked", 400, 401, 403, 413),
    },
    "/customer/unblock": {
        "summary": "Unblock end users (master key only)",
        "requestBody": _json_body(_USER_IDS_BODY),
        "responses": _answers("The end users unblocked", 400, 401, 403, 413),
    },
    "/global/spend": {
        "summary": "Total spend from the ledger (master key only)",
        "parameters": _query("start_date", "end_date"),
        "responses": _answers("The total", 401, 403, 503),
    },
    "/global/spend/keys": {
        "summary": "Spend per key (master key only)",
        "parameters": _query("start_date", "end_date", "limit"),
        "responses": _answers("Keys with their spend", 400, 401, 403, 503),
    },
    "/global/spend/models": {
        "summary": "Spend per model (master key only)",
        "parameters": _query("start_date", "end_date", "limit"),
        "responses": _answers("Models with their spend", 400, 401, 403, 503),
    },
    "/global/spend/end_users": {
        "summary": "Spend per end user (master key only)",
        "parameters": _query("start_date", "end_date", "limit"),
        "responses": _answers("End users with their spend", 400, 401, 403, 503),
    },
    "/global/spend/teams": {
        "summary": "Spend per team (master key only)",
        "parameters": _query("start_date", "end_date", "limit"),
        "responses": _answers("Teams with their spend", 400, 401, 403, 503),
    },
    "/global/spend/report": {
        "summary": "Spend per day by team or customer, or per key (master key only)",
        "parameters": _query("start_date", "end_date", *REPORT_PARAMETERS),
        "responses": _answers("Daily spend", 400, 401, 403, 503),
    },
    "/global/spend/tags": {
        "summary": "Spend per request tag, as {spend_per_tag: [...]} (master key only)",
        "parameters": _query("start_date", "end_date", "tags", "limit"),
        "responses": _answers("Tags with their spend", 400, 401, 403, 503),
    },
    "/spend/tags": {
        "summary": "Spend per request tag (master key only)",
        "parameters": _query("start_date", "end_date", "limit"),
        "responses": _answers("Tags with their spend", 400, 401, 403, 503),
    },
    "/model/info": _MODEL_INFO,
    "/v1/model/info": _MODEL_INFO,
    "/model_group/info": {
        "summary": "Each model name's providers, limits and dearest prices (LiteLLM's shape)",
        "parameters": _query("model_group"),
        "responses": _answers("The model groups", 400, 401),
    },
    "/openapi.json": {
        "summary": "This document",
        "security": [],
        "responses": _answers("OpenAPI 3.1"),
    },
    "/docs": {
        "summary": "This document as a page",
        "security": [],
        "responses": {"200": {"description": "HTML", "content": {"text/html": {}}}},
    },
}
# LiteLLM's older names of the /customer/* routes, served alike (accounts.end_user_aliases)
OPERATIONS.update(
    {
        END_USER_PREFIX + path.removeprefix(CUSTOMER_PREFIX): {
            **operation,
            "summary": f"{operation['summary']}; LiteLLM's older name of {path}",
            "deprecated": True,
        }
        for path, operation in list(OPERATIONS.items())
        if path.startswith(CUSTOMER_PREFIX)
    }
)


def openapi_document(routes: Iterable[tuple[str, str]], version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes`` (``(method, path)`` pairs)."""
    paths: dict[str, dict[str, Any]] = {}
    for method, path in sorted(routes, key=lambda route: (route[1], route[0])):
        operation = OPERATIONS.get(path, {"summary": path, "responses": _answers("OK")})
        entry = dict(operation)
        entry["operationId"] = f"{method.lower()}_{path.strip('/').replace('/', '_') or 'root'}"
        paths.setdefault(path, {})[method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "image-edit-tracking proxy",
            "version": version,
            "description": (
                "An OpenAI-compatible proxy for image edits that prices, records and budgets "
                "every call. Errors are OpenAI-shaped; every answer carries `x-request-id` "
                "(the ledger's row id) and `x-should-retry`."
            ),
        },
        "paths": paths,
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["message", "type", "param", "code"],
                            "properties": {
                                "message": {"type": "string"},
                                "type": {"type": "string"},
                                "param": {"type": ["string", "null"]},
                                "code": {"type": ["string", "null"]},
                            },
                        }
                    },
                }
            },
        },
    }


def docs_page(document: Mapping[str, Any]) -> bytes:
    """A readable HTML page of ``document``: every path, method, parameter and answer."""
    esc = html.escape
    rows: list[str] = []
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            rows.append(
                f"<section><h2><code>{esc(method.upper())} {esc(path)}</code></h2>"
                f"<p>{esc(operation.get('summary', ''))}</p>"
            )
            parameters = operation.get("parameters") or []
            if parameters:
                names = ", ".join(f"<code>{esc(p['name'])}</code>" for p in parameters)
                rows.append(f"<p>Query: {names}</p>")
            body = operation.get("requestBody")
            if body:
                for media, spec in body["content"].items():
                    fields = spec.get("schema", {}).get("properties", {})
                    listed = ", ".join(f"<code>{esc(name)}</code>" for name in fields)
                    rows.append(f"<p>Body ({esc(media)}): {listed}</p>")
            answers = ", ".join(
                f"{esc(status)} {esc(answer.get('description', ''))}"
                for status, answer in operation["responses"].items()
            )
            rows.append(f"<p>Answers: {answers}</p></section>")
    info = document["info"]
    spec = esc(json.dumps(document, indent=1))
    page = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{esc(info['title'])}</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;"
        "padding:0 1em}h2{font-size:1.1em;margin-bottom:.2em}section{border-top:1px solid #ddd}"
        "pre{background:#f6f6f6;padding:1em;overflow:auto}</style></head><body>"
        f"<h1>{esc(info['title'])} {esc(info['version'])}</h1><p>{esc(info['description'])}</p>"
        '<p>Machine-readable: <a href="/openapi.json">/openapi.json</a></p>'
        + "".join(rows)
        + f"<details><summary>The OpenAPI document</summary><pre>{spec}</pre></details>"
        "</body></html>"
    )
    return page.encode()
