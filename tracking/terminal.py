"""Text from callers and providers as the command-line tables show it."""

from __future__ import annotations

__all__ = ["shown"]


def shown(key: str) -> str:
    """A group's name as a table shows it: an end-user id or a provider's model name may hold a
    line break, an escape sequence or nothing at all, which would forge or hide a row on a
    terminal; such a name is shown quoted, with escapes."""
    if key and key.isprintable():
        return key
    return repr(key)
