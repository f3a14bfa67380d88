"""The image stores' sweep and byte count: what ``full()`` says must be what the store holds,
however many processes share it (``tracking serve --workers N`` on one folder, several instances
on one bucket), and a sweep deletes only the images the proxy minted, never raising for a file
another worker deleted first. S3 is moto's server on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tracking.ids import new_request_id
from tracking.proxy.errors import ProxyError
from tracking.proxy.image_store import (
    STORED_PREFIX,
    LocalImageStore,
    S3ImageStore,
    parse_store_settings,
)
from tracking.proxy.url_answers import serve_stored

REPO = Path(__file__).resolve().parent.parent
LATER = 3600.0  # seconds past every stored image's URL lifetime (60 s in these tests)


def _local(folder: Path, max_bytes: int = 100) -> LocalImageStore:
    settings = {"path": str(folder), "url_ttl_seconds": 60, "max_bytes": max_bytes}
    return LocalImageStore(parse_store_settings(settings, None))


def _age(folder: Path, *names: str) -> None:
    old = time.time() - 120
    for name in names:
        os.utime(folder / name, (old, old))


def _name() -> str:
    return f"{new_request_id()}-0.png"


A, B, C = _name(), _name(), _name()  # as the proxy names the images it stores


# -- one folder, several workers ------------------------------------------------------------------


def test_a_worker_does_not_refuse_for_files_another_worker_swept(tmp_path):
    first, second = _local(tmp_path), _local(tmp_path)  # two workers of one proxy
    first.put(A, b"a" * 100)
    _age(tmp_path, A)
    assert second.sweep(time.time()) == 1
    assert not first.full()  # the folder is empty: no 507
    assert first._used == second._used == 0  # the second did not go to -100 either


def test_a_sweep_counts_what_the_other_workers_stored(tmp_path):
    first, second = _local(tmp_path), _local(tmp_path)
    second.put(B, b"b" * 60)
    assert first.sweep(time.time()) == 0
    assert first._used == 60
    first.put(C, b"c" * 40)
    assert first.full()
    # A clock set back deletes nothing and still counts the folder.
    assert second.sweep(time.time() - 86400) == 0
    assert second._used == 100 and second.full()


def test_concurrent_sweeps_never_raise_for_a_file_already_deleted(tmp_path):
    # A name listed whose file is gone by the time it is examined: what a sweep sees when
    # another worker deletes the file between the two (a dangling link makes it lasting).
    (tmp_path / _name()).symlink_to(tmp_path / "deleted-by-another-worker.png")
    names = [_name() for _ in range(300)]
    for name in names:
        (tmp_path / name).write_bytes(b"x" * 10)
    _age(tmp_path, *names)
    stores = [_local(tmp_path, max_bytes=10**6) for _ in range(4)]
    removed: list[int] = []
    failures: list[BaseException] = []

    def sweep(store: LocalImageStore) -> None:
        try:
            removed.append(store.sweep(time.time()))
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=sweep, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert sum(removed) == len(names)  # each file deleted once, by one of the sweeps
    assert all(store._used == 0 for store in stores)


def test_a_sweep_of_a_removed_folder_finds_nothing(tmp_path):
    store = _local(tmp_path / "images")
    store.put(A, b"a" * 100)
    for path in (tmp_path / "images").iterdir():
        path.unlink()
    (tmp_path / "images").rmdir()
    assert store.sweep(time.time()) == 0
    assert not store.full()
    store.put(B, b"b" * 10)  # the folder is made again: URLs work, no restart
    assert store.get(B) == b"b" * 10


def test_a_write_cut_short_by_a_full_disk_leaves_no_partial_file(tmp_path):
    # The file size limit (RLIMIT_FSIZE) makes the write fail part-way, as a full disk does;
    # Python ignores SIGXFSZ, so the write raises OSError (EFBIG).
    script = """
import resource, sys
from tracking.proxy.image_store import LocalImageStore, parse_store_settings
store = LocalImageStore(parse_store_settings({"path": sys.argv[1]}, None))
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    store.put(sys.argv[2], b"x" * 5000)
except OSError:
    print("refused", store._used)
