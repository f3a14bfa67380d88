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


# -- rotating the signing secret -----------------------------------------------------------------

OLD, NEW, OTHER = "the-old-secret-0123456789", "the-new-secret-0123456789", "never-configured-0123"


def _signed_with(secret: str, name: str, expires: int) -> bytes:
    from tracking.proxy.image_store import UrlSigner

    signature = UrlSigner(secret.encode()).signature(name, expires)
    return f"expires={expires}&signature={signature}".encode()


async def _served(store, name: str, query: bytes) -> int:
    from tracking.proxy.errors import ProxyError
    from tracking.proxy.image_store import STORED_PREFIX
    from tracking.proxy.url_answers import serve_stored

    sent: list = []

    async def send(message) -> None:
        sent.append(message)

    try:
        await serve_stored(store, f"{STORED_PREFIX}{name}", query, send)
    except ProxyError as error:
        return error.status
    return int(sent[0]["status"])


async def test_urls_signed_with_a_previous_secret_keep_working_until_they_expire(tmp_path):
    """Rotating ``signing_secret`` no longer breaks every live URL: the old secret, listed in
    ``previous_signing_secrets``, is accepted (never used to mint) until its URLs expire."""
    import time

    from tracking.ids import new_request_id

    settings = {"path": str(tmp_path), "signing_secret": NEW, "previous_signing_secrets": [OLD]}
    store = LocalImageStore(parse_store_settings(settings, None))
    name = f"{new_request_id()}-0.png"
    store.put(name, b"an image")
    expires = int(time.time()) + 60
    assert await _served(store, name, _signed_with(OLD, name, expires)) == 200
    assert await _served(store, name, _signed_with(NEW, name, expires)) == 200
    assert await _served(store, name, _signed_with(OTHER, name, expires)) == 403
    past = int(time.time()) - 1
    assert await _served(store, name, _signed_with(OLD, name, past)) == 403  # expired: refused
    # URLs are minted with the current secret only
    minted = store.signer.signature(name, expires).encode()
    assert _signed_with(NEW, name, expires).endswith(minted)
    assert not _signed_with(OLD, name, expires).endswith(minted)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"previous_signing_secrets": OLD}, r"previous_signing_secrets: a list"),
        ({"previous_signing_secrets": [OLD, "short"]}, r"previous_signing_secrets\[1\]"),
        ({"previous_signing_secrets": [7]}, r"previous_signing_secrets\[0\]"),
        (
            {"type": "s3", "bucket": "b", "presign": True, "previous_signing_secrets": [OLD]},
            r"previous_signing_secrets: needs signing_secret",
        ),
    ],
)
def test_a_bad_previous_signing_secrets_is_a_configuration_error(settings, message):
    with pytest.raises(ConfigurationError, match=message):
        parse_store_settings(settings, None)


async def test_a_generated_secret_listed_by_its_base64_keeps_its_urls_working(tmp_path):
    """The local store's generated ``.signing-secret`` is 32 random bytes, not a string:
    ``previous_signing_secrets`` took only strings, so rotating it ended its URLs at once. Listed
    as ``base64:`` and its base64 (``base64 < .signing-secret``), its URLs are served until they
    expire, after a new ``signing_secret`` or after the file was deleted and made again."""
    import base64
    import time

    from tracking.ids import new_request_id

    before = _store(tmp_path)
    name = f"{new_request_id()}-0.png"
    before.put(name, b"an image")
    expires = int(time.time()) + 60
    minted = f"expires={expires}&signature={before.signer.signature(name, expires)}".encode()
    generated = (tmp_path / ".signing-secret").read_bytes()
    listed = "base64:" + base64.b64encode(generated).decode() + "\n"  # as $(...) or a file gives
    rotated = {"path": str(tmp_path), "signing_secret": NEW, "previous_signing_secrets": [listed]}
    after_new_secret = LocalImageStore(parse_store_settings(rotated, None))
    assert await _served(after_new_secret, name, minted) == 200
    assert await _served(after_new_secret, name, _signed_with(NEW, name, expires)) == 200
    (tmp_path / ".signing-secret").unlink()  # or no secret of one's own: a new file is made
    regenerated = {"path": str(tmp_path), "previous_signing_secrets": [listed]}
    after_new_file = LocalImageStore(parse_store_settings(regenerated, None))
    assert (tmp_path / ".signing-secret").read_bytes() != generated
    assert await _served(after_new_file, name, minted) == 200
    assert await _served(_store(tmp_path), name, minted) == 403  # not listed: refused


@pytest.mark.parametrize(
    "entry",
    ["base64:", "base64:not base64!", "base64:c2hvcnQ=", "base64:" + "é" * 24],
    ids=["empty", "not-base64", "too-short", "not-ascii"],
)
def test_a_bad_base64_previous_secret_is_a_configuration_error_without_the_secret(entry):
    with pytest.raises(ConfigurationError, match=r"previous_signing_secrets\[1\]") as error:
        parse_store_settings({"previous_signing_secrets": [OLD, entry]}, None)
    assert entry not in str(error.value) or entry == "base64:"


def test_a_default_folder_that_cannot_be_made_names_where_it_came_from(tmp_path: Path):
    """No ``image_store.path`` written: the fault is the default folder beside the ledger, and
    the message said ``image_store.path``, a setting the user never wrote."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    settings = parse_store_settings({}, f"sqlite:///{blocker / 'ledger.db'}")
    with pytest.raises(ConfigurationError) as raised:
        LocalImageStore(settings)
    message = raised.value.message
    assert message.startswith("general_settings.image_store: the image store's default folder")
    assert str(blocker / "images") in message and "set general_settings.image_store.path" in message
    written = parse_store_settings({"path": str(blocker / "mine")}, None)
    with pytest.raises(ConfigurationError) as raised:
        LocalImageStore(written)
    assert raised.value.message.startswith("general_settings.image_store.path: ")
