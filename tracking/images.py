"""Turning what callers pass as an image (bytes, paths, open files, lists) into inspected bytes.

Every accepted form is read exactly once, up front, so retries and fallbacks resend the same
bytes and a caller's file object is never read twice. Reading is bounded (``MAX_IMAGE_BYTES``),
and a recognised image is inspected from its header only: PNG, JPEG and WebP headers by
:mod:`tracking.image_headers` (a few slices, no decoder), GIF by Pillow's parser, which stops
before the pixel data. An image whose header claims more than ``MAX_IMAGE_PIXELS`` is refused
without being decoded, so a 100000x100000 "bomb" costs a few kilobytes, never gigabytes. Which
formats, sizes and shapes a model accepts is not decided here but in :mod:`tracking.rules`.
"""

from __future__ import annotations

import base64
import binascii
import errno
import io
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeAlias

from .errors import ValidationError
from .frozen import fast_init
from .image_headers import Header, jpeg_header, png_header, webp_header

__all__ = [
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_PIXELS",
    "ImageFile",
    "ImageInput",
    "ImageReference",
    "encodes_image",
    "encodes_image_or_svg",
    "encodes_svg",
    "is_image",
    "read_image",
    "read_images",
    "sniff_content_type",
]

#: No image argument is read past this many bytes (the proxy's default body limit too).
MAX_IMAGE_BYTES = 64 * 1024 * 1024
#: Pillow's own decompression-bomb threshold: about 350 MB once decoded to RGBA.
MAX_IMAGE_PIXELS = 89_478_485

#: One image as a caller may pass it: raw bytes, a path, an open binary file, or an
#: ``(filename, content[, content_type])`` tuple as the official ``openai`` client accepts.
ImageInput: TypeAlias = (
    bytes
    | bytearray
    | memoryview
    | str
    | os.PathLike[str]
    | IO[bytes]
    | tuple[str | None, Any]
    | tuple[str | None, Any, str | None]
    | "ImageFile"
)

_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)
_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}
_HEADER_PARSERS: dict[str, Callable[[bytes], Header | None]] = {
    "image/png": png_header,
    "image/jpeg": jpeg_header,
    "image/webp": webp_header,
}
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})


def sniff_content_type(data: bytes) -> str:
    """The image type the bytes really are, from their signature (not from any file name)."""
    for signature, content_type in _SIGNATURES:
        if data.startswith(signature):
            return content_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


def is_image(data: bytes) -> bool:
    """Whether the bytes start as an image of a type :func:`sniff_content_type` knows."""
    return sniff_content_type(data) != "application/octet-stream"


#: Base64 characters decoded to look at an encoded image: 24 bytes, every signature above.
_ENCODED_HEAD = 32


def encodes_image(encoded: str) -> bool:
    """Whether base64 ``encoded`` starts as an image; False for an upstream answer holding text,
    HTML or nothing where an image should be, so a provider refuses it instead of passing it
    on. Only the head is decoded: the string (megabytes) is passed on as it is, and decoding
    all of it to look would cost about a millisecond per image on every call."""
    try:
        head = base64.b64decode(encoded[:_ENCODED_HEAD], validate=True)
    except (binascii.Error, ValueError):
        return False
    return is_image(head)


#: Base64 characters decoded to look for an SVG document's root element: 768 bytes, room for an
#: XML declaration, a doctype and comments before ``<svg``.
_ENCODED_SVG_HEAD = 1024


def encodes_svg(encoded: str) -> bool:
    """Whether base64 ``encoded`` starts as an SVG document: its ``<svg`` root element within
    the first 768 bytes, after at most a byte-order mark, white space, an XML declaration, a
    doctype or comments. False for HTML (an error page), other XML and text."""
    head = encoded[:_ENCODED_SVG_HEAD]
    head = head[: len(head) - len(head) % 4]  # whole base64 quanta only
    try:
        text = base64.b64decode(head, validate=True)
    except (binascii.Error, ValueError):
        return False
    text = text.removeprefix(b"\xef\xbb\xbf").lstrip().lower()
    if text.startswith(b"<svg"):
        return True
    if not text.startswith((b"<?xml", b"<!--", b"<!doctype svg")):
        return False
    root = text.find(b"<svg")
    return root > 0 and b"<html" not in text[:root]


