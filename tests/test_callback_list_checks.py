"""The callback lists check every entry that goes in, however it goes in, before they change.

Only assigning a list was checked: ``tracking.success_callback += [os.path]`` extended the list in
place before the assignment was refused, so the bad entry stayed and refused every later call,
and ``.append``, ``.extend``, ``.insert`` and item or slice assignment were not checked at all.
"""

from __future__ import annotations

import copy
import os
import pickle
from collections.abc import Callable
from typing import Any

import pytest

import tracking
from tests.conftest import make_png
from tracking.testing import EventRecorder

LISTS = ("success_callback", "failure_callback", "callbacks")


def first(kwargs, response, start_time, end_time):
    pass


def other(kwargs, response, start_time, end_time):
    pass


class Audit(tracking.CustomLogger):
    pass


@pytest.fixture(autouse=True)
def _lists_holding_first(monkeypatch):
    for name in LISTS:
        monkeypatch.setattr(tracking, name, [first])
    yield
    assert tracking.flush(10)


def _plus_equals(name: str, entry: Any) -> None:
    """``tracking.<name> += [other, entry]``, spelled out as Python runs it."""
    value = getattr(tracking, name)
    value += [other, entry]
    setattr(tracking, name, value)


def _at(name: str) -> list[Any]:
    value: list[Any] = getattr(tracking, name)
    return value


#: Each way of adding an entry to a list holding ``[first]``: (change, the entry's index, the
#: list afterwards when the entry is good).
PATHS: dict[str, tuple[Callable[[str, Any], None], int, Callable[[Any], list[Any]]]] = {
    "append": (lambda n, e: _at(n).append(e), 1, lambda e: [first, e]),
    "extend": (lambda n, e: _at(n).extend([other, e]), 2, lambda e: [first, other, e]),
    "+=": (_plus_equals, 2, lambda e: [first, other, e]),
    "insert": (lambda n, e: _at(n).insert(0, e), 0, lambda e: [e, first]),
    "insert past the end": (lambda n, e: _at(n).insert(9, e), 1, lambda e: [first, e]),
    "insert from the end": (lambda n, e: _at(n).insert(-9, e), 0, lambda e: [e, first]),
    "item": (lambda n, e: _at(n).__setitem__(0, e), 0, lambda e: [e]),
    "item from the end": (lambda n, e: _at(n).__setitem__(-1, e), 0, lambda e: [e]),
    "slice": (
        lambda n, e: _at(n).__setitem__(slice(1, None), [other, e]),
        2,
        lambda e: [first, other, e],
    ),
    "slice at the front": (
        lambda n, e: _at(n).__setitem__(slice(0, 0), [e]),
        0,
        lambda e: [e, first],
    ),
    "extended slice": (
        lambda n, e: _at(n).__setitem__(slice(None, None, -1), [e]),
        0,
        lambda e: [e],
    ),
}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", LISTS)
@pytest.mark.parametrize(
    ("bad", "given"),
    [(os.path, "not a callback: the module 'posixpath'"), ("promethus", "unknown callback")],
)
def test_each_way_of_adding_refuses_a_bad_entry_and_leaves_the_list_as_it_was(
    name, path, bad, given
):
    change, index, _ = PATHS[path]
    before = _at(name)
    with pytest.raises(tracking.ConfigurationError) as refused:
        change(name, bad)
    message = str(refused.value)
    assert message.startswith(f"tracking.{name}[{index}]: ") and given in message, message
    assert _at(name) is before and before == [first]  # nothing added, nothing replaced
    tracking.register()  # what the calls read: the three lists are good


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "good",
    [other, "prometheus", Audit(), EventRecorder()],
    ids=["function", "name", "logger", "integration"],
)
def test_each_way_of_adding_takes_a_good_entry(path, good):
    change, _, expected = PATHS[path]
    change("success_callback", good)
    assert tracking.success_callback == expected(good)
    with pytest.raises(tracking.ConfigurationError):  # still the checked list
        tracking.success_callback.append(None)


def test_a_call_after_a_refused_plus_equals_still_works(upstream):
    """The reported case: the ``+=`` was refused, yet ``os.path`` stayed in the list and
    refused every call after it."""
    seen = []

    def on_success(kwargs, response, start_time, end_time):
        seen.append(kwargs["request_id"])

    tracking.success_callback = [on_success]
    with pytest.raises(tracking.ConfigurationError, match=r"^tracking\.success_callback\[1\]: "):
        tracking.success_callback += [os.path]
    assert tracking.success_callback == [on_success]
    response = tracking.image_edit(
        image=make_png(), prompt="a hat", model="gpt-image-1", **upstream
    )
    assert tracking.flush(10)
    assert seen == [response.request_id]