"""
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), A],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.split() == ["refused", "0"]
    assert sorted(path.name for path in tmp_path.iterdir()) == [".signing-secret"]


def test_a_sweep_deletes_the_old_temporary_file_of_a_killed_write_and_no_other(tmp_path):
    store = _local(tmp_path)
    # What a process killed mid-put leaves (it never reached its rename or its cleanup), an
    # older one, a write in progress in another worker, and a hidden file not of the proxy.
    for name in (f".{A}.tmp", f".{B}.tmp", ".notes.txt.tmp", ".signing-secret"):
        (tmp_path / name).write_bytes(b"x")
    _age(tmp_path, f".{A}.tmp", ".notes.txt.tmp")
    assert store.sweep(time.time()) == 0  # not images: never counted as swept ones
    left = {path.name for path in tmp_path.iterdir()}
    assert left == {".notes.txt.tmp", f".{B}.tmp", ".signing-secret"}


def test_a_sweep_never_deletes_a_write_in_progress_however_short_the_url_lifetime(tmp_path):
    """With ``url_ttl_seconds: 1`` a write of a few seconds (a large image, a slow disk) was
    deleted under the writer by another worker's sweep, and its answer came back as base64."""
    settings = {"path": str(tmp_path), "url_ttl_seconds": 1}
    store = LocalImageStore(parse_store_settings(settings, None))
    (tmp_path / f".{A}.tmp").write_bytes(b"x")
    written = time.time() - 5  # begun five seconds ago, still being written
    os.utime(tmp_path / f".{A}.tmp", (written, written))
    store.sweep(time.time())
    assert (tmp_path / f".{A}.tmp").exists()
    store.sweep(time.time() + LATER)  # a leftover of a write that was killed
    assert not (tmp_path / f".{A}.tmp").exists()


def test_a_folder_shared_with_other_files_loses_none_of_them_to_a_sweep(tmp_path):
    store = _local(tmp_path, max_bytes=1000)
    (tmp_path / "logo.png").write_bytes(b"l" * 5000)  # an operator's own file, and a large one
    (tmp_path / "req-1-0.png").write_bytes(b"r" * 10)  # a name the proxy never mints
    _age(tmp_path, "logo.png", "req-1-0.png")
    assert store.sweep(time.time()) == 0
    assert (tmp_path / "logo.png").exists() and (tmp_path / "req-1-0.png").exists()
    assert not store.full()  # not counted toward max_bytes either


# -- one bucket, several instances ----------------------------------------------------------------


def _s3(server: str, bucket: str, prefix: str = "", max_bytes: int = 100) -> S3ImageStore:
    settings = {
        "type": "s3",
        "bucket": bucket,
        "prefix": prefix,
        "endpoint_url": server,
        "url_ttl_seconds": 60,
        "max_bytes": max_bytes,
        "signing_secret": "a-shared-secret-of-enough-length",
    }
    return S3ImageStore(parse_store_settings(settings, None))


def test_an_s3_sweep_frees_the_quota_it_deleted(s3_server, bucket):
    store = _s3(s3_server, bucket)
    store.put(_name(), b"a" * 100)
    assert store.full()
    assert store.sweep(time.time() + LATER) == 1
    assert not store.full()  # it answered 507 until a restart
    assert store._used == 0


def test_instances_sharing_a_bucket_count_each_others_images(s3_server, bucket):
    first, second = _s3(s3_server, bucket, "edits/"), _s3(s3_server, bucket, "edits/")
    first.put(_name(), b"a" * 60)
    assert second.sweep(time.time()) == 0
    assert second._used == 60
    second.put(_name(), b"b" * 40)
    assert second.full()
    # The first instance's sweep deletes both; each instance's count then leaves them.
    assert first.sweep(time.time() + LATER) == 2
    assert second.sweep(time.time()) == 0
    assert not first.full() and not second.full()


def test_an_s3_sweep_deletes_only_the_images_the_proxy_minted(s3_server, bucket):
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server)
    others = [
        "logo.png",  # a name valid_name accepts, but not one the proxy mints
        "report-2024.jpeg",
        "notes.txt",
        "edits/old/page.webp",
        f"archive/{_name()}",  # minted-looking, but below another folder
    ]
    for key in others:
        client.put_object(Bucket=bucket, Key=key, Body=b"other" * 100)
    store = _s3(s3_server, bucket)  # the default empty prefix: the whole bucket is listed
    ours = _name()
    store.put(ours, b"a" * 10)
    assert store.sweep(time.time()) == 0
    assert store._used == 10  # the other objects are not ours to count
    assert store.sweep(time.time() + LATER) == 1
    listed = client.list_objects_v2(Bucket=bucket)["Contents"]
    assert sorted(item["Key"] for item in listed) == sorted(others)


@pytest.mark.parametrize("head", [False, True], ids=["get", "head"])
async def test_an_unreadable_store_is_a_503_not_a_500(s3_server, bucket, head):
    """A HEAD too: S3 answers a HeadObject in a missing bucket with a bare 404, as for a
    missing object, which made it a 404 (the image gone) where a GET said 503."""
    store = _s3(s3_server, f"{bucket}-missing")  # the bucket is gone
    assert store.signer is not None
    name = _name()
    expires = int(time.time()) + 60
    query = f"expires={expires}&signature={store.signer.signature(name, expires)}".encode()

    async def send(message: object) -> None:
        raise AssertionError(f"nothing is sent before the error: {message!r}")

    with pytest.raises(ProxyError) as caught:
        await serve_stored(store, f"{STORED_PREFIX}{name}", query, send, head=head)
    assert caught.value.status == 503 and caught.value.code == "image_store_unavailable"
    assert caught.value.headers["x-should-retry"] == "true"
