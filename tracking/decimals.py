"""Decimals read from text the project did not write: prices, provider-reported costs, amounts.

Python's :class:`~decimal.Decimal` reads more than a number written for a machine: ``"1_0"``
is 10 (underscores group digits, as in Python source) and Arabic-Indic "10" is 10 too (any Unicode
digit). No price file, JSON answer or config value means either, so :func:`strict_decimal`
refuses them as :class:`~decimal.InvalidOperation`, which the callers already catch for text
that is no number at all. Every place that reads money from text goes through it.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

__all__ = ["strict_decimal"]


def strict_decimal(value: str | int | Decimal) -> Decimal:
    """``Decimal(value)``, refusing text with an underscore or a character outside ASCII."""
    if isinstance(value, str) and ("_" in value or not value.isascii()):
        raise InvalidOperation(f"{value[:40]!r} is not a number")
    return Decimal(value)
