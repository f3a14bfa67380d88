"""URL answers for models that only return base64: stored images behind signed, expiring URLs.

GPT image models (and Gemini) answer with base64 only and refuse ``response_format``. When a
client asks such a model for ``response_format=url``, the proxy calls the upstream without it,
stores each returned image, and answers ``data[i].url`` instead of ``data[i].b64_json``: a URL
on the proxy itself, ``{base}/v1/images/stored/{name}?expires={unix}&signature={hex}``, signed
with HMAC-SHA256 over the name and the expiry. ``GET`` on it needs no key (as OpenAI's image
URLs); a changed name, expiry or signature, or an expired URL, is refused with 403, never served.

Two stores, chosen in ``general_settings.image_store``:

* ``local`` (the default): a folder beside the SQLite ledger (``images/`` next to the database
  file; ``./tracking-images`` for other databases). The signing secret is the config's
  ``signing_secret`` or, without one, 32 random bytes written once to ``.signing-secret`` in the
  folder (mode 0600). Expired files are swept in the background.
* ``s3``: any S3-compatible bucket (boto3, the ``s3`` extra) shared by several instances; they
  must share ``signing_secret`` so each serves the URLs the others minted. ``presign: true``
  hands out the store's own presigned URLs instead, so images never pass through the proxy.

``previous_signing_secrets`` (either store) lists secrets whose URLs are still served until they
expire, but never minted with: a rotated ``signing_secret`` does not end every live URL. A
generated ``.signing-secret`` (bytes, not a string) is listed as ``base64:`` and its base64.

``max_bytes`` bounds what the store holds: when it is full, a URL request is refused with 507
before anything is sent upstream (so nothing is billed for an answer that could not be stored).
Each process counts what the store holds from the store itself (the folder or the bucket's
listing) when it sweeps, every minute, and adds what it stores in between, so the processes
sharing a store (``tracking serve --workers N``, several instances on one bucket) agree within a
sweep, and the bytes a sweep deletes leave every count. An S3 sweep deletes only the names the
proxy mints, so a bucket shared with other applications keeps their objects.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import os
import re
import secrets
import stat
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import quote, urlsplit

from ..errors import ConfigurationError

__all__ = [
    "DEFAULT_URL_TTL",
    "ImageStore",
    "LocalImageStore",
    "S3ImageStore",
    "StoreSettings",
    "UrlSigner",
    "build_image_store",
    "origin_host",
    "parse_store_settings",
]

log = logging.getLogger("tracking.proxy")

DEFAULT_URL_TTL = 3600  #: seconds, as OpenAI's own image URLs
DEFAULT_MAX_BYTES = 10 * 1024**3
_SECRET_BYTES = 32  #: a generated signing secret's length
#: Seconds an image outlives its URL lifetime before a sweep deletes it. Its URL's lifetime counts
#: from when its write began (:func:`stored_url`), but S3 dates an object in whole seconds by the
#: store's own clock, which may be a little behind the proxy's. Without the margin a sweep could
#: delete an image whose URL still works.
SWEEP_GRACE = 30.0
#: An ``expires`` as the proxy writes it: a Unix time without sign or leading zero.
_EXPIRES = re.compile(r"[1-9][0-9]{0,11}")
#: The largest ``expires`` a stored image's URL may carry (12 digits).
MAX_EXPIRES = 10**12 - 1
STORED_PREFIX = "/v1/images/stored/"
#: A stored image is served in pieces of at most this many bytes: a GET (which needs no key)
#: holds one piece at a time, never the whole image.
CHUNK_BYTES = 256 * 1024
#: An S3 store that does not answer (an outage, a network partition) fails a call within about
#: ``S3_ATTEMPTS * (S3_CONNECT_SECONDS + S3_READ_SECONDS)``: boto3's defaults (60 s each, five
#: attempts) held a paid answer, or a GET of a stored image, for minutes.
S3_CONNECT_SECONDS = 5
S3_READ_SECONDS = 10  #: without a byte sent or received: a large upload is not bounded by it
S3_ATTEMPTS = 2
_CONTENT_TYPES = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "svg": "image/svg+xml",
}
_KEYS = {
    "type",
    "path",
    "bucket",
    "prefix",
    "endpoint_url",
    "region",
    "url_ttl_seconds",
    "max_bytes",
    "external_base_url",
    "signing_secret",
    "previous_signing_secrets",
    "presign",
}


@dataclass(frozen=True, slots=True)
class StoreSettings:
    kind: str  #: "local", "s3" or "off"
    path: Path | None = None
    bucket: str | None = None
    prefix: str = ""
    endpoint_url: str | None = None
    region: str | None = None
    ttl: int = DEFAULT_URL_TTL
    max_bytes: int = DEFAULT_MAX_BYTES
    external_base_url: str | None = None
    secret: bytes | None = None
    #: secrets that URLs are still accepted under but never minted with (a rotation)
    previous_secrets: tuple[bytes, ...] = ()
    presign: bool = False
    #: the local folder was not written: the default beside the ledger (its faults say so)
    path_defaulted: bool = False


def parse_store_settings(raw: Mapping[str, Any], database_url: str | None) -> StoreSettings:
    """``general_settings.image_store`` checked; a fault is a ``ConfigurationError``."""
    where = "general_settings.image_store"
    unknown = set(raw) - _KEYS
    if unknown:
        raise ConfigurationError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
    kind = raw.get("type", "local")
    if kind not in ("local", "s3", "off"):
        raise ConfigurationError(f"{where}.type: must be local, s3 or off; got {kind!r}")
    ttl = raw.get("url_ttl_seconds", DEFAULT_URL_TTL)
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= 7 * 86400:
        raise ConfigurationError(f"{where}.url_ttl_seconds: 1 to 604800 seconds, got {ttl!r}")
    max_bytes = raw.get("max_bytes", DEFAULT_MAX_BYTES)
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise ConfigurationError(f"{where}.max_bytes: a positive number of bytes")
    base = raw.get("external_base_url")
    if base is not None and not _base_url(base):
        raise ConfigurationError(
            f"{where}.external_base_url: an http(s) URL with a host and no query or fragment "
            f"(the URLs of images are made by adding to it), got {base!r}"
        )
    for key in ("path", "bucket", "prefix", "endpoint_url", "region"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            raise ConfigurationError(f"{where}.{key}: a string, got {raw[key]!r}")
    presign = raw.get("presign", False)
    if not isinstance(presign, bool):  # "false" (an os.environ/ reference) would turn it on
        raise ConfigurationError(f"{where}.presign: true or false, got {presign!r}")
    secret = raw.get("signing_secret")
    if secret is not None and (not isinstance(secret, str) or len(secret) < 16):
        raise ConfigurationError(f"{where}.signing_secret: a string of at least 16 characters")
    previous = _previous_secrets(raw.get("previous_signing_secrets"), where)
    path: Path | None = None
    if kind == "local":
        path = Path(raw["path"]) if raw.get("path") else _beside_ledger(database_url)
    bucket = raw.get("bucket")
    if kind == "s3":
        if not isinstance(bucket, str) or not bucket:
            raise ConfigurationError(f"{where}.bucket: required for type s3")
        if secret is None and not presign:
            raise ConfigurationError(
                f"{where}.signing_secret: required for type s3 (every instance must share it), "
                "unless presign: true"
            )
        if secret is None and previous:
            raise ConfigurationError(
                f"{where}.previous_signing_secrets: needs signing_secret, which mints the URLs "
                "(the previous ones are only accepted)"
            )
    return StoreSettings(
        kind=kind,
        path=path,
        bucket=bucket,
        prefix=str(raw.get("prefix") or ""),
        endpoint_url=raw.get("endpoint_url"),
        region=raw.get("region"),
        ttl=ttl,
        max_bytes=max_bytes,
        external_base_url=base.rstrip("/") if base else None,
        secret=secret.encode() if secret else None,
        previous_secrets=previous,
        presign=presign,
        path_defaulted=kind == "local" and not raw.get("path"),
    )


def _base_url(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises for a port that is not one
    except ValueError:
        return False
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and not parts.query
        and not parts.fragment
        and "?" not in value
        and "#" not in value
        and value.isprintable()
        and " " not in value
    )


#: A ``Host`` header's value an image URL may start with: a name or an IPv4 address (letters,
#: digits, ``.``, ``-``, ``_``, ``~``) or an IPv6 address in brackets, and perhaps a port.
_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~-]+)(?::[0-9]{1,5})?")


def origin_host(value: str) -> bool:
    """Whether a request's ``Host`` header is a host and perhaps a port, which an image's URL
    can start with; not a path, a query, a fragment, a user name, a space or an empty value,
    which would make every URL of a paid answer unusable (or point it elsewhere)."""
    if _HOST.fullmatch(value) is None:
        return False
    try:
        urlsplit(f"http://{value}").port  # noqa: B018 - raises for a port past 65535
    except ValueError:
        return False
    return True


def _previous_secrets(value: Any, where: str) -> tuple[bytes, ...]:
    """``previous_signing_secrets``: a list of secrets as ``signing_secret`` is one."""
    where = f"{where}.previous_signing_secrets"
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ConfigurationError(
            f"{where}: a list of the secrets URLs were signed with before, got "
            f"{type(value).__name__}"
        )
    return tuple(_previous_secret(entry, f"{where}[{n}]") for n, entry in enumerate(value))


#: A previous secret given by its bytes in base64 (a local store's generated ``.signing-secret``,
#: 32 random bytes that are no string: ``base64 < .signing-secret``).
BASE64_PREFIX = "base64:"


def _previous_secret(secret: Any, where: str) -> bytes:
    """One of ``previous_signing_secrets``: a string of at least 16 characters, or
    ``base64:`` and the base64 of at least 16 bytes (a generated ``.signing-secret``)."""
    if isinstance(secret, str) and secret.startswith(BASE64_PREFIX):
        text = secret[len(BASE64_PREFIX) :].strip()
        try:
            decoded = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            decoded = b""
        if len(decoded) < 16:  # never the secret's text in the message: it is a secret
            raise ConfigurationError(
                f"{where}: after {BASE64_PREFIX}, the base64 of at least 16 bytes "
                "(a generated secret's: base64 < .signing-secret)"
            )
        return decoded
    if not isinstance(secret, str) or len(secret) < 16:
        raise ConfigurationError(
            f"{where}: a string of at least 16 characters, or {BASE64_PREFIX} and the "
            "base64 of a generated .signing-secret"
        )
    return secret.encode()


def _beside_ledger(database_url: str | None) -> Path:
    url = database_url or "sqlite:///tracking.db"
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        return Path(url[len("sqlite:///") :]).parent / "images"
    return Path("tracking-images")


class UrlSigner:
    """HMAC-SHA256 over ``name`` and ``expires``; comparisons in constant time. URLs are minted
    with ``secret``; those signed with one of ``previous`` (a rotated secret) are still valid
    until they expire."""

    def __init__(self, secret: bytes, previous: tuple[bytes, ...] = ()) -> None:
        self._secret = secret
        self._accepted = (secret, *previous)

    def signature(self, name: str, expires: int) -> str:
        return _signature(self._secret, name, expires)

    def valid(self, name: str, expires: str, signature: str, now: float) -> bool:
        # only the text the proxy wrote: not "²" (int() refuses it), nor "0{expires}" (the
        # same number: a URL changed in any part is refused)
        if _EXPIRES.fullmatch(expires) is None:
            return False
        if not signature.isascii():  # compare_digest refuses non-ASCII text with a TypeError
            return False
        if int(expires) < now:
            return False
        # every accepted secret is compared, so the time taken says nothing of which matched
        matches = [
            hmac.compare_digest(_signature(secret, name, int(expires)), signature)
            for secret in self._accepted
        ]
        return any(matches)


def _signature(secret: bytes, name: str, expires: int) -> str:
    return hmac.new(secret, f"{name}\n{expires}".encode(), hashlib.sha256).hexdigest()


class ImageStore(Protocol):
    settings: StoreSettings
    signer: UrlSigner | None

    def put(self, name: str, data: bytes) -> None: ...

    def get(self, name: str) -> bytes | None: ...

    def open(self, name: str) -> tuple[int, Pieces] | None: ...

    def size(self, name: str) -> int | None: ...

    def full(self) -> bool: ...

    def presigned_url(self, name: str, expires: int) -> str | None: ...

    def sweep(self, now: float) -> int: ...


def content_type(name: str) -> str:
    return _CONTENT_TYPES.get(name.rsplit(".", 1)[-1], "application/octet-stream")


def valid_name(name: str) -> bool:
    """Names the proxy mints: ``{request id}-{index}.{ext}``; nothing else is ever served."""
    stem, _, ext = name.rpartition(".")
    return (
        ext in _CONTENT_TYPES
        and 0 < len(stem) <= 80
        and all(c.isalnum() or c in "-_" for c in stem)
    )


_MINTED = re.compile(
    r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}-[0-9]{1,6}\.(png|jpeg|webp|gif|svg)"
)


def minted_name(name: str) -> bool:
    """Exactly the names the proxy mints: ``{request id}-{index}.{ext}``, the id a UUID from
    :func:`tracking.ids.new_request_id`. The only objects an S3 sweep deletes or counts: a bucket
    may hold other applications' ``logo.png``, which :func:`valid_name` accepts, and so may a
    local folder an operator shares with other files; the local sweep counts and deletes only
    these names too."""
    return _MINTED.fullmatch(name) is not None


class _ByteCount:
    """The bytes a store holds: as last counted from the store, plus what this process stored
    since that count began. Puts, sweeps and ``full()`` run on different threads, hence the lock;
    ``_stored`` (every byte this process stored, never decreased) lets a count taken while puts
    go on keep them: a put the count also saw is counted twice until the next count, never lost."""

    settings: StoreSettings

    def _start_count(self, used: int) -> None:
        self._lock = threading.Lock()
        self._used = used
        self._stored = 0

    def _add(self, size: int) -> None:
        with self._lock:
            self._used += size
            self._stored += size

    def _counted(self, size: int, stored_before: int) -> None:
        """``size`` counted in the store by a count that began when ``_stored`` was
        ``stored_before``."""
        with self._lock:
            self._used = size + self._stored - stored_before

    def full(self) -> bool:
        return self._used >= self.settings.max_bytes

    def open(self, name: str) -> tuple[int, Pieces] | None:
        raise NotImplementedError

    def get(self, name: str) -> bytes | None:
        """The whole image (None if there is none), read through :meth:`open`: what serving
        it reads, a piece at a time."""
        opened = self.open(name)
        return None if opened is None else b"".join(opened[1])


class LocalImageStore(_ByteCount):
    """Images as files in one folder, which every worker of ``tracking serve --workers N`` (and
    any instance given the same path) shares.

    Each process counts the folder when it starts and when it sweeps (every minute), and adds
    what it stores in between. So a count misses, until its next sweep, what the other workers
    stored (the folder may pass ``max_bytes`` by about a minute of their images) and still holds
    the files another worker swept. Before refusing, ``full()`` counts the folder again, so a
    worker never answers 507 because of files that are gone; once it has, it refuses without
    counting until its next sweep: a flood of refused requests costs one folder scan on the event
    loop per minute, not one per request. Files are never counted by name alone: a file another
    worker deletes meanwhile is skipped, so concurrent sweeps never raise.
    """

    def __init__(self, settings: StoreSettings) -> None:
        assert settings.path is not None
        self.settings = settings
        self.root = settings.path
        try:  # a path under a file, a folder the proxy may not write: stopped at start, clearly
            # made private (0700): the images are the callers' (a folder that exists keeps the
            # modes its owner gave it)
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.signer: UrlSigner | None = UrlSigner(
                settings.secret or self._persisted_secret(), settings.previous_secrets
            )
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            if settings.path_defaulted:  # the user wrote no path: name what chose this one
                raise ConfigurationError(
                    f"general_settings.image_store: the image store's default folder {self.root}"
                    f" cannot be used ({reason}); no image_store.path is set, and the default "
                    "is beside an SQLite ledger (general_settings.database_url), else in the "
                    "working folder: set general_settings.image_store.path to a folder the "
                    "proxy may write, or image_store.type: off"
                ) from None
            raise ConfigurationError(
                f"general_settings.image_store.path: {self.root} cannot be used as the image "
                f"store's folder ({reason})"
            ) from None
        self._start_count(sum(info.st_size for _, info in self._images()))
        self._recounted = False  # full() counted the folder since the last sweep

    def _images(self) -> Iterator[tuple[str, os.stat_result]]:
        """The folder's images (path and stat); one deleted while listed is left out."""
        try:
            entries = list(os.scandir(self.root))
        except OSError as exc:  # removed or unreadable: no image of it can be served either
            log.warning("the image store's folder cannot be listed: %s", type(exc).__name__)
            return
        for entry in entries:
            if not minted_name(entry.name):
                continue
            try:
                info = entry.stat()
            except FileNotFoundError:  # another worker's sweep deleted it
                continue
            if stat.S_ISREG(info.st_mode):
                yield entry.path, info

    def _persisted_secret(self) -> bytes:
        """The folder's secret, made once by the first process to start. It is written whole
        to a file of this process's own, then linked into place (which fails if another
        process's is there first), so no process ever reads it empty or half written."""
        path = self.root / ".signing-secret"
        if not path.exists():
            temporary = self.root / f".signing-secret.{os.getpid()}.{secrets.token_hex(4)}"
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "wb") as file:
                    file.write(secrets.token_bytes(_SECRET_BYTES))
                os.link(temporary, path)
            except FileExistsError:  # another process linked its own first: that one is used
                pass
            except OSError:  # a file system without hard links: moved, unless one is there
                if not path.exists():
                    os.replace(temporary, path)
            finally:
                temporary.unlink(missing_ok=True)
        secret = path.read_bytes()
        if len(secret) < 16:  # an empty key would let anyone sign any URL
            raise ConfigurationError(
                f"general_settings.image_store: {path} holds {len(secret)} bytes, too few for "
                "a signing secret (a write cut short?); delete it (URLs minted with it stop "
                "working) or set signing_secret"
            )
        return secret

    def put(self, name: str, data: bytes) -> None:
        temporary = self.root / f".{name}.tmp"
        if not self.root.is_dir():  # removed while the proxy runs (a cleanup): made again
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            # readable by the proxy's user alone (0600), as the signing secret is
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            temporary.replace(self.root / name)
        except BaseException:  # a full disk mid-write: no partial file left behind, never swept
            temporary.unlink(missing_ok=True)
            raise
        self._add(len(data))

    def open(self, name: str) -> tuple[int, Pieces] | None:
        """The image's size and its bytes in pieces of ``CHUNK_BYTES``; None if there is none.
        The file stays readable to the end even if a sweep deletes it meanwhile."""
        try:
            file = (self.root / name).open("rb")
        except FileNotFoundError:
            return None
        return os.fstat(file.fileno()).st_size, Pieces(file)

    def size(self, name: str) -> int | None:
        """The image's size, its bytes unread (a HEAD); None if there is none."""
        try:
            info = (self.root / name).stat()
        except FileNotFoundError:
            return None
        return info.st_size if stat.S_ISREG(info.st_mode) else None

    def full(self) -> bool:
        if super().full() and not self._recounted:
            self._recounted = True
            before = self._stored
            self._counted(sum(info.st_size for _, info in self._images()), before)
        return super().full()

    def presigned_url(self, name: str, expires: int) -> str | None:
        return None

    def sweep(self, now: float) -> int:
        """Delete the images older than the URL lifetime (and ``SWEEP_GRACE``) and count what is
        left; a file another worker deletes first is no error. A clock set back deletes nothing
        until it catches up."""
        before = self._stored
        removed = kept = 0
        for path, info in self._images():
            if info.st_mtime + self.settings.ttl + SWEEP_GRACE >= now:
                kept += info.st_size
                continue
            try:
                os.unlink(path)
            except FileNotFoundError:  # another worker swept it first
                continue
            removed += 1
        self._counted(kept, before)
        self._recounted = False
        self._sweep_leftovers(now)
        return removed

    def _sweep_leftovers(self, now: float) -> None:
        """Delete the temporary files of writes a killed process never finished (``put`` names
        them ``.{name}.tmp``), once they are older than the URL lifetime and ``SWEEP_GRACE``: a
        write in progress in another worker is seconds old, and a lifetime may be a second (a
        sweep deleting a write in progress made its answer base64). Not counted as images: they
        were never served."""
        try:
            entries = list(os.scandir(self.root))
        except OSError:  # _images() has logged it
            return
        for entry in entries:
            name = entry.name
            if not (name.startswith(".") and name.endswith(".tmp") and minted_name(name[1:-4])):
                continue
            try:
                if entry.stat().st_mtime + self.settings.ttl + SWEEP_GRACE < now:
                    os.unlink(entry.path)
            except FileNotFoundError:  # another worker swept it first
                continue


