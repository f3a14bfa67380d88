"""``tracking.frozen.fast_init`` builds the same objects as dataclasses' own ``__init__``."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field

import pytest

from tracking.events import ImageEditEvent, TokenUsage
from tracking.frozen import fast_init, replacing
from tracking.images import ImageFile
from tracking.providers.base import PreparedRequest
from tracking.request import CallOptions, ImageEditRequest


def _twins() -> tuple[type, type]:
    """The same class twice: once as dataclasses makes it, once with fast_init."""

    def make() -> type:
        @dataclass(frozen=True, slots=True)
        class Thing:
            name: str
            size: int = 3
            tags: list[str] = field(default_factory=list)
            note: str | None = field(default=None, kw_only=True)
            weight: float = field(kw_only=True)

        return Thing

    return make(), fast_init(make())


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("a",), {"weight": 1.5}),
        (("a", 7), {"weight": 0.0, "note": "n"}),
        (("a", 7, ["x"]), {"weight": 2.0}),
        ((), {"name": "b", "size": 1, "weight": 3.0}),
    ],
)
def test_fast_init_makes_what_the_dataclass_makes(args, kwargs) -> None:
    plain, fast = _twins()
    expected, got = plain(*args, **kwargs), fast(*args, **kwargs)
    assert dataclasses.astuple(got) == dataclasses.astuple(expected)
    assert repr(got).split("(", 1)[1] == repr(expected).split("(", 1)[1]


def test_default_factories_give_each_object_its_own_value() -> None:
    _, fast = _twins()
    first, second = fast("a", weight=1.0), fast("b", weight=1.0)
    assert first.tags == [] and first.tags is not second.tags


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [((), {"weight": 1.0}), (("a",), {}), (("a", 1, [], "extra"), {"weight": 1.0})],
)
def test_wrong_arguments_fail_like_the_dataclass(args, kwargs) -> None:
    plain, fast = _twins()
    with pytest.raises(TypeError):
        plain(*args, **kwargs)
    with pytest.raises(TypeError):
        fast(*args, **kwargs)


def test_objects_stay_frozen_and_the_signature_is_the_same() -> None:
    plain, fast = _twins()
    thing = fast("a", weight=1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        thing.name = "b"  # type: ignore[misc]
    assert list(inspect.signature(fast).parameters) == list(inspect.signature(plain).parameters)
    assert dataclasses.replace(thing, size=9).size == 9


def test_classes_it_cannot_serve_are_refused() -> None:
    @dataclass(slots=True)
    class Mutable:
        x: int

    @dataclass(frozen=True, slots=True)
    class Checked:
        x: int

        def __post_init__(self) -> None:
            pass

    @dataclass(frozen=True)
    class NoSlots:
        x: int

    for cls in (Mutable, Checked, NoSlots):
        with pytest.raises(TypeError, match="fast_init"):
            fast_init(cls)


@pytest.mark.parametrize(
    "cls", [ImageEditEvent, TokenUsage, ImageEditRequest, CallOptions, ImageFile]
)
def test_the_call_path_classes_keep_every_default(cls: type) -> None:
    """Built with only their required fields, they hold each field's declared default."""
    required = {
        f.name: f"value-{f.name}"
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    obj = cls(**required)
    for f in dataclasses.fields(cls):
        value = getattr(obj, f.name)
        if f.name in required:
            assert value == required[f.name]
        elif f.default is not dataclasses.MISSING:
            assert value == f.default
        else:
            assert value == f.default_factory()  # type: ignore[misc]


@pytest.mark.parametrize("name", ["name", "size", "tags", "note", "weight"])
def test_replacing_makes_what_dataclasses_replace_makes(name: str) -> None:
    """Positional and keyword-only fields alike, with fast_init's __init__ and dataclasses'."""
    values = {"name": "b", "size": 9, "tags": ["y"], "note": None, "weight": 7.5}
    for cls in _twins():
        thing = cls("a", 7, ["x"], weight=2.0, note="n")
        got = replacing(cls, name)(thing, values[name])
        assert dataclasses.astuple(got) == dataclasses.astuple(
            dataclasses.replace(thing, **{name: values[name]})
        )
        assert got is not thing and dataclasses.astuple(thing) == ("a", 7, ["x"], "n", 2.0)


def test_replacing_the_prepared_requests_headers_keeps_every_other_field() -> None:
    prepared = PreparedRequest(
        url="http://up.test/v1/x",
        headers={"a": "1"},
        body=b"body",
        secrets=("s",),
        price_size="1K",
        price_model="m",
        method="GET",
        read=print,
        result=True,
    )
    got = replacing(PreparedRequest, "headers")(prepared, {"b": "2"})
    assert got == dataclasses.replace(prepared, headers={"b": "2"}) and got.read is print


def test_replacing_refuses_what_replace_cannot_do() -> None:
    plain, _ = _twins()
    with pytest.raises(TypeError, match="no field"):
        replacing(plain, "colour")

    @dataclass(frozen=True)
    class Derived:
        x: int
        y: int = field(init=False, default=0)

    with pytest.raises(TypeError, match="every field"):
        replacing(Derived, "x")
