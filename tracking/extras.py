"""Which optional extra of ``image-edit-tracking`` installs a module, and how to say so.

Errors about a missing optional package name the extra that brings it (``uvicorn`` -> ``proxy``,
``sqlalchemy`` -> ``sql``...) rather than guessing, and say how to install an extra of this
project without claiming where the project is published: from a checkout,
``pip install -e '.[proxy]'``; from wherever it was installed from, the same extra in brackets.
"""

from __future__ import annotations

import importlib.util

__all__ = ["MODULE_EXTRAS", "extra_for", "install_hint", "missing_modules"]

#: Top-level module -> the extra that installs it (pyproject.toml's optional-dependencies).
MODULE_EXTRAS: dict[str, str] = {
    "uvicorn": "proxy",
    "httptools": "proxy",
    "uvloop": "proxy",
    "multipart": "proxy",
    "python_multipart": "proxy",
    "openai": "proxy",
    "sqlalchemy": "sql",
    "alembic": "sql",
    "psycopg": "postgres",
    "prometheus_client": "prometheus",
    "structlog": "structlog",
    "opentelemetry": "otel",
    "redis": "redis",
    "boto3": "s3",
    "botocore": "s3",
}


def extra_for(module: str | None, default: str | None = None) -> str | None:
    """The extra installing ``module`` (a dotted name counts by its top level)."""
    if not module:
        return default
    return MODULE_EXTRAS.get(module.partition(".")[0], default)


def install_hint(extra: str) -> str:
    """``install the 'proxy' extra (from a checkout: pip install -e '.[proxy]')``."""
    return (
        f"install the {extra!r} extra of image-edit-tracking "
        f"(from a checkout of it: pip install -e '.[{extra}]')"
    )


def missing_modules(*modules: str) -> list[str]:
    """The modules among ``modules`` that cannot be imported here."""
    missing = []
    for module in modules:
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(module)
    return missing
