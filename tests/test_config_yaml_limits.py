"""Config files within bounds: an alias bomb, a self-referencing alias, deep nesting or a huge file
is one clear ``ConfigurationError`` found before anything large is built (peak memory measured
with tracemalloc), while ordinary anchors, aliases and ``<<: *defaults`` merges still load."""

from __future__ import annotations

import subprocess
import tracemalloc
from pathlib import Path

import pytest
import yaml  # imported here so that its import is not part of any measured peak

from tracking.config import (
    MAX_CONFIG_BYTES,
    MAX_CONFIG_DEPTH,
    MAX_CONFIG_NODES,
    ProxyConfig,
    load_config,
)
from tracking.errors import ConfigurationError

from .proxy_support import tracking_command

MB = 1024 * 1024


def billion_laughs(levels: int = 9) -> str:
    """The classic bomb: each level lists the previous one nine times (9**levels strings)."""
    lines = ['lol0: &lol0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels):
        aliases = ", ".join([f"*lol{level - 1}"] * 9)
        lines.append(f"lol{level}: &lol{level} [{aliases}]")
    return "\n".join(lines) + "\n"


def merge_bomb(levels: int = 9) -> str:
    """The same with merge keys: each mapping merges the previous one nine times."""
    lines = ["m0: &m0 {a: 1, b: 2, c: 3}"]
    for level in range(1, levels):
        aliases = ", ".join([f"*m{level - 1}"] * 9)
        lines.append(f"m{level}: &m{level}\n  <<: [{aliases}]")
    return "\n".join(lines) + "\n"


def refused_with_peak(path: Path) -> tuple[str, int]:
    tracemalloc.start()
    try:
        with pytest.raises(ConfigurationError) as caught:
            load_config(path, environ={})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return caught.value.message, peak


@pytest.mark.parametrize("bomb", [billion_laughs, merge_bomb])
def test_an_alias_bomb_is_refused_before_it_is_built(tmp_path: Path, bomb) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb())
    message, peak = refused_with_peak(path)
    assert message.startswith(f"{path}: more than {MAX_CONFIG_NODES:,} YAML nodes once its ")
    assert "aliases are expanded (an alias bomb?); refused before building it (line " in message
    assert "\n" not in message
    assert peak < 5 * MB  # built, the billion laughs is 387,420,489 strings (gigabytes)


def test_a_bomb_is_refused_in_its_first_levels(tmp_path: Path) -> None:
    """The count stops at the first alias that passes the limit: the levels after it are
    never even composed, so the line named is early in the file."""
    path = tmp_path / "bomb.yaml"
    path.write_text(billion_laughs(levels=30))
    message, _ = refused_with_peak(path)
    # 74,739 nodes before line 6 (lol0 to lol4), and the first *lol4 on it stands for 66,430.
    assert message.endswith("(line 6, column 14)")


def test_ordinary_anchors_and_merge_keys_still_load(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "x-defaults: &defaults\n"
        "  api_key: os.environ/TEST_KEY\n"
        "  timeout: 60\n"
        "  max_retries: 2\n"
        "x-fallbacks: &fallbacks [edit-cheap]\n"
        "model_list:\n"
        "  - model_name: edit\n"
        "    litellm_params:\n"
        "      <<: *defaults\n"
        "      model: gpt-image-1\n"
        "  - model_name: edit-cheap\n"
        "    litellm_params:\n"
        "      <<: *defaults\n"
        "      model: gpt-image-1-mini\n"
        "      timeout: 30\n"
        "router_settings:\n"
        "  fallbacks: [{edit: *fallbacks}]\n"
    )
    config = load_config(path, environ={"TEST_KEY": "sk-test"})
    assert isinstance(config, ProxyConfig)
    first, second = config.model_list
    assert dict(first.litellm_params) == {
        "api_key": "sk-test",
        "timeout": 60,
        "max_retries": 2,
        "model": "gpt-image-1",
    }
    assert second.model == "gpt-image-1-mini"
    assert second.litellm_params["timeout"] == 30  # the mapping's own key wins over the merge
    assert second.litellm_params["api_key"] == "sk-test"
    assert config.router_settings["fallbacks"] == [{"edit": ["edit-cheap"]}]