def encodes_image_or_svg(encoded: str) -> bool:
    """:func:`encodes_image` or :func:`encodes_svg`: what an upstream that may answer vector
    images (Recraft's vector models, OpenAI's 2.6 models with ``output_format="svg"``) sends."""
    return encodes_image(encoded) or encodes_svg(encoded)


@fast_init
@dataclass(frozen=True, slots=True)
class ImageFile:
    """An image read into memory, ready to be sent as one multipart part.

    ``format``, ``width``, ``height`` and ``has_alpha`` come from the header; they are None for
    bytes of a type we do not recognise (an OpenAI-compatible server may know it).
    """

    filename: str
    content: bytes
    content_type: str
    format: str | None = None  #: "png", "jpeg", "webp", "gif"
    width: int | None = None
    height: int | None = None
    has_alpha: bool | None = None

    def __repr__(self) -> str:  # never dump image bytes into logs or tracebacks
        return f"ImageFile({self.filename!r}, {len(self.content)} bytes, {self.content_type})"

    @property
    def dimensions(self) -> str:
        return f"{self.width}x{self.height}" if self.width is not None else "unknown"


@dataclass(frozen=True, slots=True)
class ImageReference(ImageFile):
    """An input image named, not sent: an ``https://`` URL (``image_url``) or an uploaded file
    (``file_id``), as OpenAI's JSON edit body takes it (``{"image_url": ...}`` or
    ``{"file_id": ...}``). Nothing here fetches it: only a provider whose upstream speaks
    OpenAI's images API (``takes_image_references``: OpenAI, Azure, OpenAI-compatible servers)
    can send it, unchanged, in a JSON edit body; every other provider refuses the call before
    anything is sent (:func:`tracking.providers.prepare_call`). Its bytes, format and size are
    unknown (``content`` is empty): the rules that read a file's header pass it, the upstream
    checks what it fetches.
    """

    image_url: str | None = None
    file_id: str | None = None

    def __repr__(self) -> str:  # never a whole URL (it may carry a signature) in logs
        if self.file_id is not None:
            return f"ImageReference(file_id={self.file_id[:40]!r})"
        return f"ImageReference(image_url={(self.image_url or '')[:40]!r}...)"

    @classmethod
    def of(cls, image_url: str | None = None, file_id: str | None = None) -> ImageReference:
        """A reference to exactly one of ``image_url`` and ``file_id``."""
        if (image_url is None) == (file_id is None):
            raise ValueError("an image reference names exactly one of image_url and file_id")
        label = file_id if file_id is not None else "image-url"
        return cls(label, b"", "application/octet-stream", image_url=image_url, file_id=file_id)

    def to_json(self) -> dict[str, str]:
        """The reference as OpenAI's JSON edit body writes it."""
        if self.file_id is not None:
            return {"file_id": self.file_id}
        assert self.image_url is not None
        return {"image_url": self.image_url}


