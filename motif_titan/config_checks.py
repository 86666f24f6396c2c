"""The one idiom every config check uses: a value of the wrong type or out of range is refused naming
``section.field = value`` and what is allowed (``ConfigError``, a ValueError). Imports nothing of motif_titan, so
every part (optimizer, model, data, infra) validates its own section with it."""

import math
from typing import Any


class ConfigError(ValueError):
    """A config value motif_titan refuses; the message names ``section.field = value`` and what is allowed."""


def refuse(field: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{field} = {value!r}; allowed: {allowed}")


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """An int or a finite float (TOML ints are accepted where floats are)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


_NOUNS = {is_int: "an integer", is_number: "a number"}


def expect(field: str, value: Any, kind, allowed: str, ok=lambda value: True) -> None:
    """``value`` must pass ``kind`` (is_int / is_number) and ``ok``; the message says which failed."""
    if not kind(value):
        raise ConfigError(f"{field} = {value!r} ({type(value).__name__}); allowed: {_NOUNS[kind]}, {allowed}")
    if not ok(value):
        refuse(field, value, allowed)


def expect_bool(field: str, value: Any) -> None:
    if not isinstance(value, bool):
        refuse(field, value, "true or false")


def expect_str(field: str, value: Any, allowed: str = "a string", optional: bool = False) -> None:
    if not (isinstance(value, str) or (optional and value is None)):
        refuse(field, value, allowed)


def expect_str_list(field: str, value: Any) -> None:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        refuse(field, value, "a list of strings")


# -- unknown TOML keys ------------------------------------------------------------------------------------------
