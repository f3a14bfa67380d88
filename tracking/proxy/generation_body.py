"""Reading an ``/images/generations`` JSON body into the SDK's parameters.

The official clients send ``images.generate`` as a JSON object; :func:`read_generation` reads it
under the same size limit and deadline as an edit's upload (:func:`~tracking.proxy.form.read_body`)
and :func:`generation_params` turns it into the exact keyword arguments of
:func:`tracking.aimage_generation`, so a proxied generation takes the SDK's path. Every fault
of the body is an OpenAI-shaped 400 naming the field: not JSON, not an object, a key given
twice, ``NaN`` or ``Infinity``, nesting past a sane depth, a value of the wrong JSON type. Keys
this version does not know are sent upstream as they came (``extra_body``), as for edits.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from .client_metadata import take_metadata
from .errors import ProxyError
from .form import BOOL_FIELDS, INT_FIELDS, TEXT_FIELDS, read_body
from .json_io import load_json_object
from .limits import bounded_text, end_user_id

__all__ = ["generation_params", "read_field", "read_generation"]

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]

#: Short words the ledger records (bounded), as an edit's form has them; ``prompt`` is bounded by
#: the SDK (never stored) and ``user`` read by the end-user rule, as for edits.
_TEXT_FIELDS = TEXT_FIELDS - {"prompt", "user", "input_fidelity"}
_MAX_KEYS = 64  # more keys than any real generation has
_MAX_DEPTH = 32  # nesting deeper than this in an unknown key is not a real client


def _bad(message: str, param: str | None = None, code: str = "invalid_value") -> ProxyError:
    return ProxyError(400, message, param=param, code=code)


def _depth(value: Any, level: int = 0) -> int:
    if level > _MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level)
    return level


async def read_generation(
    receive: Receive,
    content_type: str,
    limit: int,
    within: float | None = None,
    received: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """The request's JSON body read whole (bounded as an edit's upload), as SDK parameters."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind != "application/json":
        raise ProxyError(
            400,
            "expected an application/json body (as the openai client sends images.generate)",
            code="invalid_content_type",
        )
    body = await read_body(receive, limit, within, received)
    return generation_params(load_json_object(body))


def read_field(params: dict[str, Any], name: str, value: Any, text_fields: frozenset[str]) -> bool:
    """Put one field of a JSON body that the form also has in ``params``, checked for its JSON
    type (a 400 naming it): an integer, a boolean, the ``prompt``, the ``user`` (the end-user id
    rule) or one of ``text_fields`` (short words the ledger records, bounded). False for a name
    that is none of these."""
    if name in INT_FIELDS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad(f"{name}: expected an integer", name, "invalid_type")
        params[name] = value
    elif name in BOOL_FIELDS:
        if not isinstance(value, bool):
            raise _bad(f"{name}: expected true or false", name, "invalid_type")
        params[name] = value
    elif name in ("prompt", "user") or name in text_fields:
        if not isinstance(value, str):
            raise _bad(f"{name}: expected a string", name, "invalid_type")
        if name == "user":  # the one end-user id rule; an empty one names nobody
            if (user := end_user_id(value)) is not None:
                params["user"] = user
        elif name == "prompt":  # never stored (only its length is): the SDK bounds it
            params[name] = value
        else:
            params[name] = bounded_text(value, name)
    else:
        return False
    return True


def generation_params(payload: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of ``tracking.aimage_generation`` that a JSON body spells."""
    if len(payload) > _MAX_KEYS:
        raise _bad(f"the JSON body has more than {_MAX_KEYS} keys", code="invalid_json")
    # prompt is always present, so a missing one is the SDK's clear 400, not a TypeError
    params: dict[str, Any] = {"prompt": None}
    extra_body: dict[str, Any] = {}
    for name, value in payload.items():
        if value is None:  # JSON null: not given, as the official clients mean it
            continue
        if read_field(params, name, value, _TEXT_FIELDS):
            continue
        if name in ("operation", "base_model", "image", "mask", "markup", "input_fidelity"):
            # our own call parameters and an edit's inputs are not a generation's JSON
            raise _bad(f"{name}: not a parameter of images.generate", name, "unknown_parameter")
        else:
            if _depth(value) > _MAX_DEPTH:
                raise _bad(f"{name}: nested too deeply", name, "invalid_json")
            extra_body[bounded_text(name, "field name")] = value
    if (metadata := take_metadata(extra_body)) is not None:
        params["metadata"] = metadata
    if extra_body:
        params["extra_body"] = extra_body
    return params
