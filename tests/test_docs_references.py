"""What the docs name in the code exists: module paths, their names, dotted names, commands.

The architecture pages name modules (``tracking/proxy/answer_cost.py``), names in them
(``tracking/proxy/app.py:_settle_ended``, ``_gate.py:SchemaGate``: a bare file name is one of the
package's files) and dotted names (``tracking.pricing.prices_version``); every page writes
``tracking <command> --option`` lines. A module moved or renamed, or an option dropped, leaves
a page saying something false: these tests name that page and line.
"""

from __future__ import annotations

import argparse
import importlib
import re
from collections.abc import Iterator
from pathlib import Path

from tracking.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: The pages that describe the code module by module.
ARCHITECTURE = [ROOT / "docs" / "architecture.md", ROOT / "docs" / "architecture-call-path.md"]
#: The repository's folders: a path that starts with one names the project's own file.
_PROJECT = {"tracking", "integrations", "migrations", "dashboards", "tests", "benchmarks", "docs"}
#: Where a bare module name (``_outbox.py``) is looked for: the project's own code.
PACKAGES = [ROOT / "tracking", ROOT / "integrations", ROOT / "dashboards"]

_SPAN = re.compile(r"`([^`\n]+)`")
#: ``dir/file.py``, ``file.py``, ``dir/`` and ``dir/file.py:name`` (``name.attr`` too).
_PATH = re.compile(
    r"((?:[\w.-]+/)*[\w.-]+\.(?:py|json|toml|ya?ml)|(?:[\w.-]+/)+)(?::([A-Za-z_][\w.]*))?"
)
_DOTTED = re.compile(r"tracking(?:\.[A-Za-z_]\w*)+")
_LOGGER = re.compile(r"""getLogger\(["'](tracking(?:\.\w+)*)["']\)""")
_FENCE = re.compile(r"^```(\S*)\s*$")
#: ``tracking`` as a command: at the start of a line or span, after a separator or ``bin/``.
_COMMAND = re.compile(r"(?:^|[\s;&|(]|bin/)tracking((?:[ \t]+[^\s;&|<>#)`'\"]+)*)")


def _where(page: Path, number: int) -> str:
    return f"{page.relative_to(ROOT) if page.is_relative_to(ROOT) else page.name}:{number}"


def _spans(page: Path) -> Iterator[tuple[int, str]]:
    """Each inline code span of ``page`` (code blocks' lines included) with its line number."""
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        for match in _SPAN.finditer(line):
            yield number, match[1]


def _sources() -> list[Path]:
    return [
        path
        for package in PACKAGES
        for path in package.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    ]


def _defines(source: Path, dotted: str) -> bool:
    """Whether ``source`` defines each part of ``dotted``: a function, a class, a method, an
    assignment or an annotated name."""
    text = source.read_text(encoding="utf-8")
    return all(
        re.search(rf"^\s*(?:(?:async\s+)?def|class)\s+{part}\b|^\s*{part}\s*[:=]", text, re.M)
        for part in dotted.split(".")
    )


def module_faults(page: Path) -> tuple[int, list[str]]:
    """How many file and folder paths ``page`` names in code, and what is wrong with them: a
    path that does not exist, or a ``path:name`` whose file does not define the name."""
    sources = _sources()
    checked, faults = 0, []
    for number, text in _spans(page):
        match = _PATH.fullmatch(text.split("(", 1)[0].strip())
        if match is None or not (
            match[1].split("/", 1)[0] in _PROJECT if "/" in match[1] else match[1].endswith(".py")
        ):
            continue  # a user's file (``config.yaml``), an absolute path
        checked += 1
        where, path, name = _where(page, number), match[1], match[2]
        if "/" in path:
            candidates = [ROOT / path] if (ROOT / path).exists() else []
        else:  # a file of the section's package, named alone
            candidates = [source for source in sources if source.name == path]
        if not candidates:
            faults.append(f"{where}: {path} does not exist")
        elif name is not None and not any(c.is_file() and _defines(c, name) for c in candidates):
            faults.append(f"{where}: {path} defines no {name}")
    return checked, faults