def read_image(value: ImageInput, *, param: str = "image") -> ImageFile:
    """Read one image argument into an :class:`ImageFile`, or raise a ``ValidationError``.

    The bytes are read at most up to ``MAX_IMAGE_BYTES`` and, when their signature is a known
    image type, the header is inspected and checked for a plausible size.
    """
    if isinstance(value, ImageFile):  # already read and inspected (a routed call's next target)
        return value
    filename: str | None = None
    content_type: str | None = None
    if isinstance(value, tuple):
        if len(value) not in (2, 3):
            raise ValidationError(
                f"{param}: a tuple must be (filename, content) or "
                "(filename, content, content_type)",
                param=param,
                rule="type",
            )
        filename, inner = value[0], value[1]
        content_type = value[2] if len(value) == 3 else None
        if filename is not None and not isinstance(filename, str):
            raise ValidationError(
                f"{param}: a tuple's filename must be a string or None, got "
                f"{type(filename).__name__}",
                param=param,
                rule="type",
            )
        if content_type is not None and not _is_media_type(content_type):
            raise ValidationError(
                f"{param}: a tuple's content type must be a media type such as 'image/png' "
                f"(printable ASCII), got {content_type!r}"[:300],
                param=param,
                rule="type",
            )
        data = _read_bytes(inner, param)
    else:
        data = _read_bytes(value, param)
        filename = _name_of(value)
    if not data:
        raise ValidationError(f"{param}: the image is empty (0 bytes)", param=param, rule="empty")
    sniffed = sniff_content_type(data)
    content_type = content_type or sniffed
    if not filename:
        filename = f"{param.rstrip('[]')}.{_EXTENSIONS.get(sniffed, 'bin')}"
    header = _inspect(data, sniffed, param)
    return ImageFile(
        filename=os.path.basename(filename),
        content=data,
        content_type=content_type,
        format=header.format if header else None,
        width=header.width if header else None,
        height=header.height if header else None,
        has_alpha=header.has_alpha if header else None,
    )


def _inspect(data: bytes, content_type: str, param: str) -> Header | None:
    """The header of a recognised image, checked for plausible dimensions; never decodes it."""
    kind = _EXTENSIONS.get(content_type)
    if kind is None:
        return None
    name = "jpeg" if kind == "jpg" else kind
    try:
        parse = _HEADER_PARSERS.get(content_type, _gif_header)
        header = parse(data)
    except Exception:  # Pillow's GIF parser raises many types on garbage; all mean "malformed"
        header = None
    if header is None:
        raise ValidationError(
            f"{param}: the file starts like a {name.upper()} but its header is malformed or "
            "truncated",
            param=param,
            rule="malformed",
        )
    if header.width <= 0 or header.height <= 0:
        raise ValidationError(
            f"{param}: the {name.upper()} header claims {header.width}x{header.height} pixels: "
            "an image has at least one pixel each way",
            param=param,
            rule="dimensions",
        )
    pixels = header.width * header.height
    if pixels > MAX_IMAGE_PIXELS:
        raise ValidationError(
            f"{param}: the {name.upper()} header claims {header.width}x{header.height} pixels, "
            f"more than the {MAX_IMAGE_PIXELS:,} accepted; refused without decoding it",
            param=param,
            rule="dimensions",
        )
    return header


def _gif_header(data: bytes) -> Header:
    from PIL.GifImagePlugin import GifImageFile

    # The plugin class itself, not Image.open: it parses the header and stops, and it skips
    # Pillow's decompression-bomb warning, which we replace with a clear error above.
    with GifImageFile(io.BytesIO(data)) as image:
        width, height = image.size
        alpha = image.mode in _ALPHA_MODES or "transparency" in image.info
        return Header("gif", int(width), int(height), bool(alpha))


def read_images(
    value: ImageInput | list[ImageInput] | None, *, param: str = "image"
) -> tuple[ImageFile, ...]:
    """Read an image argument that may be one image or a list of them."""
    if value is None:
        return ()
    if isinstance(value, list):
        if not value:
            raise ValidationError(
                f"{param}: the list of images is empty", param=param, rule="empty"
            )
        return tuple(read_image(item, param=param) for item in value)
    return (read_image(value, param=param),)


def _too_large(param: str, size: str) -> ValidationError:
    return ValidationError(
        f"{param}: {size}, more than the {MAX_IMAGE_BYTES // (1024 * 1024)} MiB any image may be",
        param=param,
        rule="max_bytes",
    )


