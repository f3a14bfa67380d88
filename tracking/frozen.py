"""A faster ``__init__`` for the frozen, slotted dataclasses built on every call.

A frozen dataclass's generated ``__init__`` sets each field with
``object.__setattr__(self, name, value)``, looking the method up and binding it again for every
field: about 0.1 µs a field, and a proxied call builds some 130 fields of frozen objects (its
event alone has 46). :func:`fast_init` replaces that ``__init__`` with one that calls each slot's
own setter, bound once when the class is decorated: the same fields, defaults, keyword-only
rules and error messages for missing arguments, and the instances stay exactly as frozen
(assignment after construction still raises ``FrozenInstanceError``). It halves the cost of
construction. Classes with ``__post_init__``, ``InitVar`` or ``init=False`` fields are refused:
they would need the rest of dataclasses' machinery.

:func:`replacing` makes the copy with one field changed that ``dataclasses.replace`` makes, for
about 40% of its instructions: ``replace`` looks every field up by its name and calls ``__init__``
with keywords, on every call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["fast_init", "replacing"]

T = TypeVar("T", bound=type)
D = TypeVar("D")


def fast_init(cls: T) -> T:
    """Give a frozen, slotted dataclass a faster ``__init__`` (see the module docstring)."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__}: fast_init takes a frozen dataclass with slots=True")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__}: fast_init does not run __post_init__")
    fields = dataclasses.fields(cls)
    if any(not f.init for f in fields) or len(fields) != len(vars(cls)["__dataclass_fields__"]):
        raise TypeError(f"{cls.__name__}: fast_init needs every field in __init__ (no InitVar)")
    namespace: dict[str, Any] = {"_MISSING": dataclasses.MISSING}
    positional: list[str] = []
    keyword: list[str] = []
    body: list[str] = []
    for field in fields:
        name = field.name
        namespace[f"_set_{name}"] = cls.__dict__[name].__set__
        if field.default is not dataclasses.MISSING:
            namespace[f"_default_{name}"] = field.default
            argument = f"{name}=_default_{name}"
        elif field.default_factory is not dataclasses.MISSING:
            namespace[f"_factory_{name}"] = field.default_factory
            argument = f"{name}=_MISSING"
            body.append(f"    if {name} is _MISSING: {name} = _factory_{name}()")
        else:
            argument = name
        (keyword if field.kw_only else positional).append(argument)
        body.append(f"    _set_{name}(self, {name})")
    arguments = ", ".join(["self", *positional, *(["*", *keyword] if keyword else [])])
    source = f"def __init__({arguments}):\n" + "\n".join(body or ["    pass"]) + "\n"
    exec(source, namespace)  # noqa: S102 - our own field names, checked by dataclasses
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    setattr(cls, "__init__", init)  # noqa: B010 - mypy refuses assigning __init__ directly
    return cls


def replacing(cls: type[D], name: str) -> Callable[[D, Any], D]:
    """``lambda instance, value: dataclasses.replace(instance, **{name: value})`` for the
    dataclass ``cls`` (every field in ``__init__``), without looking its fields up on each call:
    the other fields are read as attributes and passed as ``__init__`` takes them."""
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    if name not in {f.name for f in fields}:
        raise TypeError(f"{cls.__name__} has no field {name!r}")
    if any(not f.init for f in fields) or len(fields) != len(vars(cls)["__dataclass_fields__"]):
        raise TypeError(f"{cls.__name__}: replacing needs every field in __init__ (no InitVar)")
    values = ["value" if f.name == name else f"instance.{f.name}" for f in fields]
    arguments = [
        f"{f.name}={value}" if f.kw_only else value for f, value in zip(fields, values, strict=True)
    ]
    namespace: dict[str, Any] = {"_cls": cls}
    exec(  # noqa: S102 - our own field names, checked by dataclasses
        f"def replaced(instance, value):\n    return _cls({', '.join(arguments)})\n", namespace
    )
    replaced: Callable[[D, Any], D] = namespace["replaced"]
    replaced.__qualname__ = replaced.__name__ = f"{cls.__qualname__}_with_{name}"
    replaced.__module__ = cls.__module__
    return replaced