def _resolves(dotted: str) -> bool:
    """Whether ``dotted`` is a module, or a module's attribute (``tracking.bus.emit_sync``,
    ``tracking.router.Deployment.priced``)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            if not hasattr(found, attribute):
                return False
            found = getattr(found, attribute)
        return True
    return False


def _refused(dotted: str) -> bool:
    """Whether ``dotted`` is a setting ``tracking`` refuses when set (LiteLLM's
    ``tracking.max_budget``, a near miss of a callback list's name), which a page shows."""
    import tracking
    from tracking.errors import ConfigurationError

    name = dotted.removeprefix("tracking.")
    try:
        tracking._refuse_unread_setting(name, object())
    except ConfigurationError:
        return "." not in name
    return False


def dotted_faults(page: Path) -> tuple[int, list[str]]:
    """How many ``tracking.x.y`` names ``page`` gives in code, and those that are neither
    importable (a module, or an attribute of one), one of the project's loggers
    (``tracking.proxy.access``) nor a setting the module refuses (``tracking.max_budget``)."""
    loggers = {
        match[1]
        for source in _sources()
        if source.suffix == ".py"
        for match in _LOGGER.finditer(source.read_text(encoding="utf-8"))
    }
    checked, faults = 0, []
    for number, text in _spans(page):
        for match in _DOTTED.finditer(text):
            after = text[match.end() :][:1]
            # a name starts its span; a page's file (``tracking.db``) or a URL is no name
            if match.start() or re.match(r"[\w/-]", after) or text.endswith((".db", ".md")):
                continue
            checked += 1
            if not (match[0] in loggers or _resolves(match[0]) or _refused(match[0])):
                faults.append(f"{_where(page, number)}: {match[0]} does not exist")
    return checked, faults


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _commands(page: Path) -> Iterator[tuple[str, list[str]]]:
    """(where, words) for each ``tracking ...`` command in ``page``: in a shell code block, or
    an inline code span that starts with the command."""
    fence: str | None = None
    for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
        opening = _FENCE.match(line)
        if opening is not None:
            fence = opening[1] if fence is None else None
            continue
        if fence == "bash":
            texts = [line]
        elif fence is None:
            texts = [m[1] for m in _SPAN.finditer(line) if re.match(r"(\S*/)?tracking \w", m[1])]
        else:
            continue
        for text in texts:
            for match in _COMMAND.finditer(text.split(" # ", 1)[0]):
                words = match[1].split()
                if words and not words[0].endswith(":"):  # ``tracking serve: error: ...``: output
                    yield _where(page, number), words


def command_faults(page: Path) -> tuple[int, list[str]]:
    """How many ``tracking`` commands ``page`` writes, and those naming a command or an option
    the CLI does not have (``COMMAND``, an upper-case word, stands for any command)."""
    parser = build_parser()
    checked, faults = 0, []
    for where, words in _commands(page):
        checked += 1
        command: argparse.ArgumentParser | None = parser
        given, rest = ["tracking"], list(words)
        while command is not None and rest and _subcommands(command):
            if rest[0].startswith("-"):
                break
            word = rest.pop(0)
            choices = _subcommands(command)
            if word.isupper():  # a placeholder
                command = None
            elif word not in choices:
                faults.append(f"{where}: {' '.join(given)} has no command {word!r}")
                command = None
            else:
                command = choices[word]
                given.append(word)
        if command is None:
            continue
        options = {o for action in command._actions for o in action.option_strings}
        for word in rest:
            option = word.split("=", 1)[0]
            if option.startswith("--") and option != "--" and option not in options:
                faults.append(f"{where}: {' '.join(given)} has no option {option}")
    return checked, faults


def test_every_module_the_architecture_pages_name_exists():
    results = [module_faults(page) for page in ARCHITECTURE]
    assert sum(checked for checked, _ in results) > 80  # the pages name modules throughout
    assert [fault for _, faults in results for fault in faults] == []


def test_every_dotted_name_the_docs_give_resolves():
    results = [dotted_faults(page) for page in PAGES]
    assert sum(checked for checked, _ in results) > 100
    assert [fault for _, faults in results for fault in faults] == []


def test_every_tracking_command_and_option_the_docs_write_exists():
    results = [command_faults(page) for page in PAGES]
    assert sum(checked for checked, _ in results) > 100
    assert [fault for _, faults in results for fault in faults] == []


def test_stale_names_are_found(tmp_path: Path):
    """Each check finds a reference gone stale: a module renamed, a name removed, a dotted name
    misspelt, a command or an option that does not exist."""
    page = tmp_path / "stale.md"
    page.write_text(
        "One place (`tracking/proxy/answer_costs.py`), settled by "
        "`tracking/proxy/app.py:_settle_ending` and `_gate.py:SchemaGates`, read by "
        "`tracking.pricing.prices_versions`.\n\n"
        "```bash\ntracking serve --config config.yaml --wrokers 2\ntracking ledgers list\n```\n",
        encoding="utf-8",
    )
    assert module_faults(page) == (
        3,
        [
            "stale.md:1: tracking/proxy/answer_costs.py does not exist",
            "stale.md:1: tracking/proxy/app.py defines no _settle_ending",
            "stale.md:1: _gate.py defines no SchemaGates",
        ],
    )
    assert dotted_faults(page) == (
        1,
        ["stale.md:1: tracking.pricing.prices_versions does not exist"],
    )
    assert command_faults(page) == (
        2,
        [
            "stale.md:4: tracking serve has no option --wrokers",
            "stale.md:5: tracking has no command 'ledgers'",
        ],
    )
