"""Type checks of setting values, shared by the configuration and model arguments: what a
value is, for messages, and booleans, texts and lists of texts checked (numbers made text).

>>> problems = []
>>> class S:
...     dropna = "false"
>>> check_bools(S(), "data", ("dropna",), problems)
>>> problems[0].split(";")[0]
'data.dropna must be true or false'
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Iterable, Mapping
from typing import Any

from ._utils import split_top_level
from .exceptions import InvalidParameterError

__all__ = ["as_tuple", "check_bools", "check_cofactors", "check_names", "check_texts", "is_bool",
           "kind_of", "raise_all"]


def raise_all(owner: str, problems: list[str]) -> None:
    """Raise one error listing ``problems`` (none: nothing)."""
    if problems:
        if len(problems) == 1:
            raise InvalidParameterError(problems[0])
        raise InvalidParameterError(
            f"{owner} has {len(problems)} invalid settings:\n  - " + "\n  - ".join(problems)
        )


def kind_of(value: Any) -> str:
    """What a value is, for messages: ``'false' (a string)``, ``['a'] (a list)``."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, numbers.Integral):
        return "an int"
    if isinstance(value, numbers.Real):
        return "a number"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return f"a {type(value).__name__}"


def is_bool(value: Any) -> bool:
    return isinstance(value, bool) or type(value).__name__ == "bool_"  # numpy's too


def _dotted(section: str, name: str) -> str:
    return f"{section}.{name}" if section else name


def check_bools(obj: Any, section: str, names: Iterable[str], problems: list[str]) -> None:
    """Booleans must be real booleans: YAML reads ``"false"`` (quoted) as text, which Python
    would take as true."""
    for name in names:
        value = getattr(obj, name)
        if is_bool(value):
            object.__setattr__(obj, name, bool(value))
            continue
        fix = (f"Write it without quotes ({name}: {value.strip().lower()})"
               if isinstance(value, str) and value.strip().lower() in ("true", "false")
               else f"Write {name}: true or {name}: false")
        problems.append(f"{_dotted(section, name)} must be true or false; got {value!r} "
                        f"({kind_of(value)}). {fix}, or True/False in Python.")


def check_texts(obj: Any, section: str, names: Mapping[str, str], problems: list[str],
                 paths: bool = False) -> None:
    """Text settings (``name -> what it must be``) must be text: a number (YAML reads a
    column named 5 as an int) becomes its text, a path (``paths``) its string; a list, a
    mapping or a boolean is refused."""
    for name, what in names.items():
        value = getattr(obj, name)
        if value is None or isinstance(value, str):
            continue
        if paths and isinstance(value, os.PathLike):
            object.__setattr__(obj, name, os.fspath(value))
        elif isinstance(value, numbers.Real) and not is_bool(value):
            object.__setattr__(obj, name, str(value))
        elif is_bool(value) or isinstance(value, (list, tuple, set, Mapping)):
            fix = (" Give one, not a list." if isinstance(value, (list, tuple, set))
                   else " Quote it if it is a name (YAML reads yes/no/on/off as booleans)."
                   if is_bool(value) else "")
            problems.append(f"{_dotted(section, name)} must be {what}; got {value!r} "
                            f"({kind_of(value)}).{fix}")


def check_names(obj: Any, section: str, names: Mapping[str, str], problems: list[str]) -> None:
    """List settings (tuples after ``__post_init__``) must hold text; numbers become text."""
    for name, what in names.items():
        items = getattr(obj, name)
        if isinstance(items, Mapping) or not isinstance(items, tuple):
            problems.append(f"{_dotted(section, name)} must be a list of {what}; got {items!r} "
                            f"({kind_of(items)}).")
            continue
        bad = [v for v in items if not isinstance(v, str)
               and (is_bool(v) or not isinstance(v, numbers.Real))]
        if bad:
            problems.append(f"{_dotted(section, name)} must be a list of {what}; got {bad[0]!r} "
                            f"({kind_of(bad[0])}) in it.")
        elif any(not isinstance(v, str) for v in items):
            object.__setattr__(obj, name, tuple(str(v) for v in items))


def check_cofactors(cofactor: Any, cofactors: Mapping[str, Any], problems: list[str]) -> None:
    """The arcsinh cofactors: of every channel (``data.cofactor``) and per channel."""
    for name, value in [(None, cofactor), *cofactors.items()]:
        if value is not None and (is_bool(value) or not isinstance(value, (int, float))
                                  or value <= 0):
            problems.append((f"data.cofactors: the arcsinh cofactor of channel {name!r}"
                             if name else "data.cofactor (--cofactor), the arcsinh cofactor "
                             "of every channel,") + f" must be a number > 0; got {value!r}.")


def as_tuple(value: Any, name: str = "a list setting") -> tuple:
    """A list setting as a tuple: text is split at top-level commas, a number is one item."""
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(split_top_level(value))
    if isinstance(value, (int, float)):  # --set data.exclude_labels=0 (YAML reads a number)
        return (str(value),)
    if isinstance(value, Mapping):
        raise InvalidParameterError(f"{name} must be a list or comma-separated text; got a "
                                    f"mapping {dict(value)!r}.")
    return tuple(value)
