"""The proxy's multipart reader (tracking/proxy/form.py) on bodies as clients write them and as
they go wrong: every refusal is a 400 ``invalid_multipart`` (or 413), never a crash."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tracking.proxy.errors import ProxyError
from tracking.proxy.form import form_params, parse_multipart, read_multipart

B = b"xYz123"


def body(*parts: bytes, preamble: bytes = b"", epilogue: bytes = b"") -> bytes:
    return (
        preamble
        + b"".join(b"--" + B + b"\r\n" + p + b"\r\n" for p in parts)
        + (b"--" + B + b"--" + epilogue)
    )


def field(name: str, value: bytes) -> bytes:
    return f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value


def test_parts_as_httpx_builds_them_for_the_openai_client():
    request = httpx.Request(
        "POST",
        "http://proxy/v1/images/edits",
        data={"model": "gpt-image-1", "prompt": "a hat", "n": "2"},
        files=[
            ("image[]", ("a.png", b"\x89PNG first\r\n--not-the-boundary", "image/png")),
            ("image[]", ("b.png", b"\x89PNG second", "image/png")),
            ("mask", ("m.png", b"\x89PNG mask", "image/png")),
        ],
    )
    content_type = request.headers["content-type"]
    raw = request.read()

    async def receive_in_pieces():
        pieces = [raw[i : i + 7] for i in range(0, len(raw), 7)]
        for index, piece in enumerate(pieces):
            yield {"type": "http.request", "body": piece, "more_body": index < len(pieces) - 1}

    pieces = receive_in_pieces()
    parts = asyncio.run(read_multipart(pieces.__anext__, content_type, 1 << 20))
    params = form_params(parts)
    assert params["model"] == "gpt-image-1" and params["n"] == 2
    assert params["image"] == [
        ("a.png", b"\x89PNG first\r\n--not-the-boundary", "image/png"),
        ("b.png", b"\x89PNG second", "image/png"),
    ]
    assert params["mask"] == ("m.png", b"\x89PNG mask", "image/png")


def test_preamble_epilogue_padding_and_crlf_inside_content():
    raw = body(
        field("prompt", b"line one\r\nline two\r\n"),
        field("model", b"gpt-image-1"),
        preamble=b"ignored preamble\r\n",
        epilogue=b"\r\nignored epilogue",
    ).replace(b"--" + B + b"\r\n", b"--" + B + b"  \r\n", 1)  # transport padding
    parts = parse_multipart(raw, B)
    assert [(p.name, p.data) for p in parts] == [
        ("prompt", b"line one\r\nline two\r\n"),
        ("model", b"gpt-image-1"),
    ]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"no delimiter at all", "no part delimited"),
        (b"--" + B + b"\r\n" + field("a", b"1"), "ended before its closing boundary"),
        (b"--" + B + b"\r\nContent-Disposition: form-data", "ended before"),
        (body(b"Content-Disposition form-data\r\n\r\nx"), "without a colon"),
        (body(b"Content-Type: text/plain\r\n\r\nx"), "Content-Disposition: form-data"),
        (body(*[field("f", b"1")] * 65), "too many form parts"),
        (b"--" + B + b"garbage\r\n" + field("a", b"1") + b"\r\n--" + B + b"--", "closing"),
    ],
)
def test_malformed_bodies_are_a_400_naming_the_fault(raw, message):
    with pytest.raises(ProxyError) as refused:
        parse_multipart(raw, B)
    assert refused.value.status == 400
    assert refused.value.code == "invalid_multipart"
    assert message in refused.value.message


def test_a_body_past_the_limit_is_refused_while_it_streams():
    sent = []

    async def receive():
        sent.append(1)
        return {"type": "http.request", "body": b"x" * 1000, "more_body": True}

    with pytest.raises(ProxyError) as refused:
        asyncio.run(read_multipart(receive, f"multipart/form-data; boundary={B.decode()}", 4500))
    assert refused.value.status == 413
    assert len(sent) == 5  # stopped at the chunk that crossed the limit


def test_repeated_and_long_part_headers_parse_alike():
    # Short header values are remembered between requests, long ones parsed each time: both
    # must give the same parts, and a bad value must still be refused the second time.
    long_name = "f" * 600
    upload = (
        b'Content-Disposition: form-data; name="image"; filename="cat.png"\r\n'
        b"Content-Type: image/png\r\n\r\nPNGDATA"
    )
    raw = body(field("model", b"gpt-image-1"), field(long_name, b"x"), upload)
    for _ in range(2):
        parts = parse_multipart(raw, B)
        assert [(p.name, p.filename, p.content_type, p.data) for p in parts] == [
            ("model", None, None, b"gpt-image-1"),
            (long_name, None, None, b"x"),
            ("image", "cat.png", "image/png", b"PNGDATA"),
        ]
    bad = body(b"Content-Disposition: attachment; name=x\r\n\r\nx")
    for _ in range(2):
        with pytest.raises(ProxyError, match="Content-Disposition: form-data"):
            parse_multipart(bad, B)


class _Cycle:
    """What uvicorn's request cycle shows of its state (``receive``'s object)."""

    def __init__(self, chunks: list[bytes], *, complete: bool) -> None:
        self.chunks = chunks
        self.more_body = not complete
        self.message_event = asyncio.Event()
        if chunks:
            self.message_event.set()

    async def receive(self) -> dict[str, object]:
        await self.message_event.wait()  # uvicorn's receive waits until data has come
        chunk = self.chunks.pop(0)
        if not self.chunks:
            self.message_event.clear()
        more = bool(self.chunks) or self.more_body  # an incomplete body: more is to come
        return {"type": "http.request", "body": chunk, "more_body": more}


def test_a_body_already_buffered_is_read_without_a_timer_and_a_late_one_with_it(monkeypatch):
    # uvicorn holding the whole body: reading it cannot wait, so no deadline is armed (the
    # timer costs 0.8% of a proxied edit); a body still arriving keeps its deadline (408).
    from tracking.proxy import form

    armed: list[float | None] = []
    real_timeout = asyncio.timeout

    def counted(delay: float | None) -> asyncio.Timeout:
        armed.append(delay)
        return real_timeout(delay)

    monkeypatch.setattr(form.asyncio, "timeout", counted)
    raw = body(field("model", b"gpt-image-1"))
    content_type = f"multipart/form-data; boundary={B.decode()}"
    whole = _Cycle([raw], complete=True)
    parts = asyncio.run(read_multipart(whole.receive, content_type, 1 << 20, 5.0))
    assert [(p.name, p.data) for p in parts] == [("model", b"gpt-image-1")]
    assert armed == []

    async def late() -> None:
        cycle = _Cycle([raw[:10]], complete=False)  # the rest never comes
        await read_multipart(cycle.receive, content_type, 1 << 20, 0.05)

    with pytest.raises(ProxyError) as refused:
        asyncio.run(late())
    assert refused.value.status == 408
    assert armed == [0.05]
