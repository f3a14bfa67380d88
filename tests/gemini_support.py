"""Constants the Gemini and Vertex AI tests share, and the ``vertex`` fixture of
``tests/conftest.py`` reads: kept in a support module so that no fixture imports a test module."""

from __future__ import annotations

import pytest

#: the key the Gemini tests' fake upstreams accept (and the ``vertex`` fixture's access token)
GEMINI_KEY = "AIzaFakeGeminiKey0123456789abcdef"

#: the Vertex AI tests' access token (their fake upstream's key), model and settings
VERTEX_TOKEN = "ya29.fake-vertex-access-token"
VERTEX_MODEL = "vertex_ai/gemini-3.1-flash-image"
#: every environment variable the ``vertex_ai`` provider reads
VERTEX_VARIABLES = (
    "VERTEXAI_PROJECT",
    "GOOGLE_CLOUD_PROJECT",
    "VERTEXAI_LOCATION",
    "GOOGLE_CLOUD_LOCATION",
    "VERTEX_ACCESS_TOKEN",
)


def vertex_path(project: str, location: str, model: str = "gemini-3.1-flash-image") -> str:
    """The path of a Vertex AI ``generateContent`` request for ``project`` and ``location``."""
    where = f"/v1/projects/{project}/locations/{location}"
    return f"{where}/publishers/google/models/{model}:generateContent"


def without_vertex_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Vertex AI setting left in the environment (for the test)."""
    for name in VERTEX_VARIABLES:
        monkeypatch.delenv(name, raising=False)