def test_a_name_or_a_lone_entry_given_to_extend_is_one_entry():
    """As assigning takes it: a name, not its letters (each an unknown callback)."""
    tracking.callbacks.extend("prometheus")
    tracking.callbacks += other
    tracking.callbacks[:0] = "otel"
    assert tracking.callbacks == ["otel", first, "prometheus", other]


def test_assigning_keeps_a_checked_copy():
    """``tracking.success_callback = mine`` keeps a copy: adding to ``mine`` later changes
    nothing the calls read; add to ``tracking.success_callback`` itself."""
    mine = [first]
    tracking.success_callback = mine
    assert tracking.success_callback == mine and tracking.success_callback is not mine
    mine.append(other)
    assert tracking.success_callback == [first]
    tracking.success_callback.append(other)
    assert tracking.success_callback == [first, other]
    with pytest.raises(tracking.ConfigurationError, match=r"success_callback\[2\]"):
        tracking.success_callback.append(42)


def test_one_list_assigned_to_another_is_a_copy_named_for_its_new_place():
    tracking.failure_callback = tracking.success_callback
    assert tracking.failure_callback == [first]
    assert tracking.failure_callback is not tracking.success_callback
    with pytest.raises(tracking.ConfigurationError, match=r"^tracking\.failure_callback\[1\]: "):
        tracking.failure_callback.append(42)
    tracking.failure_callback.append(other)
    assert tracking.success_callback == [first]


def test_a_deleted_list_is_an_empty_checked_list(upstream):
    """``del tracking.success_callback`` left the module without the list, and the next call
    failed with an ``AttributeError``: it is now an empty list, still checked, and calls go on."""
    del tracking.success_callback
    assert tracking.success_callback == [] and tracking.failure_callback == [first]
    response = tracking.image_edit(
        image=make_png(), prompt="a hat", model="gpt-image-2", **upstream
    )
    assert response.data
    with pytest.raises(tracking.ConfigurationError, match=r"^tracking\.success_callback\[0\]: "):
        tracking.success_callback.append(os.path)
    assert tracking.success_callback == []


def test_none_or_a_lone_entry_assigned_is_a_checked_list():
    tracking.failure_callback = None
    tracking.callbacks = "prometheus"
    assert tracking.failure_callback == [] and tracking.callbacks == ["prometheus"]
    tracking.failure_callback.append(first)
    assert tracking.failure_callback == [first]
    for name in ("failure_callback", "callbacks"):
        with pytest.raises(tracking.ConfigurationError, match=rf"^tracking\.{name}\[1\]: "):
            _at(name).append(os.path)


def test_a_list_put_back_is_the_same_list(monkeypatch):
    """What ``monkeypatch`` (or a test's own undo) puts back is kept as it is, not copied."""
    original = tracking.callbacks
    with monkeypatch.context() as patch:
        patch.setattr(tracking, "callbacks", [other])
        assert tracking.callbacks == [other]
    assert tracking.callbacks is original and original == [first]


def test_the_lists_still_behave_as_lists():
    lst = tracking.success_callback
    lst.append("prometheus")
    assert lst == [first, "prometheus"] and [first, "prometheus"] == lst
    assert repr(lst) == repr([first, "prometheus"])
    added = lst + [42]  # noqa: RUF005 - the operator itself is what is tested
    assert added == [first, "prometheus", 42]  # a new plain list: the calls never read it
    for made in (list(lst), added, lst * 2, lst[:], lst.copy()):
        assert type(made) is list  # a plain list, unchecked
    lst *= 2
    assert lst == [first, "prometheus"] * 2
    lst.remove("prometheus")
    del lst[1]
    lst.reverse()
    assert lst == ["prometheus", first] and tracking.success_callback is lst
    del lst[:]
    assert tracking.success_callback == []
    lst.append(first)
    lst.clear()
    tracking.failure_callback = []
    assert tracking.success_callback == [] and tracking.failure_callback == []


def test_a_copied_or_pickled_list_is_still_checked():
    tracking.callbacks.append("prometheus")
    for made in (
        copy.copy(tracking.callbacks),
        copy.deepcopy(tracking.callbacks),
        pickle.loads(pickle.dumps(tracking.callbacks)),
    ):
        assert made == [first, "prometheus"] and made is not tracking.callbacks
        with pytest.raises(tracking.ConfigurationError, match=r"^tracking\.callbacks\[2\]: "):
            made.append(os.path)
        assert made == [first, "prometheus"]
