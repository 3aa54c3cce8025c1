"""How a setting is declared (:func:`setting`): its default, the parser of its environment
variable's text, the check of its value and its one line of documentation. The settings
themselves are declared in :mod:`search_engine.config`."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# --- parsers: the text of a variable to a value (ValueError when it is not one) ---


def path(raw: str) -> Path:
    return Path(raw).expanduser()


def paths(raw: str) -> tuple[Path, ...]:
    """A ``os.pathsep``-separated list of folders (``:`` on Linux), ``~`` expanded, empty entries dropped."""
    return tuple(Path(part).expanduser() for part in raw.split(os.pathsep) if part.strip())


def keys(raw: str) -> tuple[str, ...]:
    """Comma-separated API keys, blanks around them dropped."""
    return tuple(key.strip() for key in raw.split(",") if key.strip())


def flag(raw: str) -> bool:
    """``1``, ``true``, ``yes`` or ``on`` for True, ``0``, ``false``, ``no`` or ``off`` for False
    (any case); ValueError for anything else."""
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


# --- checks: None when a value is acceptable, else what it must be ---

Check = Callable[[Any], "str | None"]


def one_of(*choices: str) -> Check:
    return lambda value: None if value in choices else f"must be one of {', '.join(choices)}"


def within(low: float, high: float, *, low_open: bool = False, high_open: bool = False, what: str = "") -> Check:
    def check(value) -> str | None:
        if value is None:
            return None
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        if above and below:
            return None
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        return f"must be {what + ' ' if what else ''}within {interval}"

    return check


def at_least(low: int, what: str = "") -> Check:
    return lambda value: None if value >= low else f"must be {what or f'{low} or more'}"


def web_address(value: str | None) -> str | None:
    return None if value is None or value.startswith(("http://", "https://")) else "must start with http:// or https://"


def valid_keys(value: tuple[str, ...]) -> str | None:
    bad = any(not key or "," in key or any(c.isspace() for c in key) for key in value)
    return "must be comma-separated keys without spaces" if bad else None


@dataclass(frozen=True)
class Declaration:
    """How one setting is read and checked, and what the README says of it.

    ``shown`` is the default as the README's table writes it, where the value itself says too
    little (``0`` meaning one per core); ``parse`` turns the variable's text into the value.
    """

    doc: str
    parse: Callable[[str], Any] = str
    check: Check | None = None
    shown: str | None = None


def setting(default: Any, doc: str, **how: Any) -> Any:
    """A settings field: its default (a callable for one computed when needed) and its
    :class:`Declaration`."""
    meta = {"declaration": Declaration(doc, **how)}
    if callable(default):
        return dataclasses.field(default_factory=default, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


KINDS = {int: "a whole number", float: "a number", flag: "1 or 0 (true/false, yes/no, on/off)"}


def positive(value) -> str | None:
    return None if value > 0 else "must be positive"
