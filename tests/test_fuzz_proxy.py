"""Fuzzing the proxy's ``POST /v1/images/edits`` over real HTTP: random and truncated multipart
bodies, wrong content types, huge fields, non-image bytes named ``.png``, PNG bombs, masks of
other sizes, unicode and control characters in every field, negative and enormous ``n``. Every
answer is a 2xx or an OpenAI-shaped 4xx, never a 5xx; the proxy stays up, and its memory
(``VmRSS`` from /proc) stays bounded across the whole run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from .conftest import API_KEY, make_png
from .proxy_support import MASTER_KEY, ProxyProcess, rss_bytes, write_config
from .test_fuzz_request import png_bomb

LIMIT_MB = 2
AUTH = {"authorization": f"Bearer {MASTER_KEY}"}
PNG = make_png(32, 32)
FIELDS = ["model", "prompt", "n", "size", "quality", "user", "background", "output_format",
          "output_compression", "input_fidelity", "response_format", "stream", "drop_params",
          "image", "image[]", "mask", "partial_images", "something_else"]  # fmt: skip


@pytest.fixture(scope="module")
def proxy(fake, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    folder = tmp_path_factory.mktemp("fuzz-proxy")
    config = write_config(
        folder / "config.yaml",
        {
            "model_list": [
                {
                    "model_name": name,
                    "litellm_params": {
                        "model": name,
                        "api_key": API_KEY,
                        "api_base": fake.url,
                        "max_retries": 0,
                    },
                }
                for name in ("gpt-image-1", "dall-e-2")
            ],
            "general_settings": {"master_key": MASTER_KEY, "max_request_size_mb": LIMIT_MB},
        },
    )
    with ProxyProcess(config) as running:
        yield running


@pytest.fixture(scope="module")
def client(proxy: ProxyProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=proxy.url, headers=AUTH, timeout=30) as http:
        yield http


def assert_not_a_server_error(response: httpx.Response) -> None:
    """A 2xx, or a 4xx whose body is OpenAI's error object; never a 5xx."""
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["message"] and isinstance(error["message"], str)


def multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "fuzzB0undary") -> bytes:
    out = bytearray()
    for name, filename, data in parts:
        out += f"--{boundary}\r\n".encode()
        disposition = f'form-data; name="{name}"'
        if filename is not None:
            disposition += f'; filename="{filename}"'
        out += f"Content-Disposition: {disposition}\r\n".encode("utf-8", "surrogatepass")
        if filename is not None:
            out += b"Content-Type: image/png\r\n"
        out += b"\r\n" + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out)


nasty_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=30)
values = st.one_of(
    nasty_text.map(lambda s: s.encode()),
    st.binary(max_size=40),
    st.sampled_from([b"gpt-image-1", b"dall-e-2", b"1", b"-1", b"10" * 20, b"1024x1024", b"auto"]),
    st.just(PNG),
    st.just(png_bomb()),
)
parts = st.lists(
    st.tuples(
        st.one_of(st.sampled_from(FIELDS), nasty_text.filter(lambda s: '"' not in s)),
        st.one_of(st.none(), st.sampled_from(["a.png", "x.jpg", "évil\x01.png", ""])),
        values,
    ),
    max_size=8,
)
content_types = st.sampled_from(
    [
        "multipart/form-data; boundary=fuzzB0undary",
        "multipart/form-data; boundary=wrong",
        "multipart/form-data",
        "multipart/form-data; boundary=",
        "multipart/mixed; boundary=fuzzB0undary",
        "application/json",
        "text/plain; charset=utf-8",
        "application/x-www-form-urlencoded",
        "",
    ]
)


@given(parts=parts, content_type=content_types, cut=st.one_of(st.none(), st.floats(0, 1)))
def test_random_and_truncated_multipart_bodies_never_get_a_5xx(
    client: httpx.Client, parts, content_type: str, cut: float | None
) -> None:
    body = multipart(parts)
    if cut is not None:
        body = body[: int(len(body) * cut)]
    headers = {"content-type": content_type} if content_type else {}
    assert_not_a_server_error(client.post("/v1/images/edits", content=body, headers=headers))


@given(field=st.sampled_from(FIELDS[:13]), text=nasty_text)
def test_unicode_and_control_characters_in_every_field(client: httpx.Client, field, text) -> None:
    form = {"model": "gpt-image-1", "prompt": "add a hat", field: text}
    files = {"image": ("a.png", PNG, "image/png")}
    assert_not_a_server_error(client.post("/v1/images/edits", data=form, files=files))


