"""Text from callers and providers as the command-line tables and CSV files show it."""

from __future__ import annotations

__all__ = ["FORMULA_STARTS", "shown", "spreadsheet_safe"]

#: What a spreadsheet reads a cell starting with as a formula (OWASP's CSV injection list).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def shown(key: str) -> str:
    """A group's name as a table shows it: an end-user id or a provider's model name may hold a
    line break, an escape sequence or nothing at all, which would forge or hide a row on a
    terminal; such a name is shown quoted, with escapes."""
    if key and key.isprintable():
        return key
    return repr(key)


def spreadsheet_safe(text: str) -> str:
    """A name from a caller or provider as a CSV cell: one a spreadsheet would run as a formula
    (an end user ``=HYPERLINK(...)``, say: it starts with one of :data:`FORMULA_STARTS`) gets a
    leading apostrophe, which spreadsheets show as text; any other is unchanged. (JSON output
    keeps every name as stored.)"""
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text