def _aliased(copies: int) -> str:
    """A 1,000-node list (the list and 999 items) and a list of ``copies`` aliases to it."""
    items = ", ".join(["1"] * 999)
    aliases = ", ".join(["*d"] * copies)
    return f"d: &d [{items}]\ne: [{aliases}]\n"


def test_each_alias_counts_the_nodes_it_stands_for(tmp_path: Path) -> None:
    # Nodes: the top mapping, keys d and e, d's 1,000, e's list, then 1,000 per alias.
    fits = 98  # 1 + 1 + 1,000 + 1 + 1 + 98,000 = 99,004 nodes
    assert 4 + 1_000 * (fits + 1) <= MAX_CONFIG_NODES < 4 + 1_000 * (fits + 2)
    path = tmp_path / "config.yaml"
    path.write_text(_aliased(fits))
    assert load_config(path, environ={}).warnings == (
        "d: unknown key, ignored",
        "e: unknown key, ignored",
    )
    path.write_text(_aliased(fits + 1))  # 100,004 nodes
    message, _ = refused_with_peak(path)
    assert "more than 100,000 YAML nodes once its aliases are expanded" in message


def test_a_large_document_without_aliases_is_refused_without_mentioning_them(
    tmp_path: Path,
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("environment_variables:\n  X: [" + ", ".join(["1"] * MAX_CONFIG_NODES) + "]\n")
    # no memory tracing here (it made this test take up to two minutes on a busy machine)
    with pytest.raises(ConfigurationError) as caught:
        load_config(path, environ={})
    message = caught.value.message
    assert message.startswith(f"{path}: more than 100,000 YAML nodes; refused before building it")


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("model_list: &loop\n  - *loop\n")  # was a RecursionError traceback
    message, peak = refused_with_peak(path)
    assert message == f"{path}: alias *loop refers to a node that contains it (line 2, column 5)"
    assert peak < 1 * MB


def _nested(depth: int) -> str:
    return "x: " + "[" * depth + "1" + "]" * depth + "\n"


def test_nesting_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    # The top-level mapping is one level: its value may nest MAX_CONFIG_DEPTH - 1 lists.
    path.write_text(_nested(MAX_CONFIG_DEPTH - 1))
    assert load_config(path, environ={}).warnings == ("x: unknown key, ignored",)
    path.write_text(_nested(MAX_CONFIG_DEPTH))
    message, _ = refused_with_peak(path)
    assert message.startswith(f"{path}: nested more than 64 levels deep (line 1, column ")
    path.write_text(_nested(5_000))  # was a RecursionError traceback
    message, _ = refused_with_peak(path)
    assert "nested more than 64 levels deep" in message


def test_a_file_over_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    with path.open("wb") as file:
        file.write(b"model_list: []\n# ")
        file.truncate(MAX_CONFIG_BYTES + 1)  # sparse: large on paper, nothing to read
    message, peak = refused_with_peak(path)
    assert message == (
        f"{path}: larger than the 4,194,304 bytes a config file may be; refused without parsing it"
    )
    assert peak < 1 * MB


def test_a_file_just_within_the_size_limit_is_parsed(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    head = b"general_settings:\n  master_key: sk-master\n# "
    path.write_bytes(head + b"x" * (MAX_CONFIG_BYTES - len(head)))
    assert load_config(path, environ={}).general_settings.master_key == "sk-master"


def test_an_endless_device_is_read_only_up_to_the_limit() -> None:
    message, peak = refused_with_peak(Path("/dev/zero"))  # no size to check before reading
    assert message.startswith("/dev/zero: larger than the 4,194,304 bytes")
    assert peak < MAX_CONFIG_BYTES + 1 * MB


def test_the_loader_is_still_safe(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("model_list: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(ConfigurationError) as caught:
        load_config(path, environ={})
    assert "could not determine a constructor" in caught.value.message
    assert isinstance(yaml.safe_load("a: 1"), dict)  # the shared SafeLoader is unchanged


def test_tracking_serve_refuses_a_bomb_with_status_2_and_one_line(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(billion_laughs())
    result = subprocess.run(
        [*tracking_command(), "serve", "--config", str(path), "--port", "1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"tracking serve: {path}: more than 100,000 YAML nodes once its ")
    assert "(an alias bomb?)" in lines[0]
