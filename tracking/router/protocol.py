"""The route contract, re-exported for the router package (it lives in :mod:`tracking.targets`
so the call flow can use it without importing the router)."""

from ..targets import Route, Routing, Target

__all__ = ["Route", "Routing", "Target"]
