"""LiteLLM's per-image ``model_info`` prices, read once for billing and for routing.

``output_cost_per_image`` is the price of one output image of any size and quality;
``output_cost_per_image_by_size`` prices a size (``"1024x1024"``: any quality) or a size at a
quality (``"1024x1024/high"``). :func:`model_info_per_image` turns them into a ``per_image``
table (quality -> size -> USD, :data:`~tracking.pricing.table.ANY` where either is not named):
the proxy registers it as the deployment's model's prices (:mod:`tracking.proxy.prices`), and
the router's ``cost-based-routing`` ranks a deployment by it (:func:`model_info_price`). Both
look a call up with :func:`~tracking.pricing.table.per_image_price`, so a call is ranked at the
price it is billed at.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from ..errors import ConfigurationError
from .table import ANY, per_image_price, to_price

__all__ = ["PER_IMAGE_KEYS", "model_info_per_image", "model_info_price"]

#: The ``model_info`` keys that price a deployment's images.
PER_IMAGE_KEYS = ("output_cost_per_image", "output_cost_per_image_by_size")


def model_info_per_image(info: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``info``'s per-image prices as a ``per_image`` table, the amounts as written (empty when
    it has none); the router checks their shapes and amounts when it loads a deployment."""
    table: dict[str, dict[str, Any]] = {}
    flat = info.get("output_cost_per_image")
    if flat is not None:
        table.setdefault(ANY, {})[ANY] = flat
    by_size = info.get("output_cost_per_image_by_size")
    if isinstance(by_size, Mapping):
        for shape, value in by_size.items():
            size, _, quality = str(shape).partition("/")
            table.setdefault(quality or ANY, {})[size] = value
    return table


def model_info_price(
    info: Mapping[str, Any], size: str | None, quality: str | None
) -> Decimal | None:
    """The price of one image of ``size`` at ``quality`` by ``info``'s per-image prices, as the
    calls are billed; None when they price no such image (or an amount cannot be read)."""
    try:
        table = {
            tier: {name: to_price(value, "model_info") for name, value in sizes.items()}
            for tier, sizes in model_info_per_image(info).items()
        }
    except ConfigurationError:
        return None
    return per_image_price(table, size, quality)