def _read_bytes(value: Any, param: str) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        if len(value) > MAX_IMAGE_BYTES:
            raise _too_large(param, f"{len(value):,} bytes")
        return bytes(value)
    if isinstance(value, str | os.PathLike):
        if not os.fspath(value):  # Path("") is "." (the current folder): name the real fault
            raise ValidationError(f"{param}: an empty file name", param=param, rule="file")
        path = Path(value)
        if "\x00" in os.fspath(path):  # no file can have that name (open() raises ValueError)
            raise ValidationError(
                f"{param}: {os.fspath(path)!r} is not a usable file name (it holds a NUL byte)",
                param=param,
                rule="file",
            )
        try:
            # Non-blocking: a named pipe without a writer would block open() forever. It is
            # refused below, as is anything else that is not a regular file (a device, a socket).
            with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as handle:
                status = os.fstat(handle.fileno())
                if stat.S_ISDIR(status.st_mode):
                    raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
                if not stat.S_ISREG(status.st_mode):
                    raise ValidationError(
                        f"{param}: {os.fspath(path)!r} is not a regular file",
                        param=param,
                        rule="file",
                    )
                # Refuse a huge regular file from its size alone; read() stays bounded anyway.
                if status.st_size > MAX_IMAGE_BYTES:
                    raise _too_large(param, f"{os.fspath(path)!r} is larger")
                data = handle.read(MAX_IMAGE_BYTES + 1)
        except FileNotFoundError:
            raise ValidationError(
                f"{param}: no such file: {os.fspath(path)!r}", param=param, rule="file"
            ) from None
        except OSError as exc:
            raise ValidationError(
                f"{param}: cannot read {os.fspath(path)!r}: {exc.strerror}",
                param=param,
                rule="file",
            ) from None
        if len(data) > MAX_IMAGE_BYTES:
            raise _too_large(param, f"{os.fspath(path)!r} is larger")
        return data
    read = getattr(value, "read", None)
    if callable(read):
        if isinstance(value, io.TextIOBase):
            raise _text_mode(param)  # before reading: decoding image bytes fails or garbles them
        if _is_closed(value):
            raise ValidationError(
                f"{param}: the file is closed; pass it open (or pass its path)",
                param=param,
                rule="file",
            )
        try:
            data = read(MAX_IMAGE_BYTES + 1)
        except ValidationError:
            raise
        except UnicodeDecodeError:  # a text-mode file that is not an io.TextIOBase
            raise _text_mode(param) from None
        except Exception as exc:  # closed underneath us, not readable, a stream that broke...
            raise ValidationError(
                f"{param}: cannot read the file ({type(exc).__name__}: {str(exc)[:200]})",
                param=param,
                rule="file",
            ) from None
        if isinstance(data, str):
            raise _text_mode(param)
        if not isinstance(data, bytes | bytearray):
            raise ValidationError(f"{param}: read() did not return bytes", param=param, rule="type")
        if len(data) > MAX_IMAGE_BYTES:
            raise _too_large(param, "the file is larger")
        return bytes(data)
    raise ValidationError(
        f"{param}: expected bytes, a path, an open binary file or a list of these, "
        f"got {type(value).__name__}",
        param=param,
        rule="type",
    )


def _is_closed(value: Any) -> bool:
    """Whether a file object says it is closed; one whose ``closed`` cannot be read is taken
    as open (its ``read`` then says what is wrong)."""
    try:
        return getattr(value, "closed", False) is True
    except Exception:
        return False


def _text_mode(param: str) -> ValidationError:
    return ValidationError(
        f"{param}: the file is open in text mode; open it with 'rb'", param=param, rule="type"
    )


def _is_media_type(value: object) -> bool:
    # It goes into the part's header as it is: no line break, no control character.
    return isinstance(value, str) and len(value) <= 255 and value.isascii() and value.isprintable()


def _name_of(value: Any) -> str | None:
    if isinstance(value, str | os.PathLike):
        return os.fsdecode(value)  # a PathLike may spell itself in bytes
    name = getattr(value, "name", None)
    return name if isinstance(name, str) else None
