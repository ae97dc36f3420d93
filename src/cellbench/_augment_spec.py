"""The grammar of image augmentation policies (``flip,rotate=10,mixup=0.2``).

It lives beside the configuration that records a policy, so checking a config needs no image
code; :class:`cellbench.data.augment.Augmenter` applies it.
"""

from __future__ import annotations

from ._utils import did_you_mean
from .exceptions import InvalidParameterError

__all__ = ["AUGMENTATIONS", "TTA_VIEWS", "parse_augment", "trained_symmetries"]

#: test-time augmentation settings, from fewest views to most
TTA_VIEWS = (None, "flip", "d4")


#: name -> (default value, allowed range) ; flags have no value
AUGMENTATIONS: dict[str, tuple[float | None, tuple[float, float] | None]] = {
    "flip": (None, None),
    "rot90": (None, None),
    "rotate": (15.0, (0.0, 180.0)),
    "shift": (0.1, (0.0, 0.5)),
    "crop": (0.8, (0.1, 1.0)),
    "jitter": (0.2, (0.0, 1.0)),
    "noise": (0.05, (0.0, 1.0)),
    "blur": (1.0, (0.1, 5.0)),
    "erase": (0.25, (0.0, 1.0)),
    "mixup": (0.2, (0.01, 10.0)),
    "cutmix": (1.0, (0.01, 10.0)),
}


def parse_augment(spec: str) -> dict[str, float | None]:
    """Check an augmentation policy string and return ``{operation: value or None}``.

    The grammar lives here, beside the config that records the policy, so checking a
    config needs no image code; :class:`cellbench.data.augment.Augmenter` applies it.

    >>> parse_augment("flip,rotate=10")
    {'flip': None, 'rotate': 10.0}
    """
    ops: dict[str, float | None] = {}
    for item in (p.strip() for p in spec.split(",")):
        if not item:
            continue
        name, sep, raw = item.partition("=")
        name = name.strip().lower()
        if name not in AUGMENTATIONS:
            guess = did_you_mean(name, AUGMENTATIONS)
            raise InvalidParameterError(
                f"augmentation must be one of {', '.join(AUGMENTATIONS)}; got {name!r}."
                + (f" Did you mean {guess!r}?" if guess else "")
            )
        default, bounds = AUGMENTATIONS[name]
        if bounds is None:
            if sep:
                raise InvalidParameterError(f"augmentation {name!r} takes no value; got "
                                            f"{item!r}.")
            ops[name] = None
            continue
        try:
            value = float(raw) if sep else float(default)  # type: ignore[arg-type]
        except ValueError:
            raise InvalidParameterError(f"augmentation {name!r} must be a number; got "
                                        f"{raw!r}.") from None
        if not bounds[0] <= value <= bounds[1]:
            raise InvalidParameterError(
                f"augmentation {name} must be in [{bounds[0]:g}, {bounds[1]:g}]; got "
                f"{value:g}."
            )
        ops[name] = value
    return ops


def trained_symmetries(augment: str | None) -> str | None:
    """The test-time views a policy trained the network to be indifferent to: ``d4`` with
    flips and 90-degree turns, ``flip`` with flips, None otherwise (``train.tta=auto``).

    Views the network never saw in training make test-time augmentation worse, not better:
    on BreastMNIST (ultrasound, trained with flips and small rotations) the 8 views of ``d4``
    cost 1-15 points of test accuracy across four networks where the 4 flips cost at most
    half a point
    (``bench/images/recipe_results.md``).

    >>> trained_symmetries("flip,rot90,mixup=0.2"), trained_symmetries("flip,rotate=15")
    ('d4', 'flip')
    """
    ops = parse_augment(augment) if augment else {}
    if "flip" in ops:
        return "d4" if "rot90" in ops else "flip"
    return None