def edit(client: httpx.Client, **fields: object) -> httpx.Response:
    files = fields.pop("files", None) or {"image": ("a.png", PNG, "image/png")}
    form = {"model": "gpt-image-1", "prompt": "add a hat", **fields}
    return client.post("/v1/images/edits", data=form, files=files)


def refused(response: httpx.Response, status: int = 400) -> dict:
    assert response.status_code == status, response.text
    error: dict = response.json()["error"]
    assert error["message"]
    return error


@pytest.mark.parametrize("n", ["-1", "0", "11", "99999999999999999999999999999", "1e3", "", "\x00"])
def test_negative_enormous_and_garbled_n_is_a_400_naming_n(client, fake, n) -> None:
    before = fake.hits
    assert refused(edit(client, n=n))["param"] == "n"
    assert fake.hits == before  # refused before any upstream call


def test_hostile_files_are_clear_400s_before_the_upstream(client, fake) -> None:
    before = fake.hits
    cases = {
        "non-image bytes named .png": {"image": ("a.png", b"MZ\x90\x00 not a png", "image/png")},
        "a PNG bomb": {"image": ("bomb.png", png_bomb(), "image/png")},
        "a truncated PNG": {"image": ("cut.png", PNG[:40], "image/png")},
        "an empty file": {"image": ("empty.png", b"", "image/png")},
        "a mask of another size": [
            ("image", ("a.png", PNG, "image/png")),
            ("mask", ("m.png", make_png(48, 16), "image/png")),
        ],
        "a file where text belongs": [
            ("image", ("a.png", PNG, "image/png")),
            ("prompt", ("p.png", PNG, "image/png")),
        ],
        "two masks": [
            ("image", ("a.png", PNG, "image/png")),
            ("mask", ("m.png", PNG, "image/png")),
            ("mask", ("m.png", PNG, "image/png")),
        ],
        "too many images": [("image[]", (f"{i}.png", PNG, "image/png")) for i in range(20)],
    }
    for case, files in cases.items():
        response = client.post(
            "/v1/images/edits", data={"model": "gpt-image-1", "prompt": "p"}, files=files
        )
        assert response.status_code == 400, (case, response.text)
        assert response.json()["error"]["message"], case
    assert fake.hits == before


def test_huge_fields_and_part_floods_are_refused(client, fake) -> None:
    before = fake.hits
    # A prompt far beyond any model's limit, still under the body limit.
    assert refused(edit(client, prompt="x" * 1_500_000))["param"] == "prompt"

    # A body over the limit, streamed without a declared length: 413 while it streams in.
    def chunks() -> Iterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="prompt"\r\n\r\n'
        for _ in range(LIMIT_MB * 4 + 4):
            yield b"y" * (256 * 1024)

    streamed = client.post(
        "/v1/images/edits",
        content=chunks(),
        headers={"content-type": "multipart/form-data; boundary=b"},
    )
    assert refused(streamed, 413)["code"] == "request_too_large"
    flood = multipart([(f"f{i}", None, b"v") for i in range(200)])
    response = client.post(
        "/v1/images/edits",
        content=flood,
        headers={"content-type": "multipart/form-data; boundary=fuzzB0undary"},
    )
    assert "too many form parts" in refused(response)["message"]
    # A header section that never ends (no blank line) inside the size limit.
    endless = b"--fuzzB0undary\r\n" + b"X-Pad: " + b"h" * 500_000
    response = client.post(
        "/v1/images/edits",
        content=endless,
        headers={"content-type": "multipart/form-data; boundary=fuzzB0undary"},
    )
    assert_not_a_server_error(response)
    assert response.status_code == 400
    assert fake.hits == before


def test_memory_stays_bounded_and_the_proxy_keeps_serving(client, proxy, fake) -> None:
    """Runs last in this module: after every hostile body above, and a burst of 2 MB refusals,
    the proxy's resident memory is bounded and a good call still succeeds."""
    baseline = rss_bytes(proxy.pid)
    big = b"z" * (LIMIT_MB * 1024 * 1024 - 4096)
    for _ in range(20):
        response = edit(client, files={"image": ("a.png", big, "image/png")})
        assert_not_a_server_error(response)
    grown = rss_bytes(proxy.pid) - baseline
    assert grown < 64 * 1024 * 1024, f"RSS grew by {grown:,} bytes"
    assert rss_bytes(proxy.pid) < 400 * 1024 * 1024
    good = edit(client)
    assert good.status_code == 200, good.text
    assert json.loads(good.text)["data"]
    assert proxy.process is not None and proxy.process.poll() is None
