"""A generic name → object registry (timm's decorator, with metadata as a dataclass).

One class serves every family: models, optimizers, schedulers, transforms.

>>> from cellbench._registry import Registry
>>> COLORS = Registry("color")
>>> COLORS.register("red", "#f00")
'#f00'
>>> COLORS.get("red")
'#f00'
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

from ._spaces import Dist
from ._utils import unknown_name_error
from .exceptions import InvalidParameterError

__all__ = ["ModelSpec", "Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Map names to objects; unknown names raise with a did-you-mean suggestion.

    Parameters
    ----------
    kind : str
        What the registry holds, used in messages ("model", "optimizer").
    hint : str, optional
        Appended to unknown-name errors, e.g. "Run `cellbench models` to list them."
    """

    def __init__(self, kind: str, hint: str | None = None) -> None:
        self.kind = kind
        self.hint = hint
        self._items: dict[str, T] = {}

    def register(self, name: str, obj: T, *, override: bool = False) -> T:
        """Add ``obj`` under ``name``; a duplicate raises unless ``override``."""
        if name in self._items and not override:
            raise InvalidParameterError(
                f"{self.kind} name {name!r} must be unique; it is already registered. "
                "Pass override=True to replace it."
            )
        self._items[name] = obj
        return obj

    def get(self, name: str) -> T:
        """Return the object registered as ``name``."""
        if not isinstance(name, str):
            raise InvalidParameterError(
                f"{self.kind} name must be a string; got {type(name).__name__} {name!r}."
            )
        try:
            return self._items[name]
        except KeyError:
            hint = self.hint
            if hint and "{n}" in hint:
                hint = hint.format(n=len(self._items))
            raise unknown_name_error(self.kind, name, self._items, hint) from None

    def list(self, pattern: str = "*") -> list[str]:
        """Registered names matching the shell-style ``pattern``, sorted."""
        return sorted(n for n in self._items if fnmatch.fnmatchcase(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())


@dataclass(frozen=True)
class ModelSpec:
    """Everything cellbench knows about a registered model.

    Attributes
    ----------
    name : str
        Registry key, ``{arch}{size}[-variant]`` (``mlp``, ``cnn1d-seed``, ``resnet8``).
    factory : callable
        Builds the model. ``nn`` models take ``n_features`` (tables) or ``in_chans`` and
        ``img_size`` (images), plus ``n_classes`` and the model's own keyword arguments.
        Other families take ``n_classes`` and ``random_state``.
    input_kind : {"tabular", "image", "any"}
        What data the model accepts.
    family : {"nn", "baseline", "gbdt"}
        ``nn`` models are trained by :func:`cellbench.train.engine.fit`; the others fit
        themselves.
    defaults : mapping
        Keyword arguments applied before the user's (how presets differ from their base).
    search_space : mapping of str to Dist
        Tunable model arguments, printed before a study starts.
    summary : str
        One line for ``cellbench models``.
    """

    name: str
    factory: Callable[..., Any]
    input_kind: Literal["tabular", "image", "any"]
    family: Literal["nn", "baseline", "gbdt"]
    defaults: Mapping[str, Any] = field(default_factory=dict)
    search_space: Mapping[str, Dist] = field(default_factory=dict)
    summary: str = ""
