"""classes.py - the priority classes' names, written once: what configs, control commands, statistics and reports call them."""

from __future__ import annotations

from prism_xdp.dataplane.native import PRISM_CLASS_HIGH, PRISM_CLASS_LOW, PRISM_NCLASS

# Class 0 is LOW (the default), higher is more urgent; the kernel patch has two.
CLASS_NAMES = {PRISM_CLASS_LOW: "low", PRISM_CLASS_HIGH: "high", 2: "class2", 3: "class3"}
CLASS_BY_NAME = {name: c for c, name in CLASS_NAMES.items()}
assert len(CLASS_NAMES) == PRISM_NCLASS


def class_name(cls: int) -> str:
    return CLASS_NAMES.get(cls, str(cls))


def parse_class(value: object) -> int:
    """A class by name ("high") or number; ValueError naming what is accepted."""
    if isinstance(value, str) and value.lower() in CLASS_BY_NAME:
        return CLASS_BY_NAME[value.lower()]
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < PRISM_NCLASS:
        return value
    raise ValueError(f"class must be {', '.join(CLASS_NAMES.values())} or 0..{PRISM_NCLASS - 1}, not {value!r}")
