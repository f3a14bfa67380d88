"""The proxy: an OpenAI-compatible ``/v1/images/edits`` server in front of the SDK's call path.

``tracking serve --config config.yaml`` runs it (see :mod:`tracking.proxy.server`);
:func:`create_app` builds the ASGI app for a validated :class:`~tracking.config.ProxyConfig`,
for embedding or tests. Nothing here is imported by ``import tracking``.
"""

from __future__ import annotations

from .app import ProxyApp, create_app
from .server import serve

__all__ = ["ProxyApp", "create_app", "serve"]
