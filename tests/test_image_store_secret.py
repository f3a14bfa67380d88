"""The local image store's generated signing secret (``.signing-secret``, made once per folder).

It was created empty and then written, so a worker of ``tracking serve --workers N`` starting in
that moment (or any process after a crash in it) read an empty secret and signed URLs with an
empty HMAC key: anyone could then sign any name and expiry, and the other workers refused that
worker's URLs. It is now written whole before it appears, and a secret file too short to be one
is refused at start with a ``ConfigurationError`` naming it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tracking.errors import ConfigurationError
from tracking.proxy.image_store import LocalImageStore, parse_store_settings

_PRINT_SECRET = """
import sys
from tracking.proxy.image_store import LocalImageStore, parse_store_settings
store = LocalImageStore(parse_store_settings({"path": sys.argv[1]}, None))
print(store.signer.signature("x.png", 1))
"""


def _store(folder: Path) -> LocalImageStore:
    return LocalImageStore(parse_store_settings({"path": str(folder)}, None))


@pytest.mark.parametrize("content", [b"", b"short"], ids=["empty", "short"])
def test_a_secret_file_too_short_to_be_one_is_refused_at_start(tmp_path, content):
    (tmp_path / ".signing-secret").write_bytes(content)
    with pytest.raises(ConfigurationError, match=r"\.signing-secret"):
        _store(tmp_path)


def test_processes_starting_together_share_one_whole_secret_and_leave_no_other_file(tmp_path):
    folder = tmp_path / "images"
    starts = [
        subprocess.Popen(
            [sys.executable, "-c", _PRINT_SECRET, str(folder)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(6)
    ]
    signatures = {start.communicate(timeout=60)[0].strip() for start in starts}
    assert all(start.returncode == 0 for start in starts)
    assert len(signatures) == 1  # every process signs with the same secret
    assert len((folder / ".signing-secret").read_bytes()) == 32
    assert [path.name for path in folder.iterdir()] == [".signing-secret"]
    assert _store(folder).signer.signature("x.png", 1) in signatures  # read again, the same


def test_the_images_and_a_folder_the_store_makes_are_its_users_alone(tmp_path):
    """Stored images are the callers' pictures: a folder the store makes is 0700 and each image
    0600, as the signing secret is (they were 0755 and 0644, readable by every user of the
    machine). A folder that already exists keeps the modes its owner gave it."""
    import os
    import stat

    made = tmp_path / "made" / "images"
    store = _store(made)
    store.put("a.png", b"\x89PNG\r\n\x1a\n")
    assert stat.S_IMODE(made.stat().st_mode) & 0o077 == 0
    assert stat.S_IMODE((made / "a.png").stat().st_mode) & 0o077 == 0
    assert store.get("a.png") == b"\x89PNG\r\n\x1a\n"
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    os.chmod(shared, 0o755)
    _store(shared).put("b.png", b"x")
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755
    assert stat.S_IMODE((shared / "b.png").stat().st_mode) & 0o077 == 0
