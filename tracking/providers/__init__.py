"""Providers: one module each, chosen through a registry keyed by the model's provider prefix."""

from __future__ import annotations

import importlib
from typing import cast

from ..errors import ConfigurationError
from .base import PreparedRequest, Provider

__all__ = ["PreparedRequest", "Provider", "get_provider", "register_provider"]

#: name -> "module:attribute"; imported on first use so unused providers cost nothing.
_REGISTRY: dict[str, str] = {
    "openai": "tracking.providers.openai:OpenAIProvider",
}
_INSTANCES: dict[str, Provider] = {}


def register_provider(name: str, provider: Provider) -> None:
    """Add or replace a provider under ``name`` (used as ``name/model`` in ``model``)."""
    _INSTANCES[name] = provider


def get_provider(name: str) -> Provider:
    provider = _INSTANCES.get(name)
    if provider is not None:
        return provider
    target = _REGISTRY.get(name)
    if target is None:
        known = ", ".join(sorted(set(_REGISTRY) | set(_INSTANCES)))
        raise ConfigurationError(f"unknown provider {name!r}; known providers: {known}")
    module_name, _, attribute = target.partition(":")
    provider = cast(Provider, getattr(importlib.import_module(module_name), attribute)())
    _INSTANCES[name] = provider
    return provider
