"""The distribution as a user gets it: ``python -m build``, then the wheel in a fresh virtualenv.

One module-scoped build makes the wheel and the sdist from this checkout (``python -m build``
with the build backend the ``dev`` extra installs: nothing is fetched while tests run). The wheel
is installed into a fresh virtualenv outside the repository, where ``tracking quickstart`` must
run the proxy against the fake upstream end to end; and beside a user's own top-level package
named ``integrations``, which must not break either side. The wheel's dependencies are not
downloaded (no test needs the network): the fresh virtualenv sees the packages of the one the
tests run in through a ``.pth`` file of plain paths (which runs no other ``.pth``, so this
checkout's editable install is not seen), and a test checks that they satisfy every requirement
the wheel declares for its ``proxy`` extra, as a user's ``pip install`` would have to.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

from tests.services import require_tool

# Building and installing into a fresh virtualenv takes a minute on a quiet machine and several on
# a loaded one: more than the suite's 120 s default, which would count it against the first test.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parent.parent
DISTRIBUTION = "image-edit-tracking"


def _run(command: list[str], *, cwd: Path, timeout: float = 600, **env: str) -> str:
    environment = {
        k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))
    }
    environment.update(PIP_DISABLE_PIP_VERSION_CHECK="1", **env)
    result = subprocess.run(
        command,
        cwd=cwd,
        env=environment,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    build = [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)]
    _run(build, cwd=out)
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


@pytest.fixture(scope="module")
def venv(dist: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv, outside the repository, with the wheel. The installer is this
    environment's pip pointed at it (``--python``), offline and without dependencies: those are
    this environment's packages, seen through a ``.pth`` file of their folders' paths."""
    home = tmp_path_factory.mktemp("venv")
    _run([sys.executable, "-m", "venv", "--without-pip", str(home / "env")], cwd=home)
    python = home / "env" / "bin" / "python"
    site = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=home
    )
    ours = {sysconfig.get_paths()[name] for name in ("purelib", "platlib")}
    (Path(site.strip()) / "test-dependencies.pth").write_text("".join(f"{p}\n" for p in ours))
    install = ["install", "-q", "--no-compile", "--no-index", "--no-deps", str(dist["wheel"])]
    _run([sys.executable, "-m", "pip", "--python", str(python), *install], cwd=home)
    return home / "env" / "bin"


CHECK_REQUIREMENTS = """
from importlib.metadata import PackageNotFoundError, distribution, requires, version
from packaging.requirements import Requirement
import tracking
unmet = []
for line in requires("image-edit-tracking") or []:
    wanted = Requirement(line)
    if wanted.marker is not None and not wanted.marker.evaluate({"extra": "proxy"}):
        continue
    try:
        found = version(wanted.name)
    except PackageNotFoundError:
        found = None
    if found is None or not wanted.specifier.contains(found, prereleases=True):
        unmet.append(f"{wanted} (found {found})")
print(tracking.__file__)
print(distribution("image-edit-tracking").read_text("METADATA").count("Provides-Extra: proxy"))
print(unmet)
"""


def test_the_installed_wheel_is_what_runs_and_its_proxy_extra_is_met(venv, tmp_path):
    """The virtualenv imports tracking from the wheel (not this checkout), and every
    requirement the wheel declares for ``image-edit-tracking[proxy]`` is met there."""
    out = _run([str(venv / "python"), "-c", CHECK_REQUIREMENTS], cwd=tmp_path).splitlines()
    imported = Path(out[0]).resolve()
    assert venv.parent.resolve() in imported.parents and ROOT not in imported.parents, out
    assert out[1] == "1", out
    assert out[2] == "[]", out


def test_the_wheel_and_sdist_carry_the_one_distribution_name_and_the_right_files(dist):
    assert dist["wheel"].name.startswith(DISTRIBUTION.replace("-", "_") + "-")
    assert dist["sdist"].name.startswith(DISTRIBUTION.replace("-", "_") + "-")
    names = zipfile.ZipFile(dist["wheel"]).namelist()
    top = {name.split("/", 1)[0] for name in names if "/" in name}
    assert top == {"tracking", "image_edit_tracking-0.1.0.dist-info"} or (
        "tracking" in top
        and not any(t in top for t in ("integrations", "migrations", "dashboards", "tests", "docs"))
    ), top
    assert "tracking/py.typed" in names
    assert "tracking/pricing/prices.json" in names
    assert any(n.startswith("tracking/integrations/sql/migrations/versions/") for n in names)
    with tarfile.open(dist["sdist"]) as sdist:
        members = {m.name.split("/", 1)[1] for m in sdist.getmembers() if "/" in m.name}
    for wanted in ("dashboards/grafana/image-edit-overview.json", "docs/index.md", "README.md"):
        assert wanted in members, wanted


def test_the_installed_wheel_runs_tracking_quickstart(venv, tmp_path):
    require_tool("curl", "curl")  # the quickstart runs its curl example too
    out = _run([str(venv / "tracking"), "quickstart"], cwd=tmp_path, timeout=300)
    assert "tracking spend" in out or "total" in out.lower()


def test_every_install_hint_names_the_one_distribution():
    hints = []
    for page in [
        ROOT / "README.md",
        *(ROOT / "docs").glob("*.md"),
        *ROOT.glob("tracking/**/*.py"),
        *ROOT.glob("integrations/**/*.py"),
    ]:
        text = page.read_text(encoding="utf-8")
        hints += [line for line in text.splitlines() if "pip install" in line]
    assert hints
    for line in hints:
        if "-e ." in line or "-e '." in line:
            continue  # installing this checkout, not the distribution by name
        assert DISTRIBUTION in line, line


USER_APP = """
import integrations  # the user's own package
import tracking
from tracking import bus

tracking.success_callback = ["prometheus", "sql"]
from integrations.helpers import greet  # still the user's
print(greet(), bus.resolve("prometheus").__class__.__name__)
"""


def test_a_users_own_integrations_package_and_ours_both_import(venv, tmp_path):
    package = tmp_path / "integrations"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "helpers.py").write_text("def greet():\n    return 'hello from the app'\n")
    (tmp_path / "app.py").write_text(USER_APP)
    out = _run([str(venv / "python"), "app.py"], cwd=tmp_path)
    assert "hello from the app PrometheusLogger" in out


CHECK_IMPORTS = """
import importlib, pkgutil, sys
import tracking, tracking.integrations
for info in pkgutil.walk_packages(tracking.integrations.__path__, "tracking.integrations."):
    importlib.import_module(info.name)
import tracking.proxy.app, tracking.cli, tracking.router
print(sorted(m for m in sys.modules if m == "integrations" or m.startswith("integrations.")))
"""


@pytest.mark.slow
def test_the_checkout_imports_the_integrations_only_as_tracking_integrations():
    """Two module objects for one file would mean two registries and two metric sets: everything
    in the repository imports ``tracking.integrations``, never the top-level directory's name."""
    out = subprocess.run(
        [sys.executable, "-c", CHECK_IMPORTS], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]", out
    offenders = [
        f"{path}:{number}"
        for base in ("tracking", "tests", "benchmarks", "dashboards", "migrations")
        for path in (ROOT / base).rglob("*.py")
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if line.lstrip().startswith(("from integrations", "import integrations"))
        and path.name != "test_packaging.py"
    ]
    assert offenders == []