class S3ImageStore(_ByteCount):
    """Images as objects in an S3-compatible bucket (boto3; calls run in a worker thread).

    The used size is the objects the proxy minted under ``prefix``, as counted by the last sweep
    (at start, then every minute), plus what this instance stored since: instances sharing the
    bucket agree within a sweep. ``full()`` makes no call to the store.
    """

    def __init__(self, settings: StoreSettings) -> None:
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise ConfigurationError(
                "general_settings.image_store: type s3 needs boto3 "
                "(pip install 'image-edit-tracking[s3]')"
            ) from None
        self.settings = settings
        self.signer: UrlSigner | None = (
            UrlSigner(settings.secret, settings.previous_secrets) if settings.secret else None
        )
        self.client: Any = boto3.client(
            "s3",
            endpoint_url=settings.endpoint_url,
            region_name=settings.region,
            config=Config(
                # botocore presigns S3 URLs with signature version 2 unless told otherwise
                # (boto/botocore#3791), which S3 refuses in most regions and for every bucket
                # made since 2020-06-24 (AWS's docs, read 2026-12-07): a presigned URL of a
                # paid answer answered 403
                signature_version="s3v4",
                connect_timeout=S3_CONNECT_SECONDS,
                read_timeout=S3_READ_SECONDS,
                # total_max_attempts: boto3's max_attempts counts the retries (three attempts)
                retries={"total_max_attempts": S3_ATTEMPTS, "mode": "standard"},
            ),
        )
        self._start_count(0)  # until the first sweep (at start) has counted the bucket

    def _key(self, name: str) -> str:
        return f"{self.settings.prefix}{name}"

    def put(self, name: str, data: bytes) -> None:
        self.client.put_object(
            Bucket=self.settings.bucket,
            Key=self._key(name),
            Body=data,
            ContentType=content_type(name),
        )
        self._add(len(data))

    def open(self, name: str) -> tuple[int, Pieces] | None:
        """The object's size and its bytes in pieces of ``CHUNK_BYTES``; None if there is none."""
        try:
            answer = self.client.get_object(Bucket=self.settings.bucket, Key=self._key(name))
        except self.client.exceptions.NoSuchKey:
            return None
        return int(answer["ContentLength"]), Pieces(answer["Body"])

    def size(self, name: str) -> int | None:
        """The object's size from its metadata (``HeadObject``), its bytes never downloaded (a
        HEAD); None if there is none."""
        from botocore.exceptions import ClientError

        try:
            answer = self.client.head_object(Bucket=self.settings.bucket, Key=self._key(name))
        except ClientError as exc:  # a HEAD's error has no body: its code is the status
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey"):
                raise
            # a missing bucket is a 404 too: asked apart, it is the store that cannot be read
            # (a 503, as a GET's NoSuchBucket), not an image that is not there
            self.client.head_bucket(Bucket=self.settings.bucket)
            return None
        return int(answer["ContentLength"])

    def presigned_url(self, name: str, expires: int) -> str | None:
        """The store's own URL, working until ``expires`` (a Unix time), or None (no
        ``presign``)."""
        if not self.settings.presign:
            return None
        params = {"Bucket": self.settings.bucket, "Key": self._key(name)}
        if name.endswith(".svg"):  # a document that may hold scripts: never opened as a page
            # on the bucket's origin (an <img> still shows it; the proxy's own serving sandboxes
            # it with a CSP, which a bucket cannot send)
            params["ResponseContentDisposition"] = "attachment"
        url: str = self.client.generate_presigned_url(
            "get_object",
            Params=params,
            ExpiresIn=max(1, expires - int(time.time())),
        )
        return url

    def sweep(self, now: float) -> int:
        """Delete the images the proxy minted under ``prefix`` older than the URL lifetime (and
        ``SWEEP_GRACE``), and count the rest; any other object in the bucket is neither deleted
        nor counted."""
        before = self._stored
        removed = kept = 0
        prefix = self.settings.prefix
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.settings.bucket, Prefix=prefix
        )
        for page in pages:
            for item in page.get("Contents", ()):
                if not minted_name(item["Key"][len(prefix) :]):
                    continue
                if item["LastModified"].timestamp() + self.settings.ttl + SWEEP_GRACE >= now:
                    kept += item["Size"]
                    continue
                self.client.delete_object(Bucket=self.settings.bucket, Key=item["Key"])
                removed += 1
        self._counted(kept, before)
        return removed


