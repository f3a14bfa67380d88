"""LiteLLM's end-user headers: ``x-litellm-customer-id`` and ``x-litellm-end-user-id``, then the
config's own (``general_settings.user_header_mappings``' ``customer`` headers, else
``user_header_name``: :func:`tracking.config.end_user_header_names`).

LiteLLM's proxy reads a call's end user from these headers, in that order, before anything in
the body (docs.litellm.ai/docs/proxy/customers, "Make LLM API call w/ Customer ID": the two
standard headers "always checked", then a custom header via ``user_header_mappings``, then via
the deprecated ``user_header_name``; read 2026-12-07). A client written for it may name its end
users that way only; read nowhere, its calls were billed to no end user, and an end user's
budget or block did not hold for them. Here such a header names the call's end user as the
body's ``user`` does: it becomes the call's ``user`` (forwarded upstream as a body's is) unless
the body names the same end user already. Two names that differ (the two headers, or a header
and the body's ``user`` / ``safety_identifier``) are a 400 rather than one silently winning (in
LiteLLM the first found wins): the caller meant one end user, and billing or refusing the wrong
one cannot be undone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..request import end_user_of
from .auth import header_text, header_values
from .errors import ProxyError
from .limits import end_user_id

__all__ = ["END_USER_HEADERS", "take_end_user_headers"]

#: LiteLLM's end-user headers, in the order it reads them.
END_USER_HEADERS = ("x-litellm-customer-id", "x-litellm-end-user-id")


def take_end_user_headers(
    headers: Mapping[str, str], params: dict[str, Any], configured: tuple[str, ...] = ()
) -> None:
    """Make the end user an end-user header names the call's ``user`` (see the module's
    docstring; ``configured``: the config's own headers, lowercase, read after LiteLLM's); a 400
    when two names differ."""
    named = [
        (h, u)
        for h in (*END_USER_HEADERS, *configured)
        for u in dict.fromkeys(end_user_id(header_text(v), h) for v in header_values(headers, h))
        if u  # UTF-8 names as the body's; one header sent twice naming two users: two names
    ]
    if not named:
        return
    header, user = named[0]
    body_user, _ = end_user_of(params)
    for other, other_user in [*named[1:], ("the body's user or safety_identifier", body_user)]:
        if other_user is not None and other_user != user:
            raise ProxyError(
                400,
                f"{header} names end user {user!r} and {other} names {other_user!r}: name "
                "the call's end user once",
                param=header,
                code="invalid_value",
            )
    if body_user is None:
        params["user"] = user
