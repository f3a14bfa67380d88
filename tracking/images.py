"""Turning what callers pass as an image (bytes, paths, open files, lists) into named bytes.

Every accepted form is read exactly once, up front, so retries and fallbacks resend the same
bytes and a caller's file object is never read twice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeAlias

from .errors import ValidationError

__all__ = ["ImageFile", "ImageInput", "read_image", "read_images", "sniff_content_type"]

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
)

_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)
_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp", "image/gif": "gif"}


def sniff_content_type(data: bytes) -> str:
    """The image type the bytes really are, from their signature (not from any file name)."""
    for signature, content_type in _SIGNATURES:
        if data.startswith(signature):
            return content_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


@dataclass(frozen=True, slots=True)
class ImageFile:
    """An image read into memory, ready to be sent as one multipart part."""

    filename: str
    content: bytes
    content_type: str

    def __repr__(self) -> str:  # never dump image bytes into logs or tracebacks
        return f"ImageFile({self.filename!r}, {len(self.content)} bytes, {self.content_type})"


def read_image(value: ImageInput, *, param: str = "image") -> ImageFile:
    """Read one image argument into an :class:`ImageFile`, or raise a ``ValidationError``."""
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
    return ImageFile(filename=os.path.basename(filename), content=data, content_type=content_type)


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


def _read_bytes(value: Any, param: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str | os.PathLike):
        path = Path(value)
        try:
            return path.read_bytes()
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
    read = getattr(value, "read", None)
    if callable(read):
        data = read()
        if isinstance(data, str):
            raise ValidationError(
                f"{param}: the file is open in text mode; open it with 'rb'",
                param=param,
                rule="type",
            )
        if not isinstance(data, bytes | bytearray):
            raise ValidationError(f"{param}: read() did not return bytes", param=param, rule="type")
        return bytes(data)
    raise ValidationError(
        f"{param}: expected bytes, a path, an open binary file or a list of these, "
        f"got {type(value).__name__}",
        param=param,
        rule="type",
    )


def _name_of(value: Any) -> str | None:
    if isinstance(value, str | os.PathLike):
        return os.fspath(value)
    name = getattr(value, "name", None)
    return name if isinstance(name, str) else None
