"""Malformed config files: whatever the document holds, reading it gives a valid config or one
``ConfigurationError`` with a clear message (never another exception, never a secret in the
message), and ``tracking serve`` exits with status 2 and no traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracking.config import ProxyConfig, load_config, parse_config
from tracking.errors import ConfigurationError

from .proxy_support import tracking_command

SECRET = "sk-planted-config-secret-0123456789"

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=20),
    st.sampled_from(["os.environ/", "os.environ/NOPE_NOT_SET", "http://x", SECRET, "sql"]),
)
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=8), scalars), inner, max_size=4),
    ),
    max_leaves=20,
)
known_keys = st.sampled_from(
    ["model_list", "litellm_settings", "router_settings", "general_settings",
     "environment_variables", "model_name", "litellm_params", "model", "api_key", "api_base",
     "timeout", "rpm", "max_request_size_mb", "master_key", "success_callback", "num_retries"]
)  # fmt: skip
# Documents built mostly from the keys the reader knows, so the checks deep inside are reached.
shaped = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(known_keys, inner, max_size=4)
    ),
    max_leaves=25,
)


def _read(document: Any) -> ProxyConfig | None:
    try:
        return parse_config(document, environ={"SET_VAR": SECRET})
    except ConfigurationError as exc:
        message = exc.message
    assert message.strip()
    assert SECRET not in message
    return None


@given(document=st.one_of(documents, shaped))
def test_any_document_is_a_config_or_one_configuration_error(document: Any) -> None:
    config = _read(document)
    if config is not None:
        assert config.general_settings.max_request_bytes > 0
        assert SECRET not in repr(config)


@given(
    model_list=st.lists(
        st.fixed_dictionaries(
            {
                "model_name": scalars,
                "litellm_params": st.dictionaries(known_keys, scalars, max_size=5),
            }
        ),
        max_size=3,
    ),
    general=st.dictionaries(known_keys, scalars, max_size=4),
)
def test_deployments_and_settings_of_any_value(model_list: Any, general: Any) -> None:
    config = _read({"model_list": model_list, "general_settings": general})
    if config is not None:
        for deployment in config.model_list:
            assert isinstance(deployment.model, str) and deployment.model


BAD_FILES: dict[str, bytes] = {
    "invalid UTF-8": b"model_list:\n  - model_name: \xff\xfe\n",
    "a tab in the indentation": b"model_list:\n\t- model_name: m\n",
    "an unclosed bracket": b"model_list: [\n",
    "a top-level list": b"- a\n- b\n",
    "a scalar": b"just text\n",
    "model_list is a mapping": b"model_list:\n  model_name: m\n",
    "a python tag": b"model_list: !!python/object/apply:os.system ['true']\n",
    "a NUL byte": b"model_list: [\x00]\n",
    "an unset variable": (
        b"model_list:\n  - model_name: m\n    litellm_params:\n      model: gpt-image-1\n"
        b"      api_key: os.environ/TRACKING_TEST_UNSET_VAR\n"
    ),
    "a negative size limit": b"general_settings:\n  max_request_size_mb: -5\n",
    "an infinite timeout": (
        b"model_list:\n  - model_name: m\n    litellm_params:\n      model: gpt-image-1\n"
        b"      timeout: .inf\n"
    ),
    "a secret in a bad field": (
        b"model_list:\n  - model_name: m\n    litellm_params:\n      model: gpt-image-1\n"
        b"      api_base: " + SECRET.encode() + b"\n"
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_malformed_files_are_one_clear_configuration_error(tmp_path: Path, case: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_bytes(BAD_FILES[case])
    with pytest.raises(ConfigurationError) as caught:
        load_config(path)
    assert caught.value.message.strip()
    assert SECRET not in caught.value.message


def test_unreadable_paths_are_configuration_errors(tmp_path: Path) -> None:
    for path in (tmp_path / "missing.yaml", tmp_path):
        with pytest.raises(ConfigurationError):
            load_config(path)


def test_tracking_serve_refuses_malformed_files_with_status_2_and_no_traceback(tmp_path: Path):
    for case in ("invalid UTF-8", "a python tag", "a secret in a bad field"):
        path = tmp_path / "config.yaml"
        path.write_bytes(BAD_FILES[case])
        result = subprocess.run(
            [*tracking_command(), "serve", "--config", str(path), "--port", "1"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 2, (case, result.stderr)
        assert "Traceback" not in result.stderr, case
        assert result.stderr.startswith("tracking serve: "), case
        assert SECRET not in result.stderr + result.stdout, case
