"""Decimals read from text the project did not write: prices, provider-reported costs, amounts.

Python's :class:`~decimal.Decimal` reads more than a number written for a machine: ``"1_0"``
is 10 (underscores group digits, as in Python source) and Arabic-Indic "10" is 10 too (any Unicode
digit). No price file, JSON answer or config value means either, so :func:`strict_decimal`
refuses them as :class:`~decimal.InvalidOperation`, which the callers already catch for text
that is no number at all. Every place that reads money from text goes through it.

A number a JSON body or ``config.yaml`` writes with a fraction or an exponent is parsed as a
:class:`WrittenFloat`: a float everywhere a float is expected (timeouts, sizes in MB), which
also keeps the text it was written as, so that money read from it (:func:`written_decimal`) is
the amount written, never the nearest binary float (``999999999.9999999999`` is not
1000000000.0, and ``0.0000000123456789012345`` keeps its 15 significant digits).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

__all__ = [
    "MAX_BUDGET_PLACES",
    "MAX_BUDGET_USD",
    "WrittenFloat",
    "budget_fault",
    "strict_decimal",
    "written_decimal",
]

#: Budgets in USD: below ``NUMERIC(20, 10)``'s 1e10, and small enough for 64-bit counters.
MAX_BUDGET_USD = Decimal(1_000_000_000)
#: Decimal places a budget may carry (the column's scale).
MAX_BUDGET_PLACES = 10


def strict_decimal(value: str | int | Decimal) -> Decimal:
    """``Decimal(value)``, refusing text with an underscore or a character outside ASCII."""
    if isinstance(value, str) and ("_" in value or not value.isascii()):
        raise InvalidOperation(f"{value[:40]!r} is not a number")
    return Decimal(value)


class WrittenFloat(float):
    """A number written with a fraction or an exponent: the float, and the text it was written
    as (a decimal numeral, as :class:`~decimal.Decimal` reads it).

    :func:`written_decimal` reads an amount from that text, so ``999999999.9999999999`` is that
    many dollars, never the nearest binary float (1000000000: until 2026-12-07 a management
    route's amount, and a config's ``max_budget`` or price, went through one). ``value`` is the
    float when the parser made it otherwise than ``float(text)`` would (YAML's base-60
    ``1:30.5``); a text too large for a float is an infinite float with its finite text."""

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str, value: float | None = None) -> WrittenFloat:
        number = super().__new__(cls, text if value is None else value)
        number.text = text
        return number

    def __reduce__(self) -> tuple[type[WrittenFloat], tuple[str, float]]:
        return (WrittenFloat, (self.text, float(self)))


def written_decimal(value: str | int | float | Decimal) -> Decimal:
    """The exact amount of a number as it was written: a :class:`WrittenFloat`'s text, another
    float's shortest repr (``5e-06`` is 0.000005, not its binary value), text or an int by
    :func:`strict_decimal`. Raises :class:`~decimal.InvalidOperation` for text that is no number
    (``nan`` and ``inf`` are read: the caller refuses what is not finite)."""
    if isinstance(value, WrittenFloat):
        return strict_decimal(value.text)
    if isinstance(value, float):
        return Decimal(repr(value))
    return strict_decimal(value)


def budget_fault(amount: Decimal) -> str | None:
    """Why ``amount`` cannot be a budget (a key's, an end user's, the whole proxy's), or None:
    it must be finite, from 0 to :data:`MAX_BUDGET_USD`, with at most
    :data:`MAX_BUDGET_PLACES` decimal places."""
    if not amount.is_finite() or amount < 0 or amount > MAX_BUDGET_USD:
        return f"must be a finite amount from 0 to {MAX_BUDGET_USD} USD"
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -MAX_BUDGET_PLACES:
        return f"at most {MAX_BUDGET_PLACES} decimal places"
    return None
