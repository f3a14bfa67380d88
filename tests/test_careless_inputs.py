"""Careless arguments (a file opened in text mode or already closed, ``metadata`` or
``extra_body`` that is not a dict, a size in full-width digits) are a ``ValidationError``
naming the parameter, before anything is sent, the same on the sync and async paths: never an
untyped ``UnicodeDecodeError`` / ``ValueError`` / ``TypeError`` from inside the library."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import tracking
from tests.conftest import edit_either
from tests.ledger_support import open_ledger
from tests.recorder import record_events
from tracking.events import MAX_METADATA_SIZE
from tracking.integrations.sql import spend_logs
from tracking.testing.fake_images import solid_png

PNG = solid_png(256, 256, (10, 20, 30))


def _call(use_async: bool, **kwargs: Any) -> Any:
    params: dict[str, Any] = {"model": "gpt-image-2", "image": PNG, "prompt": "x", **kwargs}
    return edit_either(use_async, **params)


def _refused(fake, upstream, use_async: bool, **kwargs: Any) -> tracking.ValidationError:
    hits = fake.hits
    with pytest.raises(tracking.ValidationError) as caught:
        _call(use_async, **upstream, **kwargs)
    assert fake.hits == hits  # nothing was sent
    return caught.value


@pytest.fixture
def png_path(tmp_path: Path) -> Path:
    path = tmp_path / "image.png"
    path.write_bytes(PNG)
    return path


@pytest.mark.parametrize("use_async", [False, True])
def test_a_file_open_in_text_mode_says_open_it_with_rb(fake, upstream, png_path, use_async):
    with png_path.open() as handle:  # text mode, the default
        error = _refused(fake, upstream, use_async, image=handle)
    assert error.param == "image" and "'rb'" in error.message


@pytest.mark.parametrize("use_async", [False, True])
def test_a_closed_file_is_refused_naming_the_parameter(fake, upstream, png_path, use_async):
    handle = png_path.open("rb")
    handle.close()
    error = _refused(fake, upstream, use_async, image=handle)
    assert error.param == "image" and error.rule == "file" and "closed" in error.message
    mask = png_path.open("rb")
    mask.close()
    error = _refused(fake, upstream, use_async, mask=mask)
    assert error.param == "mask" and error.rule == "file"


class _BrokenFile:
    name = "broken.png"

    def read(self, size: int = -1) -> bytes:
        raise OSError(5, "Input/output error")


@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize(
    ("key", "value"),
    [("model", "gpt-image-1"), ("size", "1536x1024"), ("n", 3), ("quality", "high")],
)
def test_extra_body_may_not_set_a_parameter_the_call_is_priced_by(
    fake, upstream, use_async, key, value
):
    # Sent after the call's own fields, the upstream took extra_body's model (or size, n,
    # quality) and billed it, while the ledger recorded and priced the call's own.
    error = _refused(fake, upstream, use_async, extra_body={key: value})
    assert error.param == "extra_body" and repr(key) in str(error) and f"{key}=" in str(error)
    # A parameter this version does not know still goes through, as does a nested same name.
    response = _call(use_async, **upstream, extra_body={"style": {"model": "x"}})
    assert response.data


@pytest.mark.parametrize("use_async", [False, True])
def test_a_file_that_fails_to_read_is_refused_naming_the_parameter(fake, upstream, use_async):
    error = _refused(fake, upstream, use_async, image=_BrokenFile())
    assert error.param == "image" and error.rule == "file"


@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize("name", ["metadata", "extra_body"])
@pytest.mark.parametrize("value", ["x", [1], [("a", 1)], 5, {1: "a"}])
def test_metadata_and_extra_body_must_be_dicts(fake, upstream, monkeypatch, use_async, name, value):
    recorder = record_events(monkeypatch)
    error = _refused(fake, upstream, use_async, **{name: value})
    assert error.param == name and error.rule == "type"
    assert recorder.last.error_type == "validation_error"


@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize(
    ("model", "size"),
    [
        ("gpt-image-2", "\uff11\uff10\uff12\uff14x\uff11\uff10\uff12\uff14"),  # full-width
        ("gpt-image-2", "1024x1024\u00b2"),
        ("gpt-image-2", "\u0661\u0660\u0662\u0664x1024"),  # Arabic-Indic digits
        ("some-new-model", "\uff11\uff10\uff12\uff14x\uff11\uff10\uff12\uff14"),  # no family
        ("gpt-image-1", "1024x1024\n"),
    ],
)
def test_a_size_must_be_ascii(fake, upstream, use_async, model, size):
    error = _refused(fake, upstream, use_async, model=model, size=size)
    assert error.param == "size" and error.rule == "format"


@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize(
    "image",
    [
        (b"photo.png", PNG),  # a filename in bytes
        (3, PNG),
        ("photo.png", PNG, "image/png\r\nX-Injected: 1"),  # a header smuggled into the part
        ("photo.png", PNG, "image/png\x00"),
        ("photo.png", PNG, 5),
    ],
)
def test_a_tuples_filename_and_content_type_must_be_text(fake, upstream, use_async, image):
    error = _refused(fake, upstream, use_async, image=image)
    assert error.param == "image" and error.rule == "type"


@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize(
    "extra_body",
    [{"": "v"}, {"a\x00b": "v"}, {"a\nb": "v"}, {"a\ud800": "v"}, {"style": "a\ud800b"}],
)
def test_extra_body_that_no_form_can_carry_is_refused(fake, upstream, use_async, extra_body):
    error = _refused(fake, upstream, use_async, extra_body=extra_body)
    assert error.param == "extra_body"


@pytest.mark.parametrize("use_async", [False, True])
def test_a_filename_with_control_characters_or_a_lone_surrogate_is_escaped_and_sent(
    fake, upstream, use_async
):
    # A file name is only a label, but a NUL in a part's header made servers answer 500 (and the
    # call was retried and billed as failed): now escaped as browsers escape `"`, CR and LF.
    for filename, sent in [
        ('a\x00b\x7f"c\r\n.png', "a%00b%7F%22c%0D%0A.png"),
        ("caf\udce9.png", "caf?.png"),  # os.fsdecode of a Latin-1 name on a UTF-8 system
    ]:
        before = len(fake.requests)
        response = _call(use_async, **upstream, image=(filename, PNG))
        assert response.cost_usd is not None
        (request,) = fake.requests[before:]
        assert [f[1] for f in request.files] == [sent]


def _self_holding() -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    metadata["self"] = metadata
    return metadata


def _deep(levels: int) -> list[Any]:
    nested: list[Any] = []
    for _ in range(levels):
        nested = [nested]
    return nested


@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize("metadata", [_self_holding(), {"d": _deep(2000)}], ids=["self", "deep"])
def test_metadata_that_never_ends_is_refused_with_its_failure_event(
    fake, upstream, monkeypatch, use_async, metadata
):
    # A RecursionError escaped from freezing the metadata, and the call left no event (no row).
    recorder = record_events(monkeypatch)
    error = _refused(fake, upstream, use_async, metadata=metadata)
    assert error.param == "metadata" and "deeper than" in error.message
    assert [(e.status, e.error_type) for e in recorder.events] == [("failure", "validation_error")]


@contextmanager
def _ledger(tmp_path: Path) -> Iterator[Any]:
    """A durable SQLite ledger among the callbacks while the block runs."""
    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}", mode="durable")
    tracking.callbacks.append(ledger)
    try:
        yield ledger
    finally:
        tracking.callbacks.remove(ledger)
        ledger.shutdown(10)


def _refused_with_row(fake, upstream, use_async, tmp_path, metadata):
    """A call refused for its metadata, and the one ledger row it left (status, metadata)."""
    with _ledger(tmp_path) as ledger:
        error = _refused(fake, upstream, use_async, metadata=metadata)
        with ledger.engine.connect() as conn:
            row = conn.execute(sa.select(spend_logs.c.status, spend_logs.c.metadata)).one()
    return error, row


@pytest.mark.parametrize("use_async", [False, True])
def test_an_integer_team_id_is_recorded_as_its_text(
    fake, upstream, monkeypatch, tmp_path, use_async
):
    # metadata={"team": 5} was recorded as no team (NULL in the ledger) without a word.
    recorder = record_events(monkeypatch)
    with _ledger(tmp_path) as ledger:
        response = _call(use_async, **upstream, metadata={"team": 5, "tags": ["prod", "7"]})
        with ledger.engine.connect() as conn:
            row = conn.execute(
                sa.select(spend_logs.c.team, spend_logs.c.tags).where(
                    spend_logs.c.request_id == response.request_id
                )
            ).one()
    assert (recorder.last.team, recorder.last.tags) == ("5", ("prod", "7"))
    assert recorder.last.metadata["team"] == 5  # the caller's metadata as given
    assert row.team == "5" and row.tags == ["prod", "7"]


@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize(
    ("metadata", "param", "rule"),
    [
        ({"team": True}, "metadata.team", "type"),
        ({"team": 1.5}, "metadata.team", "type"),
        ({"team": ["design"]}, "metadata.team", "type"),
        ({"team": 2**64}, "metadata.team", "range"),
        ({"tags": "prod"}, "metadata.tags", "type"),
        ({"tags": {"prod", "eu"}}, "metadata.tags", "type"),
        ({"tags": ["prod", None]}, "metadata.tags", "type"),
        ({"tags": [{"env": "prod"}]}, "metadata.tags", "type"),
        ({"tags": {"env": "prod"}}, "metadata.tags", "type"),
        ({"tags": ["prod", 7]}, "metadata.tags", "type"),
    ],
    ids=["bool", "float", "list", "huge", "text", "set", "none", "dict", "object", "int-tag"],
)
def test_a_team_or_tags_that_cannot_be_recorded_are_refused_with_the_failure_event(
    fake, upstream, monkeypatch, use_async, metadata, param, rule
):
    # Each was recorded as no team or no tags (or a dict's repr) without a word. (A tag too
    # long to write as text is refused with the rest of the metadata: the test below.)
    recorder = record_events(monkeypatch)
    error = _refused(fake, upstream, use_async, metadata={**metadata, "team_name": "x"})
    assert error.param == param and error.rule == rule and error.message.startswith(param)
    assert "mappingproxy" not in error.message  # the frozen copy's type is no name of the caller's
    assert [(e.status, e.error_type) for e in recorder.events] == [("failure", "validation_error")]
    assert recorder.last.metadata["team_name"] == "x"  # the rest of the metadata is kept


@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize(
    ("tags", "named"),
    [
        ([1, 2], 'metadata.tags[0]: each tag must be a string, got int 1; write it as "1"'),
        (["prod", 7], 'metadata.tags[1]: each tag must be a string, got int 7; write it as "7"'),
        (("prod", "eu", True), "metadata.tags[2]: each tag must be a string, got bool"),
        (["prod", 2**70], "metadata.tags[1]: each tag must be a string, got int"),
        (["prod", ["eu"]], "metadata.tags[1]: each tag must be a string, got a list"),
    ],
    ids=["ints", "one-int", "bool", "huge-int", "nested-list"],
)
def test_a_tag_that_is_no_string_is_refused_naming_it(
    fake, upstream, monkeypatch, use_async, tags, named
):
    """LiteLLM's tags are strings (its ``request_tags``, the ``x-litellm-tags`` header's):
    ``tags=[1, 2]`` was recorded as ``["1", "2"]`` while the error for a bad tag said strings.
    Refused, the message naming the first tag that is none by its place."""
    recorder = record_events(monkeypatch)
    error = _refused(fake, upstream, use_async, metadata={"tags": tags})
    assert (error.param, error.rule, error.code) == ("metadata.tags", "type", "invalid_type")
    assert error.message == named
    assert [(e.status, e.error_type, e.tags) for e in recorder.events] == [
        ("failure", "validation_error", ())
    ]


@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize(
    ("tags", "named"),
    [
        (["prod", "x" * 5000], "metadata.tags[1]: at most 256 characters, got 5,000"),
        ([f"t{n}" for n in range(65)], "metadata.tags: at most 64 tags, got 65"),
    ],
    ids=["long-tag", "too-many"],
)
def test_tags_past_their_bounds_are_refused_naming_them(
    fake, upstream, monkeypatch, use_async, tags, named
):
    """A 5,000-character tag was stored in the ledger (and 10,000 tags would have been): at
    most 64 tags of at most 256 characters each, as ``/global/spend/tags`` bounds a tag."""
    recorder = record_events(monkeypatch)
    error = _refused(fake, upstream, use_async, metadata={"tags": tags})
    assert (error.param, error.rule) == ("metadata.tags", "max_length")
    assert error.message == named
    assert [(e.status, e.error_type, e.tags) for e in recorder.events] == [
        ("failure", "validation_error", ())
    ]


def test_tags_at_their_bounds_are_recorded(fake, upstream, monkeypatch):
    recorder = record_events(monkeypatch)
    tags = ["x" * 256, *(f"t{n}" for n in range(63))]
    _call(False, **upstream, metadata={"tags": tags})
    assert recorder.last.tags == tuple(tags)


_LIMIT = MAX_METADATA_SIZE


@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize(
    "metadata",
    [
        {"text": "x" * (_LIMIT + 1)},
        {"bytes": b"x" * (_LIMIT + 1)},
        {"x" * (_LIMIT + 1): 1},
        {"many": [None] * _LIMIT},
        {"spread": [{"part": "x" * 1000}] * 70},
        {"set": frozenset({"x" * (_LIMIT + 1)})},
    ],
    ids=["text", "bytes", "key", "many-values", "spread", "set-member"],
)
def test_metadata_over_the_size_limit_is_refused_with_its_failure_event(
    fake, upstream, monkeypatch, use_async, metadata
):
    recorder = record_events(monkeypatch)
    error = _refused(fake, upstream, use_async, metadata=metadata)
    assert error.param == "metadata" and error.rule == "max_size"
    assert f"{_LIMIT:,}" in error.message and "64 KiB" in error.message
    assert [(e.status, e.error_type) for e in recorder.events] == [("failure", "validation_error")]
    assert recorder.last.metadata == {}  # the event (and its row) goes without it


@pytest.mark.parametrize("use_async", [False, True])
def test_a_50_mb_metadata_value_is_refused_and_its_row_kept_without_it(
    fake, upstream, monkeypatch, tmp_path, use_async
):
    # It was stored whole: in the event, every callback's copy and the ledger row.
    recorder = record_events(monkeypatch)
    error, row = _refused_with_row(fake, upstream, use_async, tmp_path, {"blob": "x" * (50 << 20)})
    assert error.param == "metadata" and error.rule == "max_size"
    assert recorder.last.request_id and (row.status, row.metadata) == ("failure", {})


@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize("where", ["value", "list", "key"])
def test_an_integer_no_encoder_can_write_is_refused_and_its_row_kept(
    fake, upstream, monkeypatch, tmp_path, use_async, where
):
    # Python writes no int over 4,300 digits as text: the ledger logged a ValueError and the
    # call's row was lost.
    huge = 10**5000
    metadata = {"value": {"x": huge}, "list": {"x": [1, huge]}, "key": {"x": {huge: 1}}}[where]
    recorder = record_events(monkeypatch)
    error, row = _refused_with_row(fake, upstream, use_async, tmp_path, metadata)
    assert error.param == "metadata" and "integer" in str(error)
    assert recorder.last.request_id and (row.status, row.metadata) == ("failure", {})


@pytest.mark.parametrize("use_async", [False, True])
def test_metadata_under_the_size_limit_is_recorded_whole(fake, upstream, monkeypatch, use_async):
    recorder = record_events(monkeypatch)
    metadata = {"text": "x" * (_LIMIT - 100), "ids": list(range(20)), "team": "design"}
    _call(use_async, **upstream, metadata=metadata)
    assert recorder.last.status == "success"
    assert recorder.last.metadata["text"] == metadata["text"]
    assert recorder.last.metadata["ids"] == tuple(range(20))


@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize("operation", ["image_edit", "image_generation"])
@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ({1, 2}, "type"),
        (b"raw", "type"),
        (object(), "type"),
        ([1, {"deep": frozenset()}], "type"),
        (float("nan"), "range"),
        (float("inf"), "range"),
        (10**5000, "range"),
    ],
    ids=["set", "bytes", "object", "nested", "nan", "inf", "huge-int"],
)
def test_an_extra_body_value_no_body_can_carry_is_refused_and_seen_by_failure_callbacks(
    fake, upstream, monkeypatch, use_async, operation, value, rule
):
    # A generation's JSON body failed to encode with an untyped TypeError (a set, bytes) or
    # ValueError (an integer past 4,300 digits), recorded as an internal_error; an edit's form
    # sent str(value) ("{1, 2}") or failed the same way.
    recorder = record_events(monkeypatch)
    failures: list[BaseException] = []
    monkeypatch.setattr(
        tracking, "failure_callback", [lambda kwargs, *_: failures.append(kwargs["exception"])]
    )
    hits = fake.hits
    params: dict[str, Any] = {"model": "gpt-image-2", "prompt": "x", **upstream}
    params["extra_body"] = {"style": value}
    if operation == "image_edit":
        run = functools.partial(_call, use_async, **params)
    elif use_async:
        run = functools.partial(asyncio.run, tracking.aimage_generation(**params))
    else:
        run = functools.partial(tracking.image_generation, **params)
    with pytest.raises(tracking.ValidationError) as caught:
        run()
    assert fake.hits == hits
    assert caught.value.param == "extra_body" and caught.value.rule == rule
    assert ("'deep'" if isinstance(value, list) else "'style'") in caught.value.message
    assert tracking.flush(10)
    (event,) = recorder.events
    assert event.error_type == "validation_error" and event.cost_usd == 0
    assert failures == [caught.value]
    if operation == "image_edit":  # what a body carries still goes through, nested too
        params["extra_body"] = {"style": [1, 2.5, True, None, "x", {"k": -(10**100)}]}
        assert _call(use_async, **params).data


@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Content-Length", "3"),
        ("content-type", "text/plain"),
        ("Transfer-Encoding", "chunked"),
        ("Connection", "close"),
    ],
)
def test_extra_headers_may_not_frame_the_body(fake, upstream, monkeypatch, use_async, name, value):
    # Content-Length failed inside the HTTP client with an untyped h11 LocalProtocolError
    # (recorded as an internal_error); Transfer-Encoding sent a request with both a length and
    # chunked encoding; a Content-Type of the caller's lost the multipart boundary.
    recorder = record_events(monkeypatch)
    error = _refused(fake, upstream, use_async, extra_headers={name: value})
    assert error.param == "extra_headers" and error.rule == "unsupported"
    assert repr(name) in error.message
    assert tracking.flush(10)
    (event,) = recorder.events
    assert event.error_type == "validation_error"
    # Other headers still go through.
    assert _call(use_async, **upstream, extra_headers={"X-Request-Tag": "a"}).data


class _StreamThatBreaks:
    """A file-like stream (a download, an archive member) whose read fails with an error of its
    own library, which is neither an OSError nor a ValueError."""

    name = "stream.png"

    def __init__(self, error: Exception) -> None:
        self.error = error

    @property
    def closed(self) -> bool:
        raise RuntimeError("this stream cannot say")

    def read(self, size: int = -1) -> bytes:
        raise self.error


class _ReadTimeoutError(Exception):
    """What urllib3 raises when a streamed body stops arriving (not a builtin TimeoutError)."""


@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize(
    "error", [RuntimeError("stream broke"), KeyError("part"), _ReadTimeoutError("read timed out")]
)
def test_any_error_reading_a_file_object_is_a_validation_error_the_failure_callbacks_see(
    fake, upstream, monkeypatch, use_async, error
):
    # They escaped as themselves, recorded as the library's own internal_error.
    recorder = record_events(monkeypatch)
    failures: list[BaseException] = []
    monkeypatch.setattr(
        tracking, "failure_callback", [lambda kwargs, *_: failures.append(kwargs["exception"])]
    )
    refused = _refused(fake, upstream, use_async, image=_StreamThatBreaks(error))
    assert refused.param == "image" and refused.rule == "file"
    assert type(error).__name__ in refused.message
    assert tracking.flush(10)
    (event,) = recorder.events
    assert event.error_type == "validation_error"
    assert failures == [refused]


@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize(
    ("name", "value", "rule"),
    [
        ("user", "u" * 257, "max_length"),
        ("safety_identifier", "s" * 1000, "max_length"),
        ("model", "gpt-image-2" + "x" * 250, "max_length"),
        ("user", "alice\nbob", "format"),
        ("safety_identifier", "id\x00", "format"),
        ("user", "tab\there", "format"),
    ],
)
def test_end_user_ids_and_model_names_follow_the_proxys_rule(
    fake, upstream, monkeypatch, use_async, name, value, rule
):
    # Unbounded, a long id was sent and billed, and its ledger row refused by PostgreSQL
    # (an index entry past 8 KB): set aside in quarantine, out of spend_logs and per-user spend.
    recorder = record_events(monkeypatch)
    error = _refused(fake, upstream, use_async, **{name: value})
    assert error.param == name and error.rule == rule
    assert tracking.flush(10)
    (event,) = recorder.events
    assert event.error_type == "validation_error" and event.cost_usd == 0


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
def test_the_longest_end_user_id_is_a_row_of_spend_logs(
    fake, upstream, tmp_path, monkeypatch, request, dialect
):
    import secrets

    from tracking.proxy.limits import MAX_ID_CHARS
    from tracking.request import MAX_ID_CHARS as SDK_MAX_ID_CHARS

    assert SDK_MAX_ID_CHARS == MAX_ID_CHARS  # one rule for end-user ids, SDK and proxy
    if dialect == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    # Four UTF-8 bytes a character, none repeated in a way an index could compress.
    user = "".join(chr(0x10000 + b) for b in secrets.token_bytes(MAX_ID_CHARS))
    monkeypatch.setenv("TRACKING_OUTBOX_DIR", str(tmp_path / "outbox"))
    ledger = open_ledger(url)
    monkeypatch.setattr(tracking, "callbacks", [ledger])
    try:
        response = _call(False, **upstream, user=user)
        assert tracking.flush(20)
        with ledger.engine.connect() as connection:
            rows = connection.execute(sa.select(spend_logs.c.end_user, spend_logs.c.cost_usd)).all()
        assert [(row.end_user, row.cost_usd) for row in rows] == [(user, response.cost_usd)]
        assert ledger.quarantined_rows == 0
    finally:
        ledger.shutdown(10)


@pytest.mark.parametrize("use_async", [False, True])
@pytest.mark.parametrize(("n", "recorded"), [(3, 3), (10, 10), (11, 1), (0, 1), (True, 1)])
def test_a_refused_calls_event_says_the_n_it_asked_for(
    fake, upstream, monkeypatch, use_async, n, recorded
):
    """A call refused for another parameter (a size in full-width digits) asking for 3 images:
    its failure event said n=1; it says 3, and 1 only when the asked ``n`` is no valid one."""
    recorder = record_events(monkeypatch)
    _refused(fake, upstream, use_async, size="\uff11\uff10\uff12\uff14x1024", n=n)
    assert [(e.status, e.n) for e in recorder.events] == [("failure", recorded)]


@pytest.mark.parametrize(
    ("model", "provider"),
    [
        ("xai/grok-imagine-image", "xai"),
        ("gemini/gemini-3-pro-image", "gemini"),
        ("gpt-image-2", None),
    ],
)
def test_a_refused_calls_event_names_the_provider_its_model_prefix_names(
    fake, upstream, monkeypatch, model, provider
):
    """A call refused before parsing (a size in full-width digits) left ``provider`` empty
    though its model's prefix named it; a bare name (maybe a router's group) names none."""
    recorder = record_events(monkeypatch)
    _refused(fake, upstream, False, model=model, size="\uff11\uff10\uff12\uff14x1024")
    assert [(e.status, e.provider) for e in recorder.events] == [("failure", provider)]