class Pieces:
    """A stored image's bytes (a file's, an S3 object's body) in pieces of ``CHUNK_BYTES``; the
    source is closed once read, or by :meth:`close`, even if no piece was read (a generator's
    ``finally`` never runs when it was not started, which left the file open)."""

    __slots__ = ("_source",)

    def __init__(self, source: BinaryIO | Any) -> None:
        self._source = source

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        piece: bytes = self._source.read(CHUNK_BYTES)
        if not piece:
            self.close()
            raise StopIteration
        return piece

    def close(self) -> None:
        self._source.close()


def build_image_store(settings: StoreSettings) -> ImageStore | None:
    if settings.kind == "off":
        return None
    if settings.kind == "s3":
        return S3ImageStore(settings)
    return LocalImageStore(settings)


def stored_url(store: ImageStore, name: str, base: str, written: float) -> str:
    """The URL a client gets for one stored image: presigned by the store, or signed here. Its
    lifetime counts from ``written``, when the image's write began: a URL minted after a slow
    write of several images (a store timing out and retrying) never outlives the image, which a
    sweep deletes once its own date is a lifetime (and ``SWEEP_GRACE``) old."""
    expires = int(written) + store.settings.ttl
    presigned = store.presigned_url(name, expires)
    if presigned is not None:
        return presigned
    assert store.signer is not None
    signature = store.signer.signature(name, expires)
    return f"{base}{STORED_PREFIX}{quote(name)}?expires={expires}&signature={signature}"


async def sweep_forever(store: ImageStore, every: float = 60.0) -> None:
    """Delete expired images every ``every`` seconds until cancelled; a failure is logged."""
    while True:
        try:
            removed = await asyncio.to_thread(store.sweep, time.time())
            if removed:
                log.debug("image store: swept %d expired image(s)", removed)
        except Exception:
            log.warning("image store: sweeping expired images failed", exc_info=True)
        await asyncio.sleep(every)
